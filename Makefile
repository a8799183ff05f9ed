# The two commands (see README): `make demo` and `make test`. Each sets up what it needs first.
VENV ?= .venv
RADALIGN := $(VENV)/bin/radalign

.PHONY: demo test test-unit lint lint-only setup stack-up stack-down clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(RADALIGN) demo

# The full suite includes the embedded LLM's test against llama.cpp's OpenAI-compatible server, so
# `make test` installs the llm extra (llama-cpp-python compiles from source once, ~17 minutes on
# 2 cores, then pip's cache reuses the wheel). RADALIGN_WITH_LLM=0 make test skips that.
test:
	@RADALIGN_WITH_LLM=$${RADALIGN_WITH_LLM:-1} bash scripts/bootstrap.sh
	@$(MAKE) --no-print-directory lint-only
	$(VENV)/bin/python -m pytest -ra --durations=15 $(PYTEST_ARGS)

# ruff (pyflakes, pycodestyle, import order, bugbear, pyupgrade) and mypy, configured in pyproject.toml.
lint: setup lint-only

lint-only:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test-unit: setup
	$(VENV)/bin/python -m pytest -ra -m "not integration" $(PYTEST_ARGS)

stack-up: setup
	$(RADALIGN) stack up

stack-down:
	$(RADALIGN) stack down

clean: stack-down
	rm -rf .radalign
