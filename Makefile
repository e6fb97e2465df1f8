# `make demo` and `make test` work on a fresh machine with only Python 3.11+:
# each creates .venv when missing and installs the project into it once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench bench-large clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wrapup-batch demo

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check wrapup_batch tests benchmarks
	$(BIN)/ruff format --check wrapup_batch tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

# Benchmarks write their figures to stdout and benchmarks/out/; RESULTS.md records them.
bench: $(STAMP)
	mkdir -p benchmarks/out
	$(BIN)/python benchmarks/bench_emulator.py --duration 10 --json benchmarks/out/emulator.json
	$(BIN)/python benchmarks/bench_run.py --rows 600 --limit 1200 --latency-ms 40 --json benchmarks/out/run_1200.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
