# Two commands for a new user: `make run` and `make test`. Both set up what is missing first.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-test run test lint bench clean

setup:
	@scripts/setup

# The suite also needs PostgreSQL and orthanc-postgresql (native scale-out test).
setup-test:
	@scripts/setup --postgres

run: setup
	@$(VENV)/bin/teachfile run

test: setup-test
	$(PY) -m ruff check plugin tests scripts
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check plugin tests scripts

# Benchmarks print figures against a baseline measured in the same run; they assert nothing.
bench: setup-test
	$(PY) scripts/bench-deid
	$(PY) scripts/bench-transcode
	$(PY) scripts/bench-ingest
	$(PY) scripts/bench-roster
	$(PY) scripts/bench-memory

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
