# The two commands: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
RUN_STAMP := $(VENV)/.installed
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: run test lint unit integration bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/qure-ray serve

test: $(STAMP)
	scripts/install-test-peers
	$(BIN)/ruff check qure_ray tests
	$(BIN)/mypy
	$(BIN)/python -m pytest tests
	QURE_BENCH_QUICK=1 $(BIN)/python scripts/run-notebook benchmarks/throughput.ipynb

bench: $(STAMP)
	scripts/install-test-peers
	$(BIN)/qure-ray bench --json benchmarks/results.json --plots benchmarks/plots

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	scripts/install-test-peers
	$(BIN)/python -m pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check qure_ray tests
	$(BIN)/ruff format --check qure_ray tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .qure
