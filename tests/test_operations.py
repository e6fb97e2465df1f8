"""Running unattended: structured logs without secrets, overlapping runs, deadlines, SIGTERM.

Real processes where it matters (a second process holding the ledger lock, a SIGTERM), the
emulator on loopback, real SQLite. The emulator's stats are the witness that nothing was sent
twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_run_cli import (
    ENV_NAMES,
    RECLASSIFY,
    SAMPLE_EXPECTED,
    conv,
    env_for,
    fast_retries,
    query,
    read_results,
    wait_for,
    write_csv,
)

from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, generated_conversation_id

__all__ = ["fast_retries"]  # a fixture, used by name

ROWS = 40


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0, generate=ROWS)


def cli(*args: str | Path, env: Mapping[str, str | None]) -> Result:
    argv = [str(a) for a in args]
    if argv[0] == "run":
        argv += ["--rate-limit", "6000"]  # the emulator has no limit: the throttle need not wait
    return CliRunner().invoke(main, argv, env=dict(env), catch_exceptions=False)


def generated_csv(path: Path, rows: int = ROWS) -> Path:
    return write_csv(
        path,
        ["conversation_id", "wrapup_code"],
        [[generated_conversation_id(i), "Support - Technical"] for i in range(rows)],
    )


def subprocess_env(emulator: EmulatorHandle) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | emulator.env()


def start_run(emulator: EmulatorHandle, cwd: Path, *args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "wrapup_batch", "run", *map(str, args), "--rate-limit", "6000"],
        env=subprocess_env(emulator),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- logs ------------------------------------------------------------------------------------------


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_json_logs_carry_each_outcome_and_retry_and_no_output_holds_a_secret(
    emulator: EmulatorHandle, tmp_path: Path, fast_retries: None
) -> None:
    emulator.config.failing_conversations = {conv(1)}  # its POST answers 500, five times
    log_file, results, summary = tmp_path / "run.log", tmp_path / "out.csv", tmp_path / "s.json"
    run = cli(
        "run", RECLASSIFY, "--ledger", tmp_path / "ledger.db", "--results", results,
        "--summary-json", summary, "--log-file", log_file, "--log-format", "json", "-v",
        env=env_for(emulator),
    )  # fmt: skip
    check_log = tmp_path / "check.log"
    check = cli(
        "check", "--conversation", conv(1), "--lookup-compare", conv(4), "--log-file", check_log,
        "--log-format", "json", "-v",
        env=env_for(emulator),
    )  # fmt: skip

    assert run.exit_code == 1, run.stderr
    assert check.exit_code == 0, check.stdout
    records = read_log(log_file)
    rows, _ = read_results(results)
    # One record per row outcome decided by the work, with the row's fields.
    outcomes = {r["row"]: r for r in records if "row" in r}
    for row in rows:
        number = int(row["row"])
        if SAMPLE_EXPECTED[number].status in ("duplicate", "unknown_code", "ambiguous_code"):
            continue  # decided before any request: in the results, not one record each
        if SAMPLE_EXPECTED[number].status == "conflict":
            continue
        record = outcomes[number]
        assert record["status"] == row["status"], record
        assert record["conversation_id"] == row["conversation_id"]
        assert record["run_id"] == 1 and record["level"] == "INFO"
        assert record["logger"] == "wrapup_batch.runner"
        assert record["message"].startswith(f"row {number} {row['conversation_id']}: ")
        if row["http_status"]:
            assert record["http_status"] == int(row["http_status"])
        assert record.get("error_code") == (row["error_code"] or None)
        assert record.get("context_id") == (row["context_id"] or None)
    assert outcomes[1]["status"] == "failed"
    assert outcomes[1]["error_code"] == "internal.server.error"
    assert outcomes[11]["http_status"] == 403 and outcomes[11]["error_code"] == "not.authorized"
    # The retries of row 1's POST: four waits before attempts 2 to 5, each logged with it.
    retries = [r for r in records if "wait_seconds" in r]
    assert [r["attempt"] for r in retries] == [1, 2, 3, 4]
    for record in retries:
        assert record["method"] == "POST" and record["http_status"] == 500
        assert record["conversation_id"] == conv(1) and record["run_id"] == 1
        assert record["error_code"] == "internal.server.error" and record["context_id"]
        assert 0 < record["wait_seconds"] <= 0.1
        assert record["message"].startswith("retrying POST /api/v2/conversations/calls/")
    last = records[-1]
    assert last["message"] == "run 1: finished; 11 row(s) need attention"
    assert (last["exit_code"], last["counts"]["failed"]) == (1, 1)
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert read_log(check_log)  # the check logged its requests too

    # Not the client secret, not any access token the emulator issued: anywhere.
    tokens = list(emulator.state.tokens)
    assert len(tokens) == 2  # one for the run, one for the check
    outputs = {
        "run stdout": run.stdout,
        "run stderr": run.stderr,
        "check stdout": check.stdout,
        "check stderr": check.stderr,
        "run log": log_file.read_text("utf-8"),
        "check log": check_log.read_text("utf-8"),
        "results": results.read_text("utf-8-sig"),
        "summary": summary.read_text("utf-8"),
    }
    for path in tmp_path.glob("ledger.db*"):
        outputs[path.name] = path.read_bytes().decode("latin-1")
    for secret in (emulator.client_secret, *tokens):
        for name, text in outputs.items():
            assert secret not in text, name


def test_text_logs_name_the_run_and_each_row(emulator: EmulatorHandle, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv", ["conversation_id", "wrapup_code"], [[conv(4), "Sales"]]
    )
    log_file = tmp_path / "run.log"

    run = cli("run", source, "--ledger", tmp_path / "l.db", "--log-file", log_file, "-q",
              env=env_for(emulator))  # fmt: skip

    assert run.exit_code == 0, run.stderr
    lines = log_file.read_text("utf-8").splitlines()
    rows = [line for line in lines if " INFO wrapup_batch.runner row " in line]
    assert len(rows) == 1
    assert rows[0].endswith(f" INFO wrapup_batch.runner row 1 {conv(4)}: applied [run 1]")
    assert lines[-1].endswith(" INFO wrapup_batch run 1: finished; every row is fine [run 1]")
    assert run.stderr.startswith("run 1: finished; every row is fine")  # no log lines on stderr


def test_a_log_file_that_cannot_be_written_is_a_usage_error(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "run.log"

    run = cli("run", RECLASSIFY, "--log-file", target, env=env_for(emulator))

    assert run.exit_code == 2
    assert run.stderr == f"Error: cannot write the log to {target}: No such file or directory\n"
    assert emulator.stats()["requests"] == {}


# -- overlapping runs ------------------------------------------------------------------------------


def holds_claims(db: Path) -> bool:
    try:
        return bool(query(db, "SELECT worker_id FROM conversation_claims"))
    except sqlite3.OperationalError:  # not created yet
        return False


def test_a_second_run_while_another_is_alive_leaves_it_the_rows_it_holds(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = generated_csv(tmp_path / "in.csv", 8)
    db = tmp_path / "ledger.db"
    emulator.config.latency_ms = 150
    first = start_run(emulator, tmp_path, source, "--ledger", db, "--concurrency", "1", "-q")
    try:
        started = wait_for(lambda: holds_claims(db), 30.0)
        assert started, first.stderr.read() if first.stderr else ""
        assert wait_for(lambda: emulator.stats(False)["posts_accepted"] >= 1, 30.0)

        second = cli("run", source, "--ledger", db, "-q", env=env_for(emulator))
        status = cli("status", "--ledger", db, env={})

        assert first.poll() is None  # the first run was alive all along
        # the first run claimed all 8 conversations at once: the second leaves those it has
        # not finished yet, and sends nothing
        assert second.exit_code == 4, second.stderr
        left = re.match(
            r"run 2: stopped early with (\d+) row\(s\) still to do; run again to resume "
            r"\((\d+) left because another run was changing their conversations\)",
            second.stderr,
        )
        assert left and left[1] == left[2], second.stderr
        held = query(db, "SELECT held_by, message FROM run_rows WHERE held_by IS NOT NULL")
        assert len(held) == int(left[1]) >= 1
        assert {r["held_by"] for r in held} == {1}
        assert {r["message"] for r in held} == {
            "left for a later run: run 1 was changing this conversation; "
            "run the same input again once it has finished"
        }
        assert "run 1 (run): not finished (running now, or stopped without a summary)" in (
            status.stdout
        )
        assert "live now: 1 run(s), 1 worker(s)" in status.stdout
        assert f"run 1 run worker 1: pid {first.pid} on {socket.gethostname()}" in status.stdout
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err
    assert query(db, "SELECT id, exit_code FROM runs") == [
        {"id": 1, "exit_code": 0},
        {"id": 2, "exit_code": 4},
    ]
    assert query(db, "SELECT * FROM conversation_claims") == []
    emulator.config.latency_ms = 0

    third = cli("run", source, "--ledger", db, "-q", env=env_for(emulator))  # all done
    assert third.exit_code == 0, third.stderr
    stats = emulator.stats(detail=True)
    assert len(stats["posts_per_communication"]) == 8
    assert set(stats["posts_per_communication"].values()) == {1}


# -- deadlines and stops ---------------------------------------------------------------------------


def test_max_runtime_stops_a_slow_run_writes_everything_and_a_rerun_finishes(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = generated_csv(tmp_path / "in.csv")
    db, results, summary = tmp_path / "ledger.db", tmp_path / "out.csv", tmp_path / "s.json"
    # Two workers, two requests of 250 ms per row: the whole input would take 10 s.
    emulator.config.latency_ms = 250
    args = (source, "--ledger", db, "--results", results, "--summary-json", summary, "-q")

    stopped = cli(
        "run", *args, "--max-runtime", "1.5s", "--concurrency", "2", env=env_for(emulator)
    )

    assert stopped.exit_code == 4, stopped.stderr
    data = json.loads(summary.read_text("utf-8"))
    # "still to do" is every row not finished: pending, and in_flight when a POST waiting on
    # the throttle was abandoned at the deadline.
    unfinished = data["counts"].get("pending", 0) + data["counts"].get("in_flight", 0)
    assert data["exit_code"] == 4 and unfinished > 0 and data["counts"].get("applied", 0) > 0
    assert data["message"] == (
        f"stopped early with {unfinished} row(s) still to do; run again to resume"
    )
    # Stopped near the deadline, far from the 10 s the whole input takes (a margin wide
    # enough for a busy machine).
    assert data["elapsed_seconds"] < 1.5 + 4.0
    rows, _ = read_results(results)
    assert len(rows) == ROWS
    # A POST still waiting on the throttle at the deadline is abandoned, its item in_flight;
    # the rerun reads such an item back before it would send anything.
    assert (
        {"applied", "pending"} <= {r["status"] for r in rows} <= {"applied", "pending", "in_flight"}
    )
    posted_first = emulator.stats(detail=True)["posts_per_communication"]
    assert len(posted_first) >= data["counts"]["applied"]
    assert set(posted_first.values()) == {1}

    emulator.config.latency_ms = 0
    rerun = cli("run", *args, env=env_for(emulator))

    assert rerun.exit_code == 0, rerun.stderr
    rows, _ = read_results(results)
    assert {r["status"] for r in rows} == {"applied"}
    posted = emulator.stats(detail=True)["posts_per_communication"]
    assert len(posted) == ROWS and set(posted.values()) == {1}
    assert json.loads(summary.read_text("utf-8"))["wrapup_posts"] == ROWS - len(posted_first)


def test_sigterm_stops_a_run_cleanly_and_a_rerun_sends_no_duplicate(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = generated_csv(tmp_path / "in.csv")
    db, results, summary = tmp_path / "ledger.db", tmp_path / "out.csv", tmp_path / "s.json"
    emulator.config.latency_ms = 60
    process = start_run(
        emulator, tmp_path, source, "--ledger", db, "--results", results,
        "--summary-json", summary, "--concurrency", "2", "-q",
    )  # fmt: skip
    try:
        assert wait_for(lambda: emulator.stats(False)["posts_accepted"] >= 3, 30.0)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 4, err
    assert "stopping: finishing the requests in flight (Ctrl-C again to abandon them)" in err
    assert "stopped early with" in err and "run again to resume" in err
    data = json.loads(summary.read_text("utf-8"))
    assert data["exit_code"] == 4 and data["counts"].get("pending", 0) > 0
    rows, _ = read_results(results)
    assert {r["status"] for r in rows} == {"applied", "pending"}
    posted_first = emulator.stats(detail=True)["posts_per_communication"]
    assert set(posted_first.values()) == {1}
    assert len(posted_first) == data["counts"]["applied"] == data["wrapup_posts"]
    assert query(db, "SELECT exit_code FROM runs") == [{"exit_code": 4}]
    assert query(db, "SELECT * FROM lock") == []  # released on the way out

    emulator.config.latency_ms = 0
    rerun = cli("run", source, "--ledger", db, "--results", results, "-q", env=env_for(emulator))

    assert rerun.exit_code == 0, rerun.stderr
    rows, _ = read_results(results)
    assert {r["status"] for r in rows} == {"applied"}
    posted = emulator.stats(detail=True)["posts_per_communication"]
    assert len(posted) == ROWS and set(posted.values()) == {1}
