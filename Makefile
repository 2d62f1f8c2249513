# The two commands of the quick start (each sets up .venv on first use):
#   make demo    embedded Temporal dev server + worker + agents talking (Ctrl-C stops)
#   make test    lint + the whole test suite against a real dev server
VENV ?= .venv
PYTHON ?= python3

.PHONY: demo dev test bench lint setup

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/perennial demo

dev: setup
	$(VENV)/bin/perennial dev

test: setup
	bash scripts/test

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/python -m bench.bench_entity --quick
