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

# Unit tests once, then the integration suite once per Orthanc lane (README, "Tests");
# exit 5 is "nothing selected", which a -k in PYTEST_ARGS may mean for one part.
test: setup-test
	$(PY) -m ruff check plugin tests scripts
	$(PY) -m mypy
	$(PY) -m pytest --ignore=tests/integration $(PYTEST_ARGS)
	TEACHFILE_ORTHANC=system $(PY) -m pytest tests/integration $(PYTEST_ARGS) || [ $$? -eq 5 ]
	TEACHFILE_ORTHANC=latest $(PY) -m pytest tests/integration $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: setup
	$(PY) -m ruff check plugin tests scripts
	$(PY) -m mypy

# Benchmarks print figures against a baseline measured in the same run; they assert nothing.
bench: setup-test
	$(PY) scripts/bench-deid
	$(PY) scripts/bench-transcode
	$(PY) scripts/bench-ingest
	$(PY) scripts/bench-roster
	$(PY) scripts/bench-memory

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
