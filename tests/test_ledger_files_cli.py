"""The ledger file through the CLI (issue 5): locked, read-only, corrupt, newer, not ours; an
unexpected exception; two runs started at once on one ledger.

A ledger the tool cannot use exits 2 with one line saying why and what to do, no traceback,
before any API call, and the file is never changed (its bytes are compared before and after:
not even its journal mode). An unexpected exception anywhere is one short line pointing at
--log-file (where the traceback goes), never a traceback on the console. Two runs started
together on one ledger never process an item twice.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_run_cli import (
    ENV_NAMES,
    Run,
    comm,
    conv,
    env_for,
    invoke,
    query,
    write_csv,
)

from wrapup_batch import ledger as ledger_module
from wrapup_batch import runner
from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, generated_conversation_id
from wrapup_batch.ledger import SCHEMA_VERSION, Ledger, dialect

SMALL = [[conv(1), "Sales"], [conv(4), "Complaint"], [conv(5), "Sales"]]


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0, generate=40)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code"], SMALL)


@pytest.fixture
def real_ledger(emulator: EmulatorHandle, tmp_path: Path, source: Path) -> Iterator[Path]:
    """A ledger a finished run wrote (the wrap-ups it applied are then undone on the emulator)."""
    run = invoke(emulator, tmp_path, source, ledger="real.db")
    assert run.exit_code == 0, run.stderr
    emulator.reset(wrapups=True)
    yield tmp_path / "real.db"


def snapshot(db: Path) -> dict[str, bytes]:
    """The bytes of a SQLite file and of its -wal and -shm companions, as far as they exist."""
    return {
        p.name: p.read_bytes()
        for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
        if p.exists()
    }


def check_refused(run: Run, emulator: EmulatorHandle, *needles: str) -> None:
    output = run.stdout + run.stderr
    assert run.exit_code == 2, output
    assert "Traceback" not in output
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert emulator.stats()["requests"] == {}


# -- a ledger the tool cannot use: exit 2, untouched -----------------------------------------------


def test_a_ledger_locked_by_another_program_is_refused_untouched(
    emulator: EmulatorHandle,
    tmp_path: Path,
    source: Path,
    real_ledger: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The tool waits BUSY_TIMEOUT_MS (10 s) for another program's lock before giving up; the
    # test shortens the wait, not the path taken.
    monkeypatch.setattr(dialect, "BUSY_TIMEOUT_MS", 200)
    other = sqlite3.connect(real_ledger, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    other.execute("UPDATE runs SET source = 'held by another program'")
    before = snapshot(real_ledger)
    try:
        run = invoke(emulator, tmp_path, source, ledger="real.db")
        after = snapshot(real_ledger)
    finally:
        other.execute("ROLLBACK")
        other.close()

    check_refused(
        run,
        emulator,
        str(real_ledger),
        "database is locked",
        "another program holds the database locked: close it and try again",
    )
    assert after == before
    assert query(real_ledger, "SELECT COUNT(*) AS n FROM runs") == [{"n": 1}]


def test_a_read_only_ledger_is_refused_untouched(
    emulator: EmulatorHandle, tmp_path: Path, source: Path, real_ledger: Path
) -> None:
    # chmod does not stop root (the tests' user): SQLite's own read-only mode stands in for a
    # read-only file, through the URL form --ledger accepts.
    url = f"sqlite:///file:{real_ledger}?mode=ro&uri=true"
    before = snapshot(real_ledger)
    argv = ["run", str(source), "--ledger", url, "--rate-limit", "6000", "-q"]

    result = CliRunner().invoke(main, argv, env=env_for(emulator), catch_exceptions=False)

    run = Run(result.exit_code, result.stdout, result.stderr, [], [])

    check_refused(
        run,
        emulator,
        f"ledger {url}",
        "attempt to write a readonly database",
        "read-only: give --ledger a writable path",
    )
    # ... while reading it is fine: `report` writes the results of the run it holds
    reported = CliRunner().invoke(main, ["report", "--ledger", url], catch_exceptions=False)
    assert reported.exit_code == 0, reported.output
    assert reported.stdout.count("applied") == len(SMALL)
    after = snapshot(real_ledger)
    assert after["real.db"] == before["real.db"]
    # SQLite itself makes a read-only reader of a WAL file its -shm (and an empty -wal)
    assert after.get("real.db-wal", b"") == b""


def test_a_file_of_garbage_is_refused_untouched(
    emulator: EmulatorHandle, tmp_path: Path, source: Path
) -> None:
    garbage = tmp_path / "ledger.db"
    garbage.write_bytes(os.urandom(8192))
    before = garbage.read_bytes()

    run = invoke(emulator, tmp_path, source)

    check_refused(run, emulator, str(garbage), "is not a SQLite database (nothing was changed)")
    assert garbage.read_bytes() == before


def test_a_truncated_ledger_is_refused_untouched(
    emulator: EmulatorHandle, tmp_path: Path, source: Path, real_ledger: Path
) -> None:
    whole = real_ledger.read_bytes()
    assert len(whole) > 8192
    cut = tmp_path / "cut.db"
    cut.write_bytes(whole[: len(whole) // 2])
    before = snapshot(cut)

    run = invoke(emulator, tmp_path, source, ledger="cut.db")

    check_refused(
        run, emulator, str(cut), "malformed", "the file is damaged or not a ledger", "another"
    )
    assert snapshot(cut) == before


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_ledger_from_a_newer_version_is_refused_untouched(
    emulator: EmulatorHandle,
    tmp_path: Path,
    source: Path,
    real_ledger: Path,
    journal: str,
) -> None:
    with sqlite3.connect(real_ledger) as db:
        db.execute(f"PRAGMA journal_mode = {journal}")
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    db.close()
    before = snapshot(real_ledger)

    run = invoke(emulator, tmp_path, source, ledger="real.db")

    check_refused(
        run,
        emulator,
        str(real_ledger),
        f"was written by a newer wrapup-batch (ledger schema {SCHEMA_VERSION + 1}",
        "upgrade wrapup-batch, or give --ledger another file",
    )
    assert snapshot(real_ledger) == before


def test_another_programs_database_is_refused_untouched(
    emulator: EmulatorHandle, tmp_path: Path, source: Path
) -> None:
    crm = tmp_path / "crm.sqlite"
    with sqlite3.connect(crm) as db:  # rollback-journal mode, as most programs leave it
        db.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
        db.execute("INSERT INTO customers VALUES (1, 'Ada')")
    db.close()
    before = snapshot(crm)

    run = invoke(emulator, tmp_path, source, ledger="crm.sqlite")

    check_refused(run, emulator, str(crm), "not a wrapup-batch ledger", "give --ledger a new file")
    assert snapshot(crm) == before  # not even switched to WAL


def test_a_lock_left_by_a_crashed_run_that_had_our_pid_is_taken_over(
    emulator: EmulatorHandle, tmp_path: Path, source: Path, real_ledger: Path
) -> None:
    # A run killed in a container leaves its lock; the restarted container runs the tool on the
    # same host name with the same pid (often 1). That pid is alive (it is us), yet the lock
    # was taken before this process started: it is stale, not a live run's.
    with sqlite3.connect(real_ledger) as db:
        db.execute(
            "INSERT INTO lock (id, run_id, pid, host, acquired, heartbeat) "
            "VALUES (1, 1, ?, ?, ?, ?)",
            (os.getpid(), socket.gethostname(), "2026-01-01T00:00:00.000+00:00", "2026-01-01"),
        )
    db.close()

    run = invoke(emulator, tmp_path, source, ledger="real.db")

    assert run.exit_code == 0, run.stderr
    assert query(real_ledger, "SELECT COUNT(*) AS n FROM lock") == [{"n": 0}]
    assert emulator.stats()["posts_accepted"] == 0  # the first run had applied them all


# -- an unexpected exception: a short message, the traceback only in the log -----------------------


def _boom(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("boom: a bug nobody foresaw")


@pytest.mark.parametrize(
    "where", ["runner.read_rows", "runner.plan", "Ledger._write_outcomes"], ids=lambda w: w
)
@pytest.mark.parametrize("with_log", [True, False], ids=["log-file", "no-log-file"])
def test_an_unexpected_exception_is_one_line_pointing_at_the_log(
    emulator: EmulatorHandle,
    tmp_path: Path,
    source: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    with_log: bool,
) -> None:
    # Nothing in the tool raises RuntimeError on purpose: the bug is planted at three depths,
    # reading the input (main thread), planning (a worker thread), recording (the recorder).
    if where == "Ledger._write_outcomes":  # every outcome written goes through it
        monkeypatch.setattr(ledger_module.Ledger, "_write_outcomes", _boom)
    else:
        monkeypatch.setattr(runner, where.split(".")[1], _boom)
    log = tmp_path / "run.log"
    args = ["--log-file", str(log)] if with_log else []

    run = invoke(emulator, tmp_path, source, *args)

    output = run.stdout + run.stderr
    assert run.exit_code == 6, output  # an internal error, told apart from "rows not fine"
    assert "Traceback" not in output
    pointer = f"details in {log}" if with_log else "rerun with --log-file F for details"
    error = [line for line in run.stderr.splitlines() if line.startswith("Error: ")]
    assert error == [f"Error: unexpected RuntimeError: boom: a bug nobody foresaw; {pointer}"]
    assert all(len(line) < 200 for line in run.stderr.splitlines())
    if with_log:
        logged = log.read_text(encoding="utf-8")
        assert "Traceback (most recent call last)" in logged
        assert "RuntimeError: boom: a bug nobody foresaw" in logged
    assert emulator.stats()["posts_accepted"] == 0
    [(recorded,)] = sqlite3.connect(tmp_path / "ledger.db").execute("SELECT exit_code FROM runs")
    assert recorded == 6

    monkeypatch.undo()
    rerun = invoke(emulator, tmp_path, source)  # nothing was lost: the rerun does it all
    assert rerun.exit_code == 0, rerun.stderr
    assert set(rerun.statuses().values()) == {"applied"}
    assert emulator.stats(detail=True)["posts_per_communication"] == {
        comm(1, 3): 1,
        comm(4, 3): 1,
        comm(5, 3): 1,
    }


# -- two runs at once on one ledger ----------------------------------------------------------------


def test_two_runs_started_together_on_one_ledger_never_process_an_item_twice(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.config.latency_ms = 20  # the first run lasts long enough to overlap the second
    rows = [[generated_conversation_id(i), "Sales"] for i in range(40)]
    source = write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code"], rows)
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | emulator.env()
    argv = [sys.executable, "-m", "wrapup_batch", "run", str(source)]
    argv += ["--ledger", str(tmp_path / "ledger.db"), "--rate-limit", "100000", "-q"]
    processes = [
        subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in processes]

    codes = sorted(code for code, _out, _err in outcomes)
    errors = "\n".join(err for _code, _out, err in outcomes)
    # they share the ledger: a run exits 4 when the other held some of its rows' conversations
    assert codes in ([0, 0], [0, 4], [4, 4]), errors
    assert "Traceback" not in errors
    if 4 in codes:
        assert "left because another run was changing their conversations" in errors
    stats = emulator.stats(detail=True)
    assert stats["posts_per_communication"] == {
        f"9e000012-0000-4000-8000-{i:012x}": 1 for i in range(40)
    }
    assert stats["post_attempts"] == 40
    ledger_rows = query(
        tmp_path / "ledger.db", "SELECT status, COUNT(*) AS n FROM items GROUP BY 1"
    )
    assert ledger_rows == [{"status": "applied", "n": 40}]


def _open_and_report(path: str, start: Any, results: Any) -> None:
    start.wait()
    try:
        Ledger.open(path).close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")


def test_runs_opening_a_new_ledger_at_the_same_moment_all_get_it(tmp_path: Path) -> None:
    """The race the test above rarely meets (the interpreters start ~3 s apart by chance):
    processes released together, each creating the same new ledger. Each must open it (the
    lock then lets one run at a time); none may fail on a half-made file or the WAL switch."""
    context = multiprocessing.get_context("fork")  # no emulator thread in this test
    outcomes: list[str] = []
    for trial in range(12):
        path = str(tmp_path / f"race{trial}.db")
        start, results = context.Event(), context.Queue()
        workers = [
            context.Process(target=_open_and_report, args=(path, start, results)) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        start.set()
        for worker in workers:
            worker.join(timeout=60)
        outcomes += [results.get(timeout=10) for _ in workers]
        assert query(Path(path), "PRAGMA journal_mode") == [{"journal_mode": "wal"}]
    assert outcomes == ["ok"] * 48
