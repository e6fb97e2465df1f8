"""Ledgers written by earlier versions (real files in tests/data, made by the code of schema 1
and 2 from git history) open with today's code: migrated forward, every run and row kept, and a
rerun on them sends nothing for the rows they applied."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_run_cli import RECLASSIFY, SAMPLE_COUNTS, env_for, read_results

from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle
from wrapup_batch.ledger import SCHEMA_VERSION

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0)


def table_columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def schema_of(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(found[0])


@pytest.mark.parametrize("schema", [1, 2])
def test_a_real_older_ledger_is_migrated_forward_keeping_its_runs_and_rows(
    emulator: EmulatorHandle, tmp_path: Path, schema: int
) -> None:
    ledger = tmp_path / "old.db"
    shutil.copy(DATA / f"ledger-schema{schema}.db", ledger)
    assert schema_of(ledger) == schema
    if schema == 1:
        assert "communication_target" not in table_columns(ledger, "items")
    assert "item_id" not in table_columns(ledger, "run_rows")

    status = CliRunner().invoke(main, ["status", "--ledger", str(ledger)])
    report = CliRunner().invoke(main, ["report", "--ledger", str(ledger), "--run", "2"])

    assert status.exit_code == 0, status.output
    assert schema_of(ledger) == SCHEMA_VERSION
    assert {"communication_target", "expected_code"} <= table_columns(ledger, "items")
    assert "item_id" in table_columns(ledger, "run_rows")
    assert "run 1 (dry run): exit 1, 22 row(s)" in status.stdout
    assert "run 2 (run): exit 1, 22 row(s)" in status.stdout
    if schema == 2:
        assert "run 3 (revert): exit 1, 9 row(s)" in status.stdout
    assert report.exit_code == 0, report.output
    lines = report.stdout.splitlines()
    assert len(lines) == 1 + 22
    counts: dict[str, int] = {}
    for line in lines[1:]:
        counts[line.split(",")[3]] = counts.get(line.split(",")[3], 0) + 1
    assert counts == SAMPLE_COUNTS

    results = tmp_path / "rerun.csv"
    rerun = CliRunner().invoke(
        main,
        ["run", str(RECLASSIFY), "--ledger", str(ledger), "--results", str(results), "-q"],
        env=env_for(emulator),
    )

    assert rerun.exit_code == 1, rerun.output
    rows, _ = read_results(results)
    assert {r["status"] for r in rows if r["row"] in ("1", "2", "3")} == {"applied"}
    assert emulator.stats(detail=True)["posts_per_communication"] == {}  # nothing resent
