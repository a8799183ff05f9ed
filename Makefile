# The two commands (see README): `make demo` and `make test`. Each sets up what it needs first.
VENV ?= .venv
RADALIGN := $(VENV)/bin/radalign

.PHONY: demo test test-unit setup stack-up stack-down clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(RADALIGN) demo

test: setup
	$(VENV)/bin/python -m pytest -ra --durations=15 $(PYTEST_ARGS)

test-unit: setup
	$(VENV)/bin/python -m pytest -ra -m "not integration" $(PYTEST_ARGS)

stack-up: setup
	$(RADALIGN) stack up

stack-down:
	$(RADALIGN) stack down

clean: stack-down
	rm -rf .radalign
