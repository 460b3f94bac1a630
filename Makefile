# Vandamme: two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SPECS  ?= specs/
STAMP  := $(VENV)/.installed

.PHONY: run test validate install clean claude-code bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/vandamme run $(SPECS)

validate: $(STAMP)
	$(BIN)/vandamme validate $(SPECS)

# The real Claude Code CLI for the end-to-end test, in a git-ignored folder of the repo.
# Skipped (not failed) where npm is missing: the test prints why.
claude-code:
	@if command -v npm >/dev/null 2>&1; then \
	  test -x .tools/claude-code/node_modules/.bin/claude || \
	  npm install --silent --no-audit --no-fund --prefix .tools/claude-code @anthropic-ai/claude-code >/dev/null 2>&1 || \
	  echo "claude-code: npm install failed; the Claude Code test will be skipped"; \
	else echo "claude-code: npm not found; the Claude Code test will be skipped"; fi

test: $(STAMP) claude-code
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .tools .pytest_cache build *.egg-info
