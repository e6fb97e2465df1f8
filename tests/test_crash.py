"""Crash anywhere (issue 5): SIGKILL the tool at random moments, rerun until done, lose nothing.

The emulator runs in its own process (`python -m wrapup_batch.emulator`) with 5–20 ms of
latency, so that a run always has requests in flight; the tool runs as a subprocess
(`python -m wrapup_batch run`, 8 workers, no client-side pacing) over 2,000 generated
conversations, and is killed with SIGKILL again and again, at moments drawn from a seeded
random generator:
- "ingest" kills: a few ms to a few hundred ms after the run's row appears in the ledger,
  i.e. while the run is reading its input and writing it to the ledger (the 2,000 rows go in
  as one transaction), resolving codes or starting to look up;
- "apply" kills: once the emulator has received a random number of new wrap-up POSTs, a few
  ms later: POSTs are in flight and the recorder thread is committing outcomes.
(The interpreter and the SDK take ~3 s to import, so a delay counted from the process start
would only ever kill an import; the delays count from what the run is seen doing instead.)

Then a last run goes to the end, and:
- it exits 0 and every input row is `applied`;
- the emulator's wrap-up on every communication is the code asked for;
- not one communication received more than one accepted wrap-up POST, although some kills
  left items `in_flight` whose POST had landed (checked: that case did happen);
- the ledger passes `PRAGMA integrity_check` (SQLite).

It runs with a SQLite ledger and with a PostgreSQL one (`ledger_target`).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
from sqlalchemy import create_engine
from sqlalchemy.exc import ProgrammingError
from test_run_cli import ENV_NAMES, POST_WRAPUP, read_results

from wrapup_batch.emulator import generated_conversation_id

ROWS = 2000
KILLS = 10  # at least this many, and until every kind of moment below was hit
MAX_KILLS = 20
CODES = {
    "Sales": "9c000001-0000-4000-8000-000000000000",
    "Support - Billing": "9c000003-0000-4000-8000-000000000000",
    "Support - Technical": "9c000004-0000-4000-8000-000000000000",
    "Complaint": "9c000005-0000-4000-8000-000000000000",
}
NAMES = list(CODES)


def agent_comm(i: int) -> str:
    return f"9e000012-0000-4000-8000-{i:012x}"


@dataclass
class EmulatorProcess:
    base_url: str
    env: dict[str, str]
    http: urllib3.PoolManager

    def stats(self, detail: bool = False) -> dict[str, Any]:
        url = f"{self.base_url}/__emulator__/stats" + ("?detail=1" if detail else "")
        response = self.http.request("GET", url, timeout=10.0)
        assert response.status == 200
        return json.loads(response.data)  # type: ignore[no-any-return]

    def configure(self, **knobs: Any) -> None:
        response = self.http.request(
            "POST", f"{self.base_url}/__emulator__/config", body=json.dumps(knobs), timeout=10.0
        )
        assert response.status == 200, response.data


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wrapup_batch.emulator",
            "--port",
            "0",
            "--generate",
            str(ROWS),
            "--rate-limit",
            "0",
            "--latency-ms",
            "5",
            "--random-seed",
            "11",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        env = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
        emulator = EmulatorProcess(env["GENESYSCLOUD_API_HOST"], env, urllib3.PoolManager())
        emulator.configure(latency_spike_rate=0.5, latency_spike_ms=15)  # 5 or 20 ms
        yield emulator
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Kill:
    mode: str
    delay: float
    posts_in_flight: int = 0  # POSTs the emulator was still working on just before the kill
    new_run: bool = False  # the killed run had recorded itself in the ledger
    ingested: bool = False  # ... and its input rows
    in_flight_items: int = 0  # items left in_flight in the ledger
    landed_unrecorded: int = 0  # ... of which the POST had landed: a rerun must not resend

    def __str__(self) -> str:
        stage = "apply" if self.posts_in_flight else "ingested" if self.ingested else "ingest"
        stage = stage if self.new_run else "start-up"
        return (
            f"{self.mode} kill +{self.delay * 1000:.0f} ms: during {stage}, "
            f"{self.posts_in_flight} POST(s) at the emulator; then {self.in_flight_items} "
            f"item(s) in_flight in the ledger, {self.landed_unrecorded} of them landed"
        )


class LedgerReader:
    """Reads the ledger while (or after) the tool writes it: one connection, kept open, so
    that polling it every millisecond costs the machine little; every query sees the latest
    commit (SQLite in WAL mode, PostgreSQL in autocommit: a reader never blocks the writer)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.connection: Any = None

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if "://" in self.target:
            return self._query_url(sql)
        if self.connection is None:
            if not Path(self.target).exists():
                return []
            self.connection = sqlite3.connect(self.target, timeout=5.0, isolation_level=None)
        try:
            return list(self.connection.execute(sql))
        except sqlite3.OperationalError:  # no tables yet
            return []

    def _query_url(self, sql: str) -> list[tuple[Any, ...]]:
        if self.connection is None:
            engine = create_engine(self.target, isolation_level="AUTOCOMMIT")
            self.connection = engine.connect()
        try:
            return [tuple(row) for row in self.connection.exec_driver_sql(sql)]
        except ProgrammingError:  # no tables yet
            self.connection.rollback()
            return []

    def runs(self) -> int:
        rows = self.query("SELECT COUNT(*) FROM runs")
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            if "://" in self.target:
                self.connection.engine.dispose()


def posts_in_progress(stats: dict[str, Any]) -> int:
    answered = sum(stats["requests"].get(POST_WRAPUP, {}).values())
    return int(stats["post_attempts"]) - answered


def wait_until(
    condition: Any, process: subprocess.Popen[bytes], *, poll: float = 0.001, timeout: float = 60
) -> bool:
    """True once `condition()` holds; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(poll)
    raise AssertionError("the run neither got there nor ended")


def test_sigkill_at_random_moments_then_rerun_loses_nothing_and_writes_nothing_twice(
    emulator_process: EmulatorProcess, tmp_path: Path, ledger_target: str
) -> None:
    emulator = emulator_process
    source = tmp_path / "in.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        handle.write("conversation_id,wrapup_code,notes\n")
        for i in range(ROWS):
            handle.write(f"{generated_conversation_id(i)},{NAMES[i % 4]},row {i + 1}\n")
    results = tmp_path / "results.csv"
    argv = [
        sys.executable,
        "-m",
        "wrapup_batch",
        "run",
        str(source),
        "--ledger",
        ledger_target,
        "--results",
        str(results),
        "--rate-limit",
        "100000",
        "--concurrency",
        "8",
        "-q",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | emulator.env
    rng = random.Random(20261124)
    kills: list[Kill] = []
    ledger = LedgerReader(ledger_target)

    def mid_ingest() -> bool:
        return any(k.new_run and not k.ingested for k in kills)

    def mid_apply() -> bool:
        return sum(k.posts_in_flight > 0 for k in kills) >= 3 and any(
            k.landed_unrecorded for k in kills
        )

    def covered() -> bool:
        return len(kills) >= KILLS and mid_ingest() and mid_apply()

    while not covered() and len(kills) < MAX_KILLS:
        # Early kills cost the batch little work, so they come first, and again whenever
        # the others are covered and they are not; in between, kills while it applies.
        if not mid_ingest() and (len(kills) < 3 or mid_apply()):
            mode = "ingest"
        elif not mid_apply():
            mode = "apply"
        else:
            mode = "ingest" if len(kills) % 2 else "apply"
        runs_before = ledger.runs()
        posts_before = emulator.stats()["post_attempts"]
        process = subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            if mode == "ingest":
                delay = math.exp(rng.uniform(math.log(0.002), math.log(0.3)))  # 2–300 ms
                reached = wait_until(lambda n=runs_before: ledger.runs() > n, process)
            else:
                delay = rng.uniform(0.0, 0.03)
                left = ROWS - emulator.stats()["posts_accepted"]
                target = posts_before + rng.randint(1, max(1, min(150, left // 8)))
                reached = wait_until(
                    lambda n=target: emulator.stats()["post_attempts"] >= n, process, poll=0.005
                )
            if not reached:
                break  # the run got to the end before its moment came
            time.sleep(delay)
            in_progress = posts_in_progress(emulator.stats())
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=30)
        if process.returncode != -signal.SIGKILL:
            break  # it finished just before the kill
        time.sleep(0.1)  # POSTs the dead run had sent land (or not) now
        kill = Kill(mode, delay, posts_in_flight=in_progress)
        kill.new_run = ledger.runs() > runs_before
        last = ledger.query("SELECT MAX(id) FROM runs")[0][0] if kill.new_run else None
        if last is not None:
            rows = ledger.query(f"SELECT COUNT(*) FROM run_rows WHERE run_id = {last}")
            kill.ingested = rows[0][0] == ROWS
        in_flight = ledger.query("SELECT communication_id FROM items WHERE status = 'in_flight'")
        kill.in_flight_items = len(in_flight)
        landed = emulator.stats(detail=True)["posts_per_communication"]
        kill.landed_unrecorded = sum(1 for (comm,) in in_flight if comm in landed)
        kills.append(kill)

    ledger.close()
    assert covered(), "\n".join(map(str, kills))

    final = subprocess.run(
        argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )

    assert final.returncode == 0, (final.stderr, kills)
    ordered, _ = read_results(results)
    assert [int(r["row"]) for r in ordered] == list(range(1, ROWS + 1))
    assert {r["status"] for r in ordered} == {"applied"}
    recovered = [r for r in ordered if "confirmed by reading it back" in r["message"]]
    assert recovered  # in_flight items whose POST had landed were settled by reading back
    stats = emulator.stats(detail=True)
    assert stats["posts_per_communication"] == {agent_comm(i): 1 for i in range(ROWS)}
    wrapups = {c: code for c, code in stats["wrapups"].items() if c.startswith("9e")}
    assert wrapups == {agent_comm(i): CODES[NAMES[i % 4]] for i in range(ROWS)}
    reader = LedgerReader(ledger_target)
    if "://" not in ledger_target:
        assert reader.query("PRAGMA integrity_check") == [("ok",)]
    counts = reader.query("SELECT status, COUNT(*) FROM items GROUP BY status")
    reader.close()
    assert counts == [("applied", ROWS)]
    print(f"\n{len(kills)} kills:", *kills, sep="\n  ")  # shown by pytest -s
