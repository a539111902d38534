# Two commands for a new user: `make run` and `make test`. Both set up what is missing first.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test lint bench clean

setup:
	@scripts/setup

run: setup
	@$(VENV)/bin/teachfile run

test: setup
	$(PY) -m ruff check plugin tests scripts
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check plugin tests scripts

bench: setup
	$(PY) scripts/bench-deid
	$(PY) scripts/bench-ingest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
