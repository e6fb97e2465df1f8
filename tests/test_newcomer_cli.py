"""A newcomer's first day (issue 10): each case is what a new admin or analyst did through the
CLI, and asserts what they should have seen. The emulator on loopback is the witness of what
was sent; the ledger is read with sqlite3, the results and logs as files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_run_cli import (
    RECLASSIFY,
    SAMPLE_COUNTS,
    api_requests,
    env_for,
    query,
    read_results,
)

from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0)


def cli(emulator: EmulatorHandle | None, *args: str | Path, **env: str | None) -> Any:
    environment = {**(env_for(emulator) if emulator is not None else {}), **env}
    return CliRunner().invoke(
        main, [str(a) for a in args], env=environment, catch_exceptions=False
    )


def requests_seen(emulator: EmulatorHandle) -> int:
    """Every request the emulator got, the token endpoint's included."""
    stats = emulator.stats()
    return api_requests(stats) + sum(stats["requests"].get("POST /oauth/token", {}).values())


# -- 1. outputs checked before anything is written ------------------------------------------------


@pytest.mark.parametrize(
    ("option", "name"),
    [
        ("--results", "nodir/x.csv"),
        ("--summary-json", "nodir/summary.json"),
        ("--log-file", "nodir/run.log"),
    ],
)
def test_an_output_that_cannot_be_written_stops_the_run_before_any_request(
    emulator: EmulatorHandle, tmp_path: Path, option: str, name: str
) -> None:
    target = tmp_path / name

    run = cli(emulator, "run", RECLASSIFY, "--ledger", tmp_path / "l.db", option, target)

    assert run.exit_code == 2, run.stderr
    assert f"{target}" in run.stderr and "Traceback" not in run.stderr
    assert requests_seen(emulator) == 0  # not even a token
    assert emulator.stats(detail=True)["posts_per_communication"] == {}


def test_a_results_path_that_is_a_folder_is_refused_before_any_request(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = cli(emulator, "run", RECLASSIFY, "--ledger", tmp_path / "l.db", "--results", tmp_path)

    assert run.exit_code == 2
    assert f"--results {tmp_path} is a folder; give a file name" in run.stderr
    assert requests_seen(emulator) == 0


def test_a_full_disk_after_the_work_still_prints_the_summary_and_the_works_exit_code(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """/dev/full takes the check (a writable file) and fails the write (no space left)."""
    results = tmp_path / "out.csv"

    run = cli(
        emulator, "run", RECLASSIFY, "--ledger", tmp_path / "l.db", "--results", results,
        "--summary-json", "/dev/full", "-q",
    )  # fmt: skip

    assert run.exit_code == 1, run.stderr  # the sample's bad rows: not 2
    assert "run 1: finished; 10 row(s) need attention" in run.stderr
    assert "Error: cannot write the summary to /dev/full" in run.stderr
    rows, _ = read_results(results)  # the other output was written
    assert len(rows) == 22
    assert sum(emulator.stats(detail=True)["posts_per_communication"].values()) == 9


# -- 8. small ones --------------------------------------------------------------------------------


def test_a_mistyped_input_path_leaves_no_ledger_behind(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    run = cli(emulator, "run", "reclasify.csv")

    assert run.exit_code == 2
    assert "reclasify.csv: no such file; check the path" in run.stderr
    assert not (tmp_path / "wrapup-ledger.db").exists()
    assert requests_seen(emulator) == 0


_ = (json, query, SAMPLE_COUNTS)
