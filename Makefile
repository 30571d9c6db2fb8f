# The two commands: `make demo` and `make test`. Both work on a fresh Debian machine
# as root with Python 3.11: they create .venv and install what they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
PYTEST_ARGS ?=

.PHONY: demo test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }

$(VENV)/.installed: $(BIN)/python shared/pyproject.toml agent/pyproject.toml coordinator/pyproject.toml requirements-test.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e shared -e agent -e coordinator -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/certfleet demo $(DEMO_ARGS)

test: $(VENV)/.installed
	$(BIN)/ruff check shared agent coordinator tests
	scripts/ensure-system-packages.sh
	scripts/ensure-postgres.sh
	CERTFLEET_TEST_POSTGRES_URL=$(POSTGRES_URL) CERTFLEET_REQUIRE_POSTGRES=1 \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks (tests/benchmarks): every figure with a baseline measured in the same run,
# on SQLite and PostgreSQL. Results go to bench-results/; BENCH_ARGS=--publish also
# writes the report to docs/reference/performance.md, BENCH_ARGS=--quick is a smoke run.
bench: $(VENV)/.installed tests/benchmarks/requirements.txt
	$(BIN)/pip install --quiet -r tests/benchmarks/requirements.txt
	scripts/ensure-system-packages.sh
	scripts/ensure-postgres.sh
	$(BIN)/python -m tests.benchmarks --postgres-url $(POSTGRES_URL) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-data .pytest_cache
