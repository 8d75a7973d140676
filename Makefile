# The two commands of the README. Both install what is missing first.
#   make serve  -- the gateway on the embedded defaults (HOST, PORT, CONFIG to change them)
#   make test   -- lint, type check and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
CONFIG ?=

.PHONY: serve test lint typecheck unit bench clean system-deps agent-tools

# The coding agents the end-to-end tests run, pinned (tests/test_claude_code_e2e.py,
# tests/test_gemini_cli_e2e.py, tests/test_codex_e2e.py).
CLAUDE_CODE_VERSION ?= 2.1.197
GEMINI_CLI_VERSION ?= 0.61.0
CODEX_VERSION ?= 0.171.0

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


# TypeScript (pinned in package.json / package-lock.json) type-checks the page scripts;
# only the npm registry is reached. Re-installed whenever the lock file changes.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || bash scripts/system-deps.sh npm
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

serve: $(VENV)/.runtime
	$(BIN)/tokenrelay serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

# System services and tools the tests use (Debian packages), installed only if missing.
system-deps:
	@bash scripts/system-deps.sh redis-server postgresql chromium nodejs fonts-noto-cjk fonts-noto-color-emoji

lint: $(VENV)/.installed node_modules/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	node_modules/.bin/tsc --project tsconfig.json

typecheck: $(VENV)/.installed
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/pytest

# Installed into .tools/ (gitignored) with npm, only when the pinned version is missing.
agent-tools: system-deps
	@bash scripts/agent-tools.sh @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) \
		@google/gemini-cli@$(GEMINI_CLI_VERSION) \
		@openai/codex@$(CODEX_VERSION)

test: $(VENV)/.installed system-deps agent-tools lint typecheck unit

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
