"""API faults, each alone and all together, against the emulator on loopback (issue 5).

Every case runs a batch of generated conversations through the CLI with the fault switched on,
then checks that:
- the fault really happened (the emulator's stats or the tool's log show it), so that no case
  can pass by not being attacked;
- the run ended 0 or 1 exactly as its statuses say, with no row left pending or in_flight and
  no traceback;
then switches the fault off and reruns on the same ledger: every row ends `applied`, the
emulator's wrap-up on every communication is the code asked for, and no communication ever
received more than one accepted wrap-up POST over both runs. Each case runs with a SQLite
ledger and with a PostgreSQL one.

Bounded time: retries back off in milliseconds (`fast_retries`); the token of the issue that
"expires every 30 seconds" expires every second here (the path is the same: a 401, a new token,
one retry); the 429 storm lasts 2 s with `Retry-After: 2`; latency spikes are 0.45 s against a
0.3 s request timeout.
"""

from __future__ import annotations

import functools
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_run_cli import (
    POST_WRAPUP,
    Run,
    fast_retries,
    invoke,
    items_by_conversation,
    storm_at_request,
    write_csv,
)

from wrapup_batch import genesys
from wrapup_batch.api_settings import ApiSettings
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, generated_conversation_id
from wrapup_batch.genesys import GenesysClient, RequestNotSentError

__all__ = ["fast_retries"]  # a fixture, used by name

ROWS = 80
FINE = {"applied", "unchanged", "skipped", "duplicate", "would_apply"}
CODES = {
    "Sales": "9c000001-0000-4000-8000-000000000000",
    "Support - Billing": "9c000003-0000-4000-8000-000000000000",
    "Support - Technical": "9c000004-0000-4000-8000-000000000000",
    "Complaint": "9c000005-0000-4000-8000-000000000000",
}
NAMES = list(CODES)
FAILING = 7  # the generated conversation whose wrap-up POST keeps failing


def agent_comm(i: int) -> str:
    """The agent communication of generated conversation i (the one a run wraps up)."""
    return f"9e000012-0000-4000-8000-{i:012x}"


def asked(i: int) -> str:
    return NAMES[i % len(NAMES)]


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0, generate=ROWS, random_seed=5)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    rows = [[generated_conversation_id(i), asked(i)] for i in range(ROWS)]
    return write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code"], rows)


@dataclass
class Fault:
    """How to switch a fault on, the run flags it needs, and the proof that it struck."""

    name: str
    knobs: dict[str, Any] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    storm: bool = False
    failing: bool = False
    proof: Callable[[dict[str, Any], str], bool] = lambda stats, log: True


def _retried_after(text: str) -> Callable[[dict[str, Any], str], bool]:
    return lambda stats, log: f"after {text}" in log


FIVE_XX = Fault(
    "10% 5xx",
    {"fault_rate": 0.1},
    proof=lambda stats, log: stats["faults"] > 0 and any(s.startswith("5") for s in posts(stats)),
)
TIMEOUTS = Fault(
    "latency spikes beyond the request timeout",
    {"latency_spike_rate": 0.15, "latency_spike_ms": 450},
    args=("--request-timeout", "0.3"),
    proof=_retried_after("timed out on POST"),
)
DROPS = Fault(
    "connections dropped before or mid-response",
    {"drop_rate": 0.1, "drop_after_rate": 0.1},
    args=("--request-timeout", "0.5"),
    proof=lambda stats, log: (
        "connection failed on GET" in log
        and "connection failed on POST" in log
        # some wrap-up POSTs were stored and then lost their response
        and stats["posts_accepted"] > posts(stats).get("202", 0)
    ),
)
STORM = Fault(
    "a 429 storm with a long Retry-After",
    {"latency_ms": 5},
    storm=True,
    proof=lambda stats, log: stats["throttled"] > 0 and "answered 429" in log,
)
TOKEN = Fault(
    "a token that expires every second",
    {"token_ttl": 1, "latency_ms": 50},
    proof=lambda stats, log: (
        stats["tokens_issued"] >= 2 and any("401" in s for s in stats["requests"].values())
    ),
)
FAILING_POST = Fault(
    "a conversation whose POST keeps failing",
    failing=True,
    proof=lambda stats, log: stats["post_attempts_per_communication"][agent_comm(FAILING)] == 5,
)
ALL = Fault(
    "all together",
    {
        "fault_rate": 0.1,
        "latency_spike_rate": 0.05,
        "latency_spike_ms": 450,
        "drop_rate": 0.05,
        "ghost_write_rate": 0.05,
        "token_ttl": 1,
        "latency_ms": 5,
    },
    args=("--request-timeout", "0.3"),
    storm=True,
    failing=True,
    proof=lambda stats, log: (
        stats["faults"] > 0
        and stats["dropped"] > 0
        and stats["ghost_writes"] > 0
        and stats["throttled"] > 0
        and stats["tokens_issued"] >= 2
        and "timed out on" in log
    ),
)


def posts(stats: dict[str, Any]) -> dict[str, int]:
    return dict(stats["requests"].get(POST_WRAPUP, {}))


def switch_on(fault: Fault, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.config.update(fault.knobs)
    if fault.failing:
        emulator.config.failing_conversations = {generated_conversation_id(FAILING)}
    if fault.storm:
        storm_at_request(emulator, monkeypatch, number=ROWS // 2, seconds=2.0, retry_after=2)


def switch_off(emulator: EmulatorHandle) -> None:
    """Every fault off (a storm started by `storm_at_request` happens once and is over)."""
    emulator.config.update(
        {
            "fault_rate": 0.0,
            "latency_spike_rate": 0.0,
            "drop_rate": 0.0,
            "ghost_write_rate": 0.0,
            "token_ttl": 86400,
            "latency_ms": 0,
            "failing_conversations": [],
        }
    )


def check_exit_matches_statuses(run: Run) -> None:
    statuses = run.statuses()
    assert len(statuses) == ROWS, run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert not {"pending", "in_flight"} & set(statuses.values()), statuses
    assert set(statuses.values()) <= {"applied", "failed"}, statuses
    expected = 0 if set(statuses.values()) <= FINE else 1
    assert run.exit_code == expected, (run.exit_code, statuses, run.stderr)


def check_statuses_match_the_emulator(run: Run, emulator: EmulatorHandle) -> None:
    """Each row's recorded status against what the emulator holds: `applied` exactly when the
    communication carries the code asked for (and got one accepted POST), `failed` exactly
    when no POST of it was stored. A POST that landed but is recorded `failed` (or one
    recorded `applied` that never landed) fails here."""
    stats = emulator.stats(detail=True)
    held, accepted = stats["wrapups"], stats["posts_per_communication"]
    for number, status in run.statuses().items():
        i = number - 1
        comm, where = agent_comm(i), f"row {number}: {run.rows[number]}"
        if status == "applied":
            assert held.get(comm) == CODES[asked(i)], where
            assert accepted.get(comm) == 1, where
        else:
            assert status == "failed", where
            assert comm not in held and comm not in accepted, where
    assert sum(s == "applied" for s in run.statuses().values()) == len(accepted)


def check_every_row_applied_once(emulator: EmulatorHandle) -> None:
    stats = emulator.stats(detail=True)
    assert stats["posts_per_communication"] == {agent_comm(i): 1 for i in range(ROWS)}
    generated = {c: code for c, code in stats["wrapups"].items() if c.startswith("9e")}
    assert generated == {agent_comm(i): CODES[asked(i)] for i in range(ROWS)}


@pytest.mark.parametrize(
    "fault",
    [FIVE_XX, TIMEOUTS, DROPS, STORM, TOKEN, FAILING_POST, ALL],
    ids=lambda f: f.name.replace(" ", "-"),
)
def test_a_fault_ends_in_true_statuses_and_a_rerun_finishes_without_a_second_write(
    emulator: EmulatorHandle,
    tmp_path: Path,
    source: Path,
    monkeypatch: pytest.MonkeyPatch,
    fast_retries: None,
    fault: Fault,
    ledger_target: str,
) -> None:
    switch_on(fault, emulator, monkeypatch)
    log = tmp_path / "run.log"
    summary = tmp_path / "summary.json"

    first = invoke(
        emulator,
        tmp_path,
        source,
        *fault.args,
        "--log-file",
        log,
        "-v",
        "--summary-json",
        summary,
        ledger=ledger_target,
    )

    stats = emulator.stats(detail=True)
    assert fault.proof(stats, log.read_text(encoding="utf-8")), (stats, first.stderr)
    check_exit_matches_statuses(first)
    check_statuses_match_the_emulator(first, emulator)
    data = json.loads(summary.read_text(encoding="utf-8"))
    assert data["exit_code"] == first.exit_code
    assert data["wrapup_posts"] == stats["post_attempts"]
    assert all(n == 1 for n in stats["posts_per_communication"].values()), stats
    if fault.failing:
        row = first.rows[FAILING + 1]
        assert row["status"] == "failed", row
        assert first.exit_code == 1
    if fault is FAILING_POST:
        row = first.rows[FAILING + 1]
        assert row["message"].endswith("answered 500: The server encountered an error.")
        assert (row["http_status"], row["error_code"]) == ("500", "internal.server.error")
        assert len(row["context_id"]) == 36
        item = items_by_conversation(ledger_target)[generated_conversation_id(FAILING)]
        assert (item["status"], item["message"], item["context_id"]) == (
            "failed",
            row["message"],
            row["context_id"],
        )
        # ... and it held up nothing: every other row was applied in the same run.
        assert {n: s for n, s in first.statuses().items() if n != FAILING + 1} == dict.fromkeys(
            (n for n in range(1, ROWS + 1) if n != FAILING + 1), "applied"
        )

    switch_off(emulator)
    rerun = invoke(emulator, tmp_path, source, ledger=ledger_target)

    assert rerun.exit_code == 0, rerun.stderr
    assert set(rerun.statuses().values()) == {"applied"}
    check_every_row_applied_once(emulator)


def test_a_failing_conversation_does_not_hold_up_the_rest(
    emulator: EmulatorHandle, tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failing row's worker retries; the other workers go on meanwhile.

    No wall-clock margin decides it: before its fifth and last attempt the failing row waits
    (up to a minute) until the emulator has accepted every other row. A runner that held the
    others up behind the failing row would never get there, and the wait would time out.
    """
    failing = generated_conversation_id(0)  # the very first row
    seen: dict[str, Any] = {}

    class HoldingClient(GenesysClient):
        def _notify_retry(self, method: str, path: str, state: Any) -> None:
            super()._notify_retry(method, path, state)
            if method == "POST" and failing in path and state.attempt_number == 4:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if emulator.stats()["posts_accepted"] >= ROWS - 1:
                        break
                    time.sleep(0.02)
                seen["accepted"] = emulator.stats()["posts_accepted"]
                seen["attempts"] = emulator.stats(detail=True)[
                    "post_attempts_per_communication"
                ].get(agent_comm(0), 0)

    monkeypatch.setattr(
        genesys,
        "GenesysClient",
        functools.partial(HoldingClient, backoff_initial=0.1, backoff_max=1.0),
    )
    emulator.config.failing_conversations = {failing}
    emulator.config.latency_ms = 5

    run = invoke(emulator, tmp_path, source, "--concurrency", "4")

    assert run.exit_code == 1, run.stderr
    assert run.rows[1]["status"] == "failed"
    assert set(run.statuses().values()) == {"applied", "failed"}
    # While the failing row had tried four times and not yet its fifth, all the rest was in.
    assert seen == {"accepted": ROWS - 1, "attempts": 4}
    stats = emulator.stats(detail=True)
    assert stats["post_attempts_per_communication"][agent_comm(0)] == 5


def test_a_post_that_could_not_connect_is_retried_without_waiting_to_settle() -> None:
    """The wait before reading back is for requests the server got; one that never left (no
    connection) is retried at once. Nothing listens on the port: the connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free, and nothing will listen on it
    settings = ApiSettings(f"http://127.0.0.1:{port}", "id", "secret", timeout=5.0)
    client = GenesysClient(settings, backoff_initial=0.01, backoff_max=0.02)
    started = time.monotonic()

    with pytest.raises(RequestNotSentError, match="could not connect on POST"):
        client.post_wrapup("calls", "c", "p", "m", code_id="x")

    assert time.monotonic() - started < 2.0  # not 4 waits of the 5 s request timeout
    assert client.writes_sent == 5
