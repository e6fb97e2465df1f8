# `make demo` and `make test` work on a fresh machine with only Python 3.11+:
# each creates .venv when missing and installs the project into it once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench bench-large clean bench-budget \
	bench-default-limit bench-storm bench-seed-flow bench-concurrency bench-cpu bench-scale \
	bench-emulator bench-resolve bench-workers

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

# Benchmarks (issue 6) write their figures to stdout and benchmarks/out/ (JSON and logs) and
# their plots to benchmarks/*.png; benchmarks/RESULTS.md records them. They need the `bench`
# extra (matplotlib, pyinstrument, py-spy), installed into .venv once (never by `make test`).
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_RUN := $(BIN)/python benchmarks/bench_all.py

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Everything but the 1M-row cases, in about 8 minutes: the rate-limited runs side by side,
# then the CPU-bound ones one at a time; a summary against the targets at the end.
bench: $(BENCH_STAMP)
	$(BENCH_RUN)

# The 1,000,000-row ingest / rerun / results case (and 100k beside it), on SQLite and on a
# throwaway PostgreSQL server (Debian's postgresql package): a quarter of an hour more.
bench-large: $(BENCH_STAMP)
	$(BENCH_RUN) --only large

# One benchmark at a time.
bench-budget bench-default-limit bench-storm bench-seed-flow bench-concurrency bench-cpu bench-scale bench-emulator bench-resolve bench-workers: $(BENCH_STAMP)
	$(BENCH_RUN) --only $(subst -,_,$(patsubst bench-%,%,$@))

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
