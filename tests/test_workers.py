"""Many runs and many workers on one ledger (issue 11): claims and leases, `work --run N`, one
rate budget per OAuth client shared through the ledger, `status` showing who holds what.

The tool runs as real processes (`python -m wrapup_batch ...`) against one emulator on
loopback and one ledger, as it would on several hosts; nothing here depends on timing margins
(the waits are for states: a claim in the ledger, a process ended).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from test_run_cli import RECLASSIFY, read_results

from wrapup_batch.cli import main
from wrapup_batch.emulator import (
    EmulatorConfig,
    EmulatorHandle,
    generated_conversation_id,
    start_emulator,
    worker_client_id,
    worker_client_secret,
)
from wrapup_batch.ledger import SCHEMA_VERSION, Ledger, ledger_url
from wrapup_batch.throttle import Throttle

REPO = Path(__file__).resolve().parent.parent
SALES = "9c000001-0000-4000-8000-000000000000"


def agent_comm(i: int) -> str:
    return f"9e000012-0000-4000-8000-{i:012x}"


def write_input(path: Path, count: int, code: str = "Sales") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conversation_id", "wrapup_code"])
        for i in range(count):
            writer.writerow([generated_conversation_id(i), code])
    return path


def env_of(handle: EmulatorHandle, client: int = 0) -> dict[str, str]:
    """The environment of a process using the emulator's default client (0) or worker client n."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESYSCLOUD_")}
    env.update(handle.env())
    if client:
        env["GENESYSCLOUD_OAUTHCLIENT_ID"] = worker_client_id(client)
        env["GENESYSCLOUD_OAUTHCLIENT_SECRET"] = worker_client_secret(client)
    return env


def start(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "wrapup_batch", *args],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def finish(process: subprocess.Popen[bytes], log: Path, timeout: float = 240.0) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"still running after {timeout} s:\n{log.read_text()}") from None


def query(db: Path | str, sql: str) -> list[dict[str, Any]]:
    """Rows of a query on a ledger: a SQLite file, or a PostgreSQL URL."""
    engine = create_engine(ledger_url(str(db)))
    try:
        with engine.connect() as conn:
            return [dict(row) for row in conn.execute(text(sql)).mappings()]
    finally:
        engine.dispose()


def edit(db: Path | str, sql: str) -> None:
    engine = create_engine(ledger_url(str(db)))
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def found(db: Path | str, sql: str) -> bool:
    """Whether the query finds a row (False while the ledger is still being created)."""
    if isinstance(db, Path) and not db.exists():
        return False
    try:
        return bool(query(db, sql))
    except DBAPIError:
        return False


def wait_for(condition: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def workers_emulator() -> Iterator[EmulatorHandle]:
    config = EmulatorConfig(generate=400, worker_clients=3, latency_ms=20, rate_limit=0)
    with start_emulator(config) as handle:
        yield handle


def test_two_runs_at_once_on_one_ledger_never_work_an_item_twice(
    workers_emulator: EmulatorHandle, tmp_path: Path, ledger_target: str
) -> None:
    rows = 240
    source = write_input(tmp_path / "in.csv", rows)
    db = ledger_target
    runs = [
        start(
            [
                "run",
                str(source),
                "--ledger",
                str(db),
                "--rate-limit",
                "60000",
                "--quiet",
                "--results",
                str(tmp_path / f"out{n}.csv"),
            ],
            env_of(workers_emulator, client=n),
            tmp_path / f"run{n}.log",
        )
        for n in (1, 2)
    ]
    codes = [finish(p, tmp_path / f"run{n}.log") for n, p in zip((1, 2), runs, strict=True)]
    logs = [(tmp_path / f"run{n}.log").read_text() for n in (1, 2)]
    assert all(code in (0, 4) for code in codes), logs
    stats = workers_emulator.stats(detail=True)
    # every conversation was written exactly once, by one run or the other
    assert stats["post_attempts_per_communication"] == {agent_comm(i): 1 for i in range(rows)}
    assert stats["requests"]["GET /api/v2/conversations/{conversationId}"] == {"200": rows}
    by_client = stats["by_client"]
    assert set(by_client) >= {worker_client_id(1), worker_client_id(2)}
    # the two runs overlapped: rows one of them left were held by the other run
    held = query(db, "SELECT run_id, held_by, message FROM run_rows WHERE held_by IS NOT NULL")
    for row in held:
        assert row["held_by"] == 3 - row["run_id"]
        assert f"run {row['held_by']} was changing this conversation" in row["message"]
    assert query(db, "SELECT status, COUNT(*) AS n FROM items GROUP BY status") == [
        {"status": "applied", "n": rows}
    ]
    # a rerun finds everything done and sends nothing
    before = sum(stats["post_attempts_per_communication"].values())
    rerun = CliRunner().invoke(
        main,
        ["run", str(source), "--ledger", str(db), "--quiet", "--results", str(tmp_path / "r.csv")],
        env=env_of(workers_emulator),
    )
    assert rerun.exit_code == 0, rerun.output
    after = workers_emulator.stats(detail=True)
    assert sum(after["post_attempts_per_communication"].values()) == before
    results, _ = read_results(tmp_path / "r.csv")
    assert {r["status"] for r in results} == {"applied"}


def test_a_killed_runs_claims_are_taken_over_by_a_worker_after_the_lease(
    workers_emulator: EmulatorHandle, tmp_path: Path, ledger_target: str
) -> None:
    rows = 60
    workers_emulator.config.latency_ms = 400  # POSTs stay in flight long enough to be killed
    source = write_input(tmp_path / "in.csv", rows)
    db = Path(ledger_target) if "://" not in ledger_target else ledger_target
    run_log = tmp_path / "run.log"
    victim = start(
        [
            "run",
            str(source),
            "--ledger",
            str(db),
            "--rate-limit",
            "60000",
            "--quiet",
            "--concurrency",
            "4",
            "--lease",
            "5",
        ],
        env_of(workers_emulator, client=1),
        run_log,
    )

    def posts_in_flight() -> bool:
        stats = workers_emulator.stats(detail=True)
        in_ledger = found(db, "SELECT 1 FROM items WHERE status = 'in_flight'")
        return in_ledger and sum(stats["post_attempts_per_communication"].values()) >= 3

    try:
        wait_for(posts_in_flight, "wrap-up POSTs in flight")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    claims = query(db, "SELECT * FROM conversation_claims")
    assert claims and {c["worker_id"] for c in claims} == {1}
    # as if it had run on another host: its pid cannot be looked at, only its lease can pass
    edit(db, "UPDATE workers SET host = 'another-host'")
    in_flight_then = {
        r["conversation_id"]
        for r in query(db, "SELECT conversation_id FROM items WHERE status = 'in_flight'")
    }
    assert in_flight_then

    # `status` shows the dead run's worker as live until its lease has passed, with its claims
    shown = CliRunner().invoke(main, ["status", "--ledger", str(db), "--json"])
    live = json.loads(shown.stdout)["live"]
    if live:  # (the lease may already have passed on a slow machine)
        assert live[0]["run_id"] == 1 and live[0]["claims"] == len(claims)

    workers_emulator.config.latency_ms = 20
    work_log = tmp_path / "work.log"
    worker = start(
        [
            "work",
            "--run",
            "1",
            "--ledger",
            str(db),
            "--rate-limit",
            "60000",
            "--quiet",
            "--lease",
            "5",
            "--summary-json",
            str(tmp_path / "work.json"),
        ],
        env_of(workers_emulator, client=2),
        work_log,
    )
    assert finish(worker, work_log) == 0, work_log.read_text()
    summary = json.loads((tmp_path / "work.json").read_text())
    assert summary["worker"] == "work"
    assert summary["counts"] == {"applied": rows}
    stats = workers_emulator.stats(detail=True)
    # not one communication was written twice: the in_flight items were read back first
    assert set(stats["posts_per_communication"].values()) == {1}
    assert len(stats["posts_per_communication"]) == rows
    landed = {
        r["conversation_id"]
        for r in query(
            db,
            "SELECT conversation_id FROM items WHERE message LIKE 'confirmed by reading it back%'",
        )
    }
    assert landed <= in_flight_then
    assert query(db, "SELECT * FROM conversation_claims") == []
    workers_rows = query(db, "SELECT id, role, client_id, finished FROM workers ORDER BY id")
    assert [(w["role"], w["client_id"]) for w in workers_rows] == [
        ("run", worker_client_id(1)),
        ("work", worker_client_id(2)),
    ]
    assert workers_rows[0]["finished"] is None and workers_rows[1]["finished"] is not None


def test_a_worker_joins_a_run_and_the_results_are_the_same_as_alone(
    tmp_path: Path,
) -> None:
    # the sample (every kind of outcome), then enough rows for a worker to join in time
    source = tmp_path / "in.csv"
    lines = RECLASSIFY.read_text(encoding="utf-8").splitlines()
    extra = [f"{generated_conversation_id(i)},Sales" for i in range(150)]
    source.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")

    def backfill(folder: Path, *, with_worker: bool) -> tuple[list[dict[str, str]], int]:
        folder.mkdir()
        config = EmulatorConfig(generate=150, worker_clients=1, latency_ms=50, rate_limit=0)
        with start_emulator(config) as handle:
            db = folder / "ledger.db"
            out = folder / "out.csv"
            run = start(
                [
                    "run",
                    str(source),
                    "--ledger",
                    str(db),
                    "--results",
                    str(out),
                    "--concurrency",
                    "1",
                    "--rate-limit",
                    "60000",
                    "--quiet",
                ],
                env_of(handle),
                folder / "run.log",
            )
            joined = 0
            if with_worker:
                wait_for(
                    lambda: found(db, "SELECT 1 FROM runs WHERE work_ready IS NOT NULL"),
                    "the run to be ready for workers",
                )
                worker = start(
                    [
                        "work",
                        "--run",
                        "1",
                        "--ledger",
                        str(db),
                        "--concurrency",
                        "2",
                        "--rate-limit",
                        "60000",
                        "--quiet",
                        "--summary-json",
                        str(folder / "work.json"),
                    ],
                    env_of(handle, client=1),
                    folder / "work.log",
                )
                assert finish(worker, folder / "work.log") == 1  # the sample has rows not fine
                joined = json.loads((folder / "work.json").read_text())["wrapup_posts"]
            assert finish(run, folder / "run.log") == 1, (folder / "run.log").read_text()
            stats = handle.stats(detail=True)
            assert set(stats["posts_per_communication"].values()) == {1}
            results, _ = read_results(out)
        return results, joined

    alone, _ = backfill(tmp_path / "alone", with_worker=False)
    shared, worker_posts = backfill(tmp_path / "shared", with_worker=True)
    assert worker_posts > 0  # the worker did apply some of the rows
    # the same, row for row (Genesys's contextId differs for every error it answers)
    assert len(shared) == len(alone) == 172
    for mine, theirs in zip(shared, alone, strict=True):
        assert {**mine, "context_id": ""} == {**theirs, "context_id": ""}


def test_work_on_a_run_the_ledger_does_not_hold_is_a_usage_error(
    workers_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    Ledger.open(str(db)).close()
    result = CliRunner().invoke(
        main, ["work", "--run", "7", "--ledger", str(db)], env=env_of(workers_emulator)
    )
    assert result.exit_code == 2
    assert "has no run 7" in result.stderr
    assert workers_emulator.stats()["requests"] == {}


def test_status_shows_the_live_runs_and_who_holds_what(
    workers_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    workers_emulator.config.latency_ms = 300
    source = write_input(tmp_path / "in.csv", 200)
    db = tmp_path / "ledger.db"
    log = tmp_path / "run.log"
    process = start(
        ["run", str(source), "--ledger", str(db), "--rate-limit", "60000", "--quiet"],
        env_of(workers_emulator, client=3),
        log,
    )
    try:
        wait_for(lambda: found(db, "SELECT 1 FROM conversation_claims"), "claims in the ledger")
        shown = CliRunner().invoke(main, ["status", "--ledger", str(db)])
        assert shown.exit_code == 0, shown.output
        assert "live now: 1 run(s), 1 worker(s)" in shown.stdout
        assert f"run 1 run worker 1: pid {process.pid} on " in shown.stdout
        assert f"OAuth client {worker_client_id(3)}, holds " in shown.stdout
        data = json.loads(
            CliRunner().invoke(main, ["status", "--ledger", str(db), "--json"]).stdout
        )
        assert [(w["run_id"], w["role"], w["pid"]) for w in data["live"]] == [
            (1, "run", process.pid)
        ]
        assert data["live"][0]["claims"] >= 1
    finally:
        process.send_signal(signal.SIGTERM)
    assert finish(process, log) == 4, log.read_text()
    shown = CliRunner().invoke(main, ["status", "--ledger", str(db)])
    assert "live now" not in shown.stdout
    assert query(db, "SELECT * FROM conversation_claims") == []  # released on the way out


# -- one budget per OAuth client ------------------------------------------------------------------


def test_two_processes_on_one_client_reserve_slots_that_never_overlap(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    first, second = Ledger.open(str(db)), Ledger.open(str(db))
    try:
        a, b = first.budget("client-a"), second.budget("client-a")
        other = first.budget("client-b")
        grants = [a.reserve(5, 300), b.reserve(5, 300), a.reserve(5, 300)]
        for earlier, later in itertools.pairwise(grants):
            assert earlier.interval == pytest.approx(0.2, rel=0.005)  # 60 s / 300, and a margin
            assert later.start >= earlier.start + earlier.count * earlier.interval - 1e-6
        # another client has a budget of its own: its first slot is now
        assert other.reserve(5, 300).start < grants[-1].start
    finally:
        first.close()
        second.close()


def test_a_429_seen_by_one_process_pauses_the_others_on_the_client(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    Ledger.open(str(db)).close()
    # another process (its own interpreter and connection) meets a 429 asking for 30 s
    script = (
        "from wrapup_batch.ledger import Ledger\n"
        "from wrapup_batch.throttle import Throttle\n"
        f"ledger = Ledger.open({str(db)!r})\n"
        "throttle = Throttle(300, budget=ledger.budget('shared-client'))\n"
        "throttle.acquire()\n"
        "throttle.on_response(429, 30.0)\n"
        "ledger.close()\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=60)
    ledger = Ledger.open(str(db))
    try:
        throttle = Throttle(300, budget=ledger.budget("shared-client"))
        wait = throttle._wait_needed(time.monotonic())
        assert 25.0 < wait <= 30.5  # this process now waits out the other's Retry-After
        # ... and then sends at the halved rate, climbing back
        assert throttle.stats().current_rate_per_minute == pytest.approx(150, abs=1)
        unaffected = Throttle(300, budget=ledger.budget("another-client"))
        assert unaffected._wait_needed(time.monotonic()) < 1.0  # its first slot: now
    finally:
        ledger.close()


def test_processes_opening_a_new_postgresql_ledger_at_once_all_get_it(postgres_url: str) -> None:
    # several hosts' runs and workers start at once on an empty database: one creates the
    # ledger, the others wait for it (and would migrate an older one only once)
    code = f"from wrapup_batch.ledger import Ledger\nLedger.open({postgres_url!r}).close()\n"
    processes = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=120), p.communicate()[1]) for p in processes]
    assert [code for code, _ in outcomes] == [0, 0, 0, 0], [err for _, err in outcomes]
    version = query(postgres_url, "SELECT value FROM meta WHERE key = 'schema_version'")
    assert version == [{"value": str(SCHEMA_VERSION)}]
