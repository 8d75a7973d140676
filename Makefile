# The two commands of the README. Both install what is missing first.
#   make serve  -- the gateway on the embedded defaults (HOST, PORT, CONFIG to change them)
#   make test   -- lint, type check and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
CONFIG ?=

.PHONY: serve test lint typecheck unit bench clean system-deps

# Re-install whenever pyproject.toml changes; each stamp file records the last install.
# Serving needs only the runtime dependencies (.runtime); the tests, linters and type
# checker add the `dev` extra (.installed), which also satisfies serving.
define venv
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
endef

$(VENV)/.runtime: pyproject.toml
	$(venv)
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed: pyproject.toml
	$(venv)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(VENV)/.runtime $@

serve: $(VENV)/.runtime
	$(BIN)/tokenrelay serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

# System services and tools the tests use (Debian packages), installed only if missing.
system-deps:
	@bash scripts/system-deps.sh redis-server postgresql chromium nodejs fonts-noto-cjk fonts-noto-color-emoji

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/pytest

test: $(VENV)/.installed system-deps lint typecheck unit

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
