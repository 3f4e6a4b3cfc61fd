# The one entry point: make setup | run | test | lint | bench
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BENCH_VENV ?= .venv-bench
BENCH_PEERS := launchdarkly-server-sdk UnleashClient growthbook flagsmith-flag-engine

.PHONY: setup run test lint bench bench-setup bench-server bench-judge clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,server]'
	touch $@

run: setup
	$(BIN)/unveil serve --demo

test: setup
	$(BIN)/pytest --cov=unveil.core --cov=unveil.release --cov-report=term --cov-fail-under=95

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Peers are installed only here, never as dependencies of unveil.
bench-setup: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e . $(BENCH_PEERS)
	touch $@

bench: setup bench-setup bench-server
	$(BIN)/python bench/eval.py
	$(BENCH_VENV)/bin/python bench/peers.py

# Server benchmarks: propagation to stream clients, and snapshot requests (needs wrk).
bench-server: setup
	$(BIN)/python bench/propagation.py
	$(BIN)/python bench/snapshot.py

# The release judge against a Kayenta-style baseline (shared/benchmarks/judge.md).
# Reduced R by default; the full R: make bench-judge JUDGE_RUNS=1000/300
JUDGE_RUNS ?= 30/10
bench-judge: setup
	$(BIN)/python bench/judge.py --runs $(JUDGE_RUNS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
