"""End to end: `wrapup-batch run` through the CLI against the emulator on loopback.

Every row status of DESIGN.md is reached here:
- applied, unchanged, skipped, duplicate, unknown_code, ambiguous_code, conflict, not_found,
  not_ended, no_agent, forbidden: the sample `reclassify.csv` (test_sample_run_...);
- invalid: `bad_rows.csv`; would_apply: the dry run; rejected: a 400 on the POST;
  failed: a conversation whose POST always answers 500;
- pending: a run stopped by --max-runtime (and an aborted run); in_flight: a process killed
  after its POST landed, a run aborted by a 403 on the POST, and items set in_flight by hand.

The emulator's own stats (requests by route and status, POSTs per communication) are the
witness of what was sent; the ledger is read with sqlite3 (or SQLAlchemy, for the tests that
run on both databases: `ledger_target`), the results CSV with csv.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from wrapup_batch import genesys
from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle
from wrapup_batch.genesys import GenesysClient
from wrapup_batch.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"
RECLASSIFY = SAMPLE / "reclassify.csv"
BAD_ROWS = SAMPLE / "bad_rows.csv"
CRM = SAMPLE / "crm.sqlite"

POST_WRAPUP = (
    "POST /api/v2/conversations/{media}/{conversationId}/participants/{participantId}"
    "/communications/{communicationId}/wrapup"
)
GET_CONVERSATION = "GET /api/v2/conversations/{conversationId}"
GET_CODES = "GET /api/v2/routing/wrapupcodes"
TOKEN = "POST /oauth/token"

DESIGN_COLUMNS = (
    "row",
    "conversation_id",
    "wrapup_code",
    "status",
    "message",
    "participant_id",
    "communication_id",
    "previous_code",
)
ENV_NAMES = (
    "GENESYSCLOUD_API_HOST",
    "GENESYSCLOUD_OAUTHCLIENT_ID",
    "GENESYSCLOUD_OAUTHCLIENT_SECRET",
    "GENESYSCLOUD_REGION",
)


# -- the seed's readable ids ---------------------------------------------------------------------


def conv(n: int) -> str:
    return f"c{n:07d}-0000-4000-8000-000000000000"


def part(n: int, p: int) -> str:
    return f"a{n:07d}-0000-4000-8000-{p:012d}"


def comm(n: int, p: int, c: int = 1) -> str:
    return f"e{n:07d}-0000-4000-8000-{p * 10 + c:012d}"


def code(n: int) -> str:
    return f"9c{n:06d}-0000-4000-8000-000000000000"


def user(n: int) -> str:
    return f"b{n:07d}-0000-4000-8000-000000000000"


SALES, BILLING, TECHNICAL, COMPLAINT = code(1), code(3), code(4), code(5)
CALLBACK, FOLLOW_UP = code(8), code(11)


@dataclass(frozen=True)
class Expect:
    status: str
    participant_id: str = ""
    communication_id: str = ""
    media: str | None = None
    code_id: str | None = None
    previous_code: str = ""
    message: str = ""  # a substring of the row's message


def applied(n: int, p: int, media: str, code_id: str, c: int = 1) -> Expect:
    return Expect("applied", part(n, p), comm(n, p, c), media, code_id)


#: sample_data/reclassify.csv, row by row, as the seed's comments intend.
SAMPLE_EXPECTED: dict[int, Expect] = {
    1: applied(1, 3, "calls", TECHNICAL),
    2: applied(2, 4, "calls", BILLING),  # blind transfer: Bob, who ended last
    3: applied(3, 3, "calls", SALES),  # consult: Alice ended last (Bob is listed last)
    4: applied(4, 3, "emails", COMPLAINT),
    5: applied(5, 3, "messages", TECHNICAL),
    6: applied(6, 3, "callbacks", CALLBACK),
    7: Expect("unchanged", part(7, 3), comm(7, 3), previous_code="Sales", message="already"),
    8: Expect("skipped", part(8, 3), comm(8, 3), previous_code="Complaint", message="replace"),
    9: Expect("not_ended", message="has not ended"),
    10: Expect("no_agent", message="no agent participant"),
    11: Expect("forbidden", message="forbidden"),
    12: Expect("not_found", message="not found"),
    13: applied(12, 4, "calls", FOLLOW_UP),  # conference: Carol ended last
    14: Expect("no_agent", message="no agent participant"),
    15: applied(14, 1, "calls", BILLING),  # outbound by a 'user' participant
    16: Expect("duplicate", part(1, 3), comm(1, 3), message="same as row 1"),  # row 1's item
    17: Expect("unknown_code", message='did you mean "Sales"'),
    18: Expect("unknown_code", message="Escalation - Legal"),
    19: Expect("ambiguous_code", message="ambiguous"),
    20: Expect("conflict", message="rows 20, 21"),
    21: Expect("conflict", message="rows 20, 21"),
    22: applied(19, 3, "calls", TECHNICAL, c=2),  # the re-established second call
}
SAMPLE_APPLIED = {e.communication_id: e.code_id for e in SAMPLE_EXPECTED.values() if e.code_id}
SAMPLE_GET_CONVERSATIONS = 16  # one lookup per distinct item not decided before the work
#: The sample's outcome, counted by status.
SAMPLE_COUNTS = {
    "applied": 9,
    "unchanged": 1,
    "skipped": 1,
    "duplicate": 1,
    "not_ended": 1,
    "no_agent": 2,
    "forbidden": 1,
    "not_found": 1,
    "unknown_code": 2,
    "ambiguous_code": 1,
    "conflict": 2,
}
#: The nightly query's rows on the sample CRM (sample_data/crm.sqlite), by conversation.
NIGHTLY_EXPECTED = {
    conv(1): "applied",
    conv(2): "applied",
    conv(3): "applied",
    conv(4): "applied",
    conv(5): "applied",
    conv(6): "applied",
    conv(7): "unchanged",
    conv(8): "skipped",
    conv(9): "not_ended",
    conv(10): "no_agent",
    conv(12): "applied",
    conv(14): "applied",
    conv(19): "applied",  # typed in upper case by the CRM
}


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """No emulator rate limit by default: tests that need one set it on the live config."""
    return EmulatorConfig(rate_limit=0)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's client with millisecond backoff, so that 5 attempts take no seconds."""
    monkeypatch.setattr(
        genesys,
        "GenesysClient",
        functools.partial(GenesysClient, backoff_initial=0.01, backoff_max=0.05),
    )


@dataclass
class Run:
    """One run's exit code and output, and its results CSV read back."""

    exit_code: int
    stdout: str
    stderr: str
    ordered: list[dict[str, str]]
    header: list[str]

    @property
    def rows(self) -> dict[int, dict[str, str]]:
        return {int(r["row"]): r for r in self.ordered}

    def statuses(self) -> dict[int, str]:
        return {int(r["row"]): r["status"] for r in self.ordered}


def env_for(emulator: EmulatorHandle, **overrides: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = {name: None for name in ENV_NAMES}
    env.update(emulator.env())
    env.update(overrides)
    return env


def client_env(emulator: EmulatorHandle, client_id: str) -> dict[str, str | None]:
    secret = emulator.client(client_id).client_secret
    return env_for(
        emulator,
        GENESYSCLOUD_OAUTHCLIENT_ID=client_id,
        GENESYSCLOUD_OAUTHCLIENT_SECRET=secret,
    )


def invoke(
    emulator: EmulatorHandle,
    tmp_path: Path,
    *args: str | Path,
    env: Mapping[str, str | None] | None = None,
    ledger: str = "ledger.db",
    results: str = "out.csv",
    quiet: bool = True,
    rate_limit: str | None = "6000",
) -> Run:
    """`wrapup-batch run ARGS` with the ledger (a file in tmp_path, or a URL) and results in
    tmp_path; the results read back."""
    out = tmp_path / results
    out.unlink(missing_ok=True)
    ledger = ledger if "://" in ledger else str(tmp_path / ledger)
    argv = ["run", *map(str, args), "--ledger", ledger, "--results", str(out)]
    if quiet:
        argv.append("--quiet")
    if rate_limit is not None and "--rate-limit" not in argv:
        argv += ["--rate-limit", rate_limit]
    result = CliRunner().invoke(
        main, argv, env=dict(env or env_for(emulator)), catch_exceptions=False
    )
    ordered, header = read_results(out) if out.exists() else ([], [])
    return Run(result.exit_code, result.stdout, result.stderr, ordered, header)


def read_results(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return rows, list(reader.fieldnames or [])


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def query(db: Path | str, sql: str, *params: object) -> list[dict[str, Any]]:
    """Rows of `sql` on a ledger: a SQLite file (sqlite3, `?` parameters) or a URL."""
    if "://" in str(db):
        engine = create_engine(str(db))
        try:
            with engine.connect() as conn:
                return [dict(row) for row in conn.exec_driver_sql(sql, params).mappings()]
        finally:
            engine.dispose()
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute(sql, params)]
    finally:
        connection.close()


def items_by_conversation(db: Path | str) -> dict[str, dict[str, Any]]:
    """The ledger's items keyed by conversation id (the tests use one item per conversation)."""
    return {row["conversation_id"]: row for row in query(db, "SELECT * FROM items")}


def post_counts(stats: Mapping[str, Any]) -> dict[str, int]:
    """Wrap-up POSTs by HTTP status, as the emulator answered them."""
    return {k: int(v) for k, v in stats["requests"].get(POST_WRAPUP, {}).items()}


def route_total(stats: Mapping[str, Any], route: str) -> int:
    return sum(stats["requests"].get(route, {}).values())


def api_requests(stats: Mapping[str, Any]) -> int:
    return sum(
        sum(by_status.values())
        for route, by_status in stats["requests"].items()
        if " /api/v2/" in route
    )


def check_row(row: Mapping[str, str], expect: Expect) -> None:
    where = f"row {row['row']} ({row['conversation_id']}): {dict(row)}"
    assert row["status"] == expect.status, where
    assert row["participant_id"] == expect.participant_id, where
    assert row["communication_id"] == expect.communication_id, where
    assert row["previous_code"] == expect.previous_code, where
    assert expect.message in row["message"], where
    if expect.code_id:
        assert row["code_id"] == expect.code_id, where


def check_sample(run: Run, emulator: EmulatorHandle, db: Path | str) -> None:
    """The sample's outcome: exit 1, every row as intended, and the emulator agrees."""
    assert run.exit_code == 1, run.stderr
    assert [int(r["row"]) for r in run.ordered] == list(range(1, 23))
    with RECLASSIFY.open(encoding="utf-8") as handle:
        asked = [r["conversation_id"] for r in csv.DictReader(handle)]
    assert [r["conversation_id"] for r in run.ordered] == asked
    for number, expect in SAMPLE_EXPECTED.items():
        check_row(run.rows[number], expect)
    stats = emulator.stats(detail=True)
    wrapups = stats["wrapups"]
    for communication_id, code_id in SAMPLE_APPLIED.items():
        assert wrapups[communication_id] == code_id
    assert wrapups[comm(7, 3)] == SALES
    assert wrapups[comm(8, 3)] == COMPLAINT  # skipped: left as it was
    assert comm(18, 3) not in wrapups  # conflict: none applied
    items = {row["communication_id"]: row for row in query(db, "SELECT * FROM items")}
    for expect in SAMPLE_EXPECTED.values():
        if expect.media:
            item = items[expect.communication_id]
            assert (item["status"], item["media"]) == ("applied", expect.media)
            assert item["http_status"] == 202


def check_each_posted_once(emulator: EmulatorHandle, communications: Mapping[str, Any]) -> None:
    per_comm = emulator.stats(detail=True)["posts_per_communication"]
    assert per_comm == dict.fromkeys(communications, 1)


# -- 1. the sample run --------------------------------------------------------------------------


def test_sample_run_reaches_each_status_as_the_seed_intends(
    emulator: EmulatorHandle, tmp_path: Path, ledger_target: str
) -> None:
    summary = tmp_path / "summary.json"
    run = invoke(emulator, tmp_path, RECLASSIFY, "--summary-json", summary, ledger=ledger_target)

    check_sample(run, emulator, ledger_target)
    assert run.header[: len(DESIGN_COLUMNS)] == list(DESIGN_COLUMNS)
    assert run.rows[8]["previous_code_id"] == COMPLAINT
    assert run.rows[11]["http_status"] == "403"
    assert run.rows[12]["http_status"] == "404"

    stats = emulator.stats(detail=True)
    # One POST per applied communication; the conflicting conversation got none at all.
    check_each_posted_once(emulator, SAMPLE_APPLIED)
    assert comm(18, 3) not in stats["post_attempts_per_communication"]
    assert route_total(stats, GET_CONVERSATION) == SAMPLE_GET_CONVERSATIONS
    assert stats["requests"][GET_CODES] == {"200": 1}

    counts = json.loads(summary.read_text(encoding="utf-8"))["counts"]
    assert counts == SAMPLE_COUNTS
    runs = query(ledger_target, "SELECT * FROM runs")
    assert len(runs) == 1 and runs[0]["exit_code"] == 1 and runs[0]["finished"]
    run_rows = query(ledger_target, 'SELECT * FROM run_rows ORDER BY "row"')
    assert [r["row"] for r in run_rows] == list(range(1, 23))
    assert run_rows[15]["status"] == "duplicate"


def test_rerun_sends_no_posts_and_keeps_applied_rows(
    emulator: EmulatorHandle, tmp_path: Path, ledger_target: str
) -> None:
    first = invoke(emulator, tmp_path, RECLASSIFY, ledger=ledger_target)
    check_sample(first, emulator, ledger_target)
    emulator.reset_stats()

    second = invoke(emulator, tmp_path, RECLASSIFY, ledger=ledger_target)

    check_sample(second, emulator, ledger_target)
    assert second.statuses() == first.statuses()
    stats = emulator.stats(detail=True)
    assert POST_WRAPUP not in stats["requests"]
    assert stats["post_attempts"] == 0 and stats["posts_per_communication"] == {}
    # Only the rows that are not fine are looked up again: not_ended, no_agent x2, forbidden,
    # not_found. Applied, unchanged and skipped rows cost nothing.
    assert route_total(stats, GET_CONVERSATION) == 5
    runs = query(ledger_target, "SELECT exit_code, summary FROM runs ORDER BY id")
    assert [r["exit_code"] for r in runs] == [1, 1]
    assert json.loads(runs[1]["summary"])["wrapup_posts"] == 0


def test_dry_run_posts_nothing_and_the_real_run_then_applies(
    emulator: EmulatorHandle, tmp_path: Path, ledger_target: str
) -> None:
    summary = tmp_path / "dry.json"
    dry = invoke(
        emulator, tmp_path, RECLASSIFY, "--dry-run", "--summary-json", summary, ledger=ledger_target
    )

    assert dry.exit_code == 1, dry.stderr
    for number, expect in SAMPLE_EXPECTED.items():
        row = dry.rows[number]
        if expect.status == "applied":
            assert row["status"] == "would_apply", row
            assert row["communication_id"] == expect.communication_id
            assert "would apply" in row["message"]
        else:
            assert row["status"] == expect.status, row
    stats = emulator.stats(detail=True)
    assert stats["post_attempts"] == 0 and POST_WRAPUP not in stats["requests"]
    seeded = {cid: w.code for cid, w in emulator.state.seed.wrapups.items()}
    assert seeded[comm(7, 3)] == SALES and seeded[comm(8, 3)] == COMPLAINT
    assert stats["wrapups"] == seeded  # nothing written
    data = json.loads(summary.read_text(encoding="utf-8"))
    assert data["dry_run"] is True and data["wrapup_posts"] == 0
    assert data["counts"]["would_apply"] == 9
    assert "dry run: nothing was written" in dry.stderr

    real = invoke(emulator, tmp_path, RECLASSIFY, ledger=ledger_target)
    check_sample(real, emulator, ledger_target)
    check_each_posted_once(emulator, SAMPLE_APPLIED)


# -- the other statuses: invalid, rejected, failed, pending, in_flight ---------------------------


def test_bad_rows_are_invalid_and_do_not_stop_the_batch(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = invoke(emulator, tmp_path, BAD_ROWS)

    assert run.exit_code == 1, run.stderr
    with BAD_ROWS.open(encoding="utf-8") as handle:
        intents = [r["notes"] for r in csv.DictReader(handle)]
    assert len(run.ordered) == len(intents) == 12
    for row, intent in zip(run.ordered, intents, strict=True):
        if intent.startswith("invalid"):
            assert row["status"] == "invalid", row
            assert row["message"], row
        else:
            assert row["status"] == "applied", row
    assert run.rows[9]["conversation_id"] == conv(4)  # braces and upper case normalised
    assert run.rows[11]["conversation_id"] == conv(6)  # 32 hex digits
    check_each_posted_once(emulator, {comm(4, 3): 1, comm(5, 3): 1, comm(6, 3): 1, comm(12, 4): 1})
    invalid = query(tmp_path / "ledger.db", "SELECT * FROM run_rows WHERE status = 'invalid'")
    assert len(invalid) == 8 and all(r["item_key"] is None for r in invalid)


def test_a_400_on_the_post_is_rejected_with_genesys_error_details(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The code is in the catalogue the run fetched, but the emulator refuses it on the POST
    # (as Genesys does for a code deleted since, or one the client may no longer use).
    visible_code = emulator.state.visible_code
    monkeypatch.setattr(
        emulator.state,
        "visible_code",
        lambda client, code_id: None if code_id == TECHNICAL else visible_code(client, code_id),
    )
    source = write_csv(
        tmp_path / "in.csv",
        ["conversation_id", "wrapup_code"],
        [[conv(1), "Support - Technical"], [conv(4), "Complaint"]],
    )

    run = invoke(emulator, tmp_path, source)

    assert run.exit_code == 1, run.stderr
    row = run.rows[1]
    assert row["status"] == "rejected"
    assert "does not exist" in row["message"]
    assert row["http_status"] == "400"
    assert row["error_code"] == "conversations.error.wrapup.code.not.found"
    assert row["context_id"]
    assert run.rows[2]["status"] == "applied"
    stats = emulator.stats(detail=True)
    assert stats["post_attempts_per_communication"][comm(1, 3)] == 1  # a 4xx is not retried
    item = items_by_conversation(tmp_path / "ledger.db")[conv(1)]
    assert (item["status"], item["http_status"]) == ("rejected", 400)
    assert item["context_id"] == row["context_id"]


def test_persistent_5xx_ends_failed_after_the_retries_and_a_rerun_finishes_it(
    emulator: EmulatorHandle, tmp_path: Path, fast_retries: None
) -> None:
    emulator.config.failing_conversations = {conv(1)}
    source = write_csv(
        tmp_path / "in.csv",
        ["conversation_id", "wrapup_code"],
        [[conv(1), "Support - Technical"], [conv(4), "Complaint"], [conv(5), "Sales"]],
    )

    run = invoke(emulator, tmp_path, source)

    assert run.exit_code == 1, run.stderr
    assert run.statuses() == {1: "failed", 2: "applied", 3: "applied"}
    assert "The server encountered an error." in run.rows[1]["message"]
    item = items_by_conversation(tmp_path / "ledger.db")[conv(1)]
    assert item["status"] == "failed"
    assert item["http_status"] == 500
    assert item["error_code"] == "internal.server.error"
    assert item["context_id"]
    stats = emulator.stats(detail=True)
    assert stats["post_attempts_per_communication"][comm(1, 3)] == 5  # at most 5 attempts
    assert comm(1, 3) not in stats["posts_per_communication"]

    emulator.config.failing_conversations = set()
    emulator.reset_stats()
    rerun = invoke(emulator, tmp_path, source)
    assert rerun.exit_code == 0, rerun.stderr
    assert set(rerun.statuses().values()) == {"applied"}
    check_each_posted_once(emulator, {comm(1, 3): 1})


def test_max_runtime_stops_early_with_rows_pending_and_a_rerun_resumes(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    # Each looked-up row costs two requests of 0.5 s, one at a time: the sample's rows need
    # far more than 6 s, and 6 s leaves a loaded machine room to start (code list, ingest).
    emulator.config.latency_ms = 500
    run = invoke(emulator, tmp_path, RECLASSIFY, "--max-runtime", "6s", "--concurrency", "1")

    assert run.exit_code == 4, run.stderr
    assert "stopped early" in run.stderr and "run again to resume" in run.stderr
    statuses = run.statuses()
    assert "pending" in statuses.values()
    assert "in_flight" not in statuses.values()
    assert list(statuses.values()).count("applied") >= 1
    for number, status in statuses.items():
        assert status in ("pending", SAMPLE_EXPECTED[number].status), (number, status)
    first_posts = emulator.stats(detail=True)["posts_per_communication"]
    assert 1 <= len(first_posts) < len(SAMPLE_APPLIED)
    runs = query(tmp_path / "ledger.db", "SELECT exit_code FROM runs")
    assert runs == [{"exit_code": 4}]

    emulator.config.latency_ms = 0
    rerun = invoke(emulator, tmp_path, RECLASSIFY)
    check_sample(rerun, emulator, tmp_path / "ledger.db")
    check_each_posted_once(emulator, SAMPLE_APPLIED)  # across both runs


@pytest.mark.parametrize("left_as", ["in_flight", "failed"])
def test_in_flight_item_whose_post_landed_is_confirmed_without_a_second_post(
    emulator: EmulatorHandle, tmp_path: Path, left_as: str
) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        ["conversation_id", "wrapup_code"],
        [[conv(1), "Support - Technical"], [conv(4), "Complaint"]],
    )
    assert invoke(emulator, tmp_path, source).exit_code == 0
    db = tmp_path / "ledger.db"
    assert query(db, "SELECT DISTINCT attempts FROM items") == [{"attempts": 2}]
    # A crash between the POST (landed on the emulator) and the record of its outcome; or
    # retries that ran out with no answer (`failed`) although one of the POSTs had landed.
    connection = sqlite3.connect(db)
    with connection:
        connection.execute(
            "UPDATE items SET status = ? WHERE conversation_id IN (?, ?)",
            (left_as, conv(1), conv(4)),
        )
    connection.close()
    # ... and for conv(4), the POST never reached Genesys.
    del emulator.state.wrapups[comm(4, 3)]
    emulator.reset_stats()

    rerun = invoke(emulator, tmp_path, source)

    assert rerun.exit_code == 0, rerun.stderr
    assert rerun.statuses() == {1: "applied", 2: "applied"}
    assert "confirmed by reading it back" in rerun.rows[1]["message"]
    # the end time that landed is the one recorded (c0000001's endAcwTime)
    assert rerun.rows[1]["wrapup_end_time"] == "2026-11-20T08:08:30.300Z"
    # conv(1): read back, not resent; conv(4): its wrap-up was missing, so sent once.
    check_each_posted_once(emulator, {comm(4, 3): 1})
    assert emulator.stats()["wrapups"][comm(1, 3)] == TECHNICAL
    assert route_total(emulator.stats(), GET_CONVERSATION) == 2


def test_run_killed_after_its_post_landed_leaves_in_flight_and_the_rerun_does_not_resend(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "in.csv", ["conversation_id", "wrapup_code"], [[conv(1), "Complaint"]]
    )
    db = tmp_path / "ledger.db"
    # The POST is stored but answered 504: the run backs off (>= 0.5 s) before reading the
    # wrap-up back, and is killed in that window, its item still in_flight.
    emulator.config.ghost_write_rate = 1.0
    emulator.config.latency_ms = 100
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | emulator.env()
    process = subprocess.Popen(
        [sys.executable, "-m", "wrapup_batch", "run", str(source), "--ledger", str(db), "-q"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        landed = wait_for(lambda: emulator.stats(False)["ghost_writes"] >= 1, 30.0)
    finally:
        process.kill()
        process.wait(timeout=10)
    assert landed
    assert process.returncode == -signal.SIGKILL
    assert emulator.stats()["posts_accepted"] == 1
    item = items_by_conversation(db)[conv(1)]
    assert (item["status"], item["communication_id"]) == ("in_flight", comm(1, 3))
    emulator.config.ghost_write_rate = 0.0
    emulator.config.latency_ms = 0
    emulator.reset_stats()

    rerun = invoke(emulator, tmp_path, source)  # the dead run's lock is taken over

    assert rerun.exit_code == 0, rerun.stderr
    assert rerun.rows[1]["status"] == "applied"
    assert "confirmed by reading it back" in rerun.rows[1]["message"]
    assert rerun.rows[1]["communication_id"] == comm(1, 3)
    stats = emulator.stats()
    assert stats["post_attempts"] == 0
    assert stats["wrapups"][comm(1, 3)] == COMPLAINT


def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


# -- 3. which communication ----------------------------------------------------------------------


def test_on_existing_replace_overwrites_and_records_the_previous_code(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        ["conversation_id", "wrapup_code"],
        [[conv(8), "Support - Billing"], [conv(7), "Sales"]],
    )
    first = invoke(emulator, tmp_path, source)
    assert first.statuses() == {1: "skipped", 2: "unchanged"}
    assert first.exit_code == 0
    assert emulator.stats()["post_attempts"] == 0

    replaced = invoke(emulator, tmp_path, source, "--on-existing", "replace")

    assert replaced.exit_code == 0, replaced.stderr
    row = replaced.rows[1]
    assert row["status"] == "applied"
    assert (row["previous_code"], row["previous_code_id"]) == ("Complaint", COMPLAINT)
    assert row["communication_id"] == comm(8, 3)
    assert replaced.rows[2]["status"] == "unchanged"  # the same code is never re-sent
    stats = emulator.stats(detail=True)
    assert stats["wrapups"][comm(8, 3)] == BILLING
    check_each_posted_once(emulator, {comm(8, 3): 1})
    item = items_by_conversation(tmp_path / "ledger.db")[conv(8)]
    assert (item["previous_code"], item["previous_code_name"]) == (COMPLAINT, "Complaint")


def test_all_agents_wraps_up_every_agent_of_the_conference(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "in.csv", ["conversation_id", "wrapup_code"], [[conv(12), "Sales"]]
    )

    run = invoke(emulator, tmp_path, source, "--participant", "all-agents")

    assert run.exit_code == 0, run.stderr
    row = run.rows[1]
    assert row["status"] == "applied"
    assert row["participant_id"].split(";") == [part(12, 3), part(12, 4)]
    assert row["communication_id"].split(";") == [comm(12, 3), comm(12, 4)]
    check_each_posted_once(emulator, {comm(12, 3): 1, comm(12, 4): 1})
    assert emulator.stats()["wrapups"][comm(12, 3)] == SALES


def test_agent_id_column_targets_one_user(emulator: EmulatorHandle, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        ["conversation_id", "wrapup_code", "agent_id"],
        [
            [conv(12), "Sales", user(1)],  # Alice, who left the conference first
            [conv(12), "Complaint", user(3)],  # Carol: another agent, so no conflict
            [conv(2), "Support - Billing", "{" + user(1).upper() + "}"],  # the transferrer
            [conv(1), "Sales", user(2)],  # Bob was not in this conversation
        ],
    )

    run = invoke(emulator, tmp_path, source)

    assert run.exit_code == 1, run.stderr
    assert run.statuses() == {1: "applied", 2: "applied", 3: "applied", 4: "no_agent"}
    assert (run.rows[1]["participant_id"], run.rows[1]["communication_id"]) == (
        part(12, 3),
        comm(12, 3),
    )
    assert run.rows[2]["communication_id"] == comm(12, 4)
    assert run.rows[3]["communication_id"] == comm(2, 3)
    assert "is not an agent participant" in run.rows[4]["message"]
    wrapups = emulator.stats()["wrapups"]
    assert (wrapups[comm(12, 3)], wrapups[comm(12, 4)]) == (SALES, COMPLAINT)
    check_each_posted_once(emulator, {comm(12, 3): 1, comm(12, 4): 1, comm(2, 3): 1})


# -- 4-6. rate limits, token expiry, faults ------------------------------------------------------


def test_429s_from_a_lower_org_limit_are_waited_out(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.config.rate_limit = 20
    emulator.config.rate_window_s = 2.0
    summary = tmp_path / "summary.json"

    run = invoke(emulator, tmp_path, RECLASSIFY, "--summary-json", summary, rate_limit="6000")

    stats, data = check_sample_after_429s(run, emulator, tmp_path, summary)
    assert data["requests"] == api_requests(stats)
    assert f"429s {stats['throttled']} " in run.stderr


def check_sample_after_429s(
    run: Run, emulator: EmulatorHandle, tmp_path: Path, summary: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample ended as always, each POST once, and the summary counts the emulator's 429s
    and at least one second waited; returns the emulator's stats and the summary."""
    check_sample(run, emulator, tmp_path / "ledger.db")
    check_each_posted_once(emulator, SAMPLE_APPLIED)
    stats = emulator.stats(detail=True)
    assert stats["throttled"] > 0
    data = json.loads(summary.read_text(encoding="utf-8"))
    assert data["throttled_429"] == stats["throttled"]
    assert data["retry_after_wait_seconds"] >= 1.0
    return stats, data


def storm_at_request(
    emulator: EmulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
    number: int,
    seconds: float,
    retry_after: int,
) -> None:
    """Start a 429 storm when the emulator admits its `number`-th /api/v2 request."""
    admit = emulator.state.admit
    admitted = itertools.count(1)

    def admit_then_storm(token: str) -> int:
        if next(admitted) == number:
            emulator.config.start_storm(seconds, retry_after=retry_after)
        return admit(token)

    monkeypatch.setattr(emulator.state, "admit", admit_then_storm)


def test_a_429_storm_in_the_middle_of_the_run_is_waited_out(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storm_at_request(emulator, monkeypatch, number=8, seconds=1.5, retry_after=1)
    summary = tmp_path / "summary.json"

    run = invoke(emulator, tmp_path, RECLASSIFY, "--summary-json", summary)

    _stats, data = check_sample_after_429s(run, emulator, tmp_path, summary)
    assert data["elapsed_seconds"] >= 1.0


def test_max_runtime_is_honoured_during_a_long_retry_after_pause(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storm_at_request(emulator, monkeypatch, number=4, seconds=30, retry_after=30)
    summary = tmp_path / "summary.json"

    run = invoke(emulator, tmp_path, RECLASSIFY, "--max-runtime", "1s", "--summary-json", summary)

    assert run.exit_code == 4, run.stderr
    assert "pending" in run.statuses().values()
    # Stopped at the 1 s deadline, not at the end of the 30 s Retry-After pause (the margin
    # is for a busy machine).
    assert json.loads(summary.read_text(encoding="utf-8"))["elapsed_seconds"] < 10


def test_the_rate_limit_flag_paces_the_requests(emulator: EmulatorHandle, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    source = write_csv(
        tmp_path / "in.csv",
        ["conversation_id", "wrapup_code"],
        [[conv(1), "Sales"], [conv(3), "Sales"], [conv(4), "Sales"], [conv(5), "Sales"]],
    )

    run = invoke(emulator, tmp_path, source, "--summary-json", summary, rate_limit="300")

    assert run.exit_code == 0, run.stderr
    data = json.loads(summary.read_text(encoding="utf-8"))
    # the org (a new ledger records it), 1 code page, 4 GETs + 4 POSTs
    assert data["requests"] == api_requests(emulator.stats()) == 10
    assert data["rate_limit_per_minute"] == 300
    assert data["requests_per_minute"] <= 300 * 1.05
    assert data["elapsed_seconds"] >= 9 * 60 / 300 * 0.95  # 10 requests: 9 intervals of 0.2 s


def test_a_token_that_expires_mid_run_is_renewed(emulator: EmulatorHandle, tmp_path: Path) -> None:
    emulator.config.token_ttl = 1
    emulator.config.latency_ms = 100
    rows = [
        [conv(1), "Support - Technical"],
        [conv(2), "Support - Billing"],
        [conv(3), "Sales"],
        [conv(4), "Complaint"],
        [conv(5), "Support - Technical"],
        [conv(6), "Callback Scheduled"],
        [conv(12), "Follow-up Required"],
        [conv(19), "Support - Technical"],
    ]
    source = write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code"], rows)

    run = invoke(emulator, tmp_path, source, "--concurrency", "1")

    assert run.exit_code == 0, run.stderr
    assert set(run.statuses().values()) == {"applied"}
    stats = emulator.stats(detail=True)
    assert stats["tokens_issued"] >= 2
    assert any("401" in by_status for by_status in stats["requests"].values())
    expected = {SAMPLE_EXPECTED[n].communication_id: 1 for n in (1, 2, 3, 4, 5, 6, 13, 22)}
    check_each_posted_once(emulator, expected)


def test_5xx_faults_and_ghost_writes_are_retried_without_duplicate_writes(
    emulator: EmulatorHandle, tmp_path: Path, fast_retries: None
) -> None:
    emulator.config.random_seed = 7
    emulator.config.fault_rate = 0.2
    emulator.config.ghost_write_rate = 0.3  # stored, but answered 504: must be read back

    run = invoke(emulator, tmp_path, RECLASSIFY, "--concurrency", "1")

    check_sample(run, emulator, tmp_path / "ledger.db")
    stats = emulator.stats(detail=True)
    assert stats["faults"] > 0 and stats["ghost_writes"] > 0
    assert any(s.startswith("5") for s in post_counts(stats))  # faults hit the POSTs too
    assert stats["posts_per_communication"] == dict.fromkeys(SAMPLE_APPLIED, 1)


# -- 7. credentials and permissions ---------------------------------------------------------------


def test_bad_secret_aborts_with_exit_3_naming_the_variables_and_not_the_secret(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    secret = "wrong-secret-4b1d9e"
    run = invoke(
        emulator,
        tmp_path,
        RECLASSIFY,
        env=env_for(emulator, GENESYSCLOUD_OAUTHCLIENT_SECRET=secret),
    )

    assert run.exit_code == 3
    assert "GENESYSCLOUD_OAUTHCLIENT_ID" in run.stderr
    assert "GENESYSCLOUD_OAUTHCLIENT_SECRET" in run.stderr
    assert secret not in (run.stdout + run.stderr) and secret not in run.stderr
    assert emulator.client_secret not in (run.stdout + run.stderr)
    stats = emulator.stats()
    assert stats["requests"] == {TOKEN: {"401": 1}}


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        (("GENESYSCLOUD_OAUTHCLIENT_ID", "GENESYSCLOUD_OAUTHCLIENT_SECRET"), "both"),
        (("GENESYSCLOUD_OAUTHCLIENT_SECRET",), "secret"),
    ],
)
def test_missing_credentials_are_a_usage_error(
    emulator: EmulatorHandle, tmp_path: Path, unset: tuple[str, ...], named: str
) -> None:
    run = invoke(emulator, tmp_path, RECLASSIFY, env=env_for(emulator, **dict.fromkeys(unset)))

    assert run.exit_code == 2
    for name in unset:
        assert name in run.stderr
    if named == "secret":
        assert "GENESYSCLOUD_OAUTHCLIENT_ID" not in run.stderr
    assert emulator.stats()["requests"] == {}
    assert "Traceback" not in (run.stdout + run.stderr)


def test_client_without_code_view_permission_aborts_naming_it(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = invoke(emulator, tmp_path, RECLASSIFY, env=client_env(emulator, "wrapup-batch-nocodes"))

    assert run.exit_code == 3
    assert "routing:wrapupCode:view" in run.stderr
    stats = emulator.stats()
    assert stats["requests"][GET_CODES] == {"403": 1}
    assert GET_CONVERSATION not in stats["requests"] and POST_WRAPUP not in stats["requests"]
    assert query(tmp_path / "ledger.db", "SELECT exit_code FROM runs") == [{"exit_code": 3}]


def test_client_without_wrapup_permission_aborts_and_a_rerun_finishes_without_duplicates(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = invoke(emulator, tmp_path, RECLASSIFY, env=client_env(emulator, "wrapup-batch-readonly"))

    assert run.exit_code == 3
    assert "conversation:participant:wrapup" in run.stderr
    statuses = list(run.statuses().values())
    assert "in_flight" in statuses and "pending" in statuses
    assert "applied" not in statuses
    stats = emulator.stats()
    assert set(post_counts(stats)) == {"403"}
    assert stats["posts_accepted"] == 0

    emulator.reset_stats()
    rerun = invoke(emulator, tmp_path, RECLASSIFY)  # the permitted default client
    check_sample(rerun, emulator, tmp_path / "ledger.db")
    check_each_posted_once(emulator, SAMPLE_APPLIED)


# -- 8. input forms and file-level errors --------------------------------------------------------

SMALL = [
    [conv(1), "Support - Technical", "Password reset, then a second try\non another line"],
    [conv(4), "complaint", ""],
    [conv(7), "Sales", ""],
]
SMALL_STATUSES = {1: "applied", 2: "applied", 3: "unchanged"}


def check_small(run: Run, emulator: EmulatorHandle) -> None:
    assert run.exit_code == 0, run.stderr
    assert run.statuses() == SMALL_STATUSES
    assert run.rows[1]["notes"] == SMALL[0][2]
    wrapups = emulator.state.wrapups
    assert wrapups[comm(1, 3)].notes == SMALL[0][2]
    assert wrapups[comm(4, 3)].code == COMPLAINT
    check_each_posted_once(emulator, {comm(1, 3): 1, comm(4, 3): 1})


@pytest.mark.parametrize(
    ("delimiter", "encoding"), [(",", "utf-8-sig"), (";", "utf-8-sig"), ("\t", "utf-8")]
)
def test_csv_delimiters_and_bom(
    emulator: EmulatorHandle, tmp_path: Path, delimiter: str, encoding: str
) -> None:
    source = tmp_path / "in.csv"
    with source.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["Conversation_ID ", " Wrapup_Code", "NOTES"])
        writer.writerows(SMALL)
    if encoding == "utf-8-sig":
        assert source.read_bytes().startswith(b"\xef\xbb\xbf")

    check_small(invoke(emulator, tmp_path, source), emulator)


def test_xlsx_with_a_named_sheet(emulator: EmulatorHandle, tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.title = "Read me"
    workbook.active.append(["This sheet is not the input"])
    sheet = workbook.create_sheet("Backfill")
    sheet.append(["conversation_id", "wrapup_code", "notes"])
    for row in SMALL:
        sheet.append(row)
    source = tmp_path / "in.xlsx"
    workbook.save(source)

    check_small(invoke(emulator, tmp_path, source, "--sheet", "Backfill"), emulator)


def test_column_mapping(emulator: EmulatorHandle, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["ConvId", "Disposition", "Comment"], SMALL)

    run = invoke(
        emulator,
        tmp_path,
        source,
        "--column",
        "conversation_id=ConvId",
        "--column",
        "wrapup_code=Disposition",
        "--column",
        "notes=Comment",
    )

    check_small(run, emulator)


def test_sql_query_on_the_sample_crm(emulator: EmulatorHandle, tmp_path: Path) -> None:
    crm = shutil.copy(CRM, tmp_path / "crm.sqlite")
    run = invoke(
        emulator,
        tmp_path,
        "--source-url",
        f"sqlite:///{crm}",
        "--query",
        "SELECT * FROM wrapup_backfill",
    )

    assert run.exit_code == 1, run.stderr
    by_conversation = {r["conversation_id"]: r["status"] for r in run.ordered}
    assert by_conversation == NIGHTLY_EXPECTED
    assert emulator.state.wrapups[comm(1, 3)].notes == "Password reset"
    assert emulator.stats()["wrapups"][comm(19, 3, 2)] == TECHNICAL


def test_sql_query_file(emulator: EmulatorHandle, tmp_path: Path) -> None:
    crm = shutil.copy(CRM, tmp_path / "crm.sqlite")
    sql = tmp_path / "backfill.sql"
    sql.write_text(
        "SELECT conversation_id AS ConversationId, wrapup_code\n"
        "FROM wrapup_backfill\nWHERE wrapup_code = 'Sales'\n",
        encoding="utf-8",
    )

    run = invoke(emulator, tmp_path, "--source-url", f"sqlite:///{crm}", "--query-file", sql)

    assert run.exit_code == 1, run.stderr
    assert [(r["conversation_id"], r["status"]) for r in run.ordered] == [
        (conv(3), "applied"),
        (conv(7), "unchanged"),
        (conv(9), "not_ended"),
    ]


def _missing_file(tmp_path: Path) -> tuple[list[str], list[str]]:
    return [str(tmp_path / "nope.csv")], ["nope.csv"]


def _missing_column(tmp_path: Path) -> tuple[list[str], list[str]]:
    source = write_csv(tmp_path / "codes.csv", ["conversation_id", "code"], [[conv(1), "Sales"]])
    return [str(source)], ["codes.csv", "wrapup_code", "--column"]


def _failing_query(tmp_path: Path) -> tuple[list[str], list[str]]:
    crm = shutil.copy(CRM, tmp_path / "crm.sqlite")
    args = ["--source-url", f"sqlite:///{crm}", "--query", "SELECT * FROM no_such_table"]
    return args, ["crm.sqlite", "no_such_table"]


def _missing_query_file(tmp_path: Path) -> tuple[list[str], list[str]]:
    args = ["--source-url", "sqlite:///x.db", "--query-file", str(tmp_path / "gone.sql")]
    return args, ["gone.sql"]


def _empty_file(tmp_path: Path) -> tuple[list[str], list[str]]:
    (tmp_path / "empty.csv").write_bytes(b"")
    return [str(tmp_path / "empty.csv")], ["empty.csv", "empty"]


def _undecodable_file(tmp_path: Path) -> tuple[list[str], list[str]]:
    source = tmp_path / "latin1.csv"
    source.write_bytes(f"conversation_id,wrapup_code\n{conv(1)},Ma\xf1ana\n".encode("latin-1"))
    return [str(source)], ["latin1.csv", "line 2", "--encoding"]


@pytest.mark.parametrize(
    "case",
    [
        _missing_file,
        _empty_file,
        _missing_column,
        _undecodable_file,
        _failing_query,
        _missing_query_file,
    ],
)
def test_file_level_errors_exit_2_before_any_request(
    emulator: EmulatorHandle, tmp_path: Path, case: Any
) -> None:
    args, named = case(tmp_path)

    run = invoke(emulator, tmp_path, *args)

    assert run.exit_code == 2
    for text in named:
        assert text in run.stderr
    assert run.stderr.startswith("Error: ")
    assert "Traceback" not in (run.stdout + run.stderr)
    assert emulator.stats()["requests"] == {}
    assert not (tmp_path / "out.csv").exists()


def test_a_header_without_rows_is_a_clean_empty_run(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code"], [])

    run = invoke(emulator, tmp_path, source)

    assert run.exit_code == 0, run.stderr
    assert "no rows" in run.stderr
    assert run.ordered == [] and run.header[: len(DESIGN_COLUMNS)] == list(DESIGN_COLUMNS)
    assert POST_WRAPUP not in emulator.stats()["requests"]


# -- 9. results file safety and the ledger lock --------------------------------------------------


def test_results_csv_neutralises_formula_cells(emulator: EmulatorHandle, tmp_path: Path) -> None:
    hyperlink = '=HYPERLINK("http://evil.example","click")'
    source = write_csv(
        tmp_path / "in.csv",
        ["conversation_id", "wrapup_code", "notes"],
        [
            [conv(1), "=1+1", "@SUM(A1)"],
            [conv(4), "Complaint", hyperlink],
            [conv(5), "Support - Technical", "+1 555 0100"],
            [conv(6), "Callback Scheduled", "-5 minutes"],
            ["=cmd|' /C calc'!A0", "Sales", ""],
        ],
    )

    run = invoke(emulator, tmp_path, source)

    assert run.exit_code == 1, run.stderr
    assert run.statuses() == {
        1: "unknown_code",
        2: "applied",
        3: "applied",
        4: "applied",
        5: "invalid",
    }
    assert run.rows[1]["wrapup_code"] == "'=1+1"
    assert run.rows[1]["notes"] == "'@SUM(A1)"
    assert run.rows[2]["notes"] == "'" + hyperlink
    assert run.rows[3]["notes"] == "'+1 555 0100"
    assert run.rows[4]["notes"] == "'-5 minutes"
    assert run.rows[5]["conversation_id"] == "'=cmd|' /C calc'!A0"
    for row in run.ordered:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@")), row
    # Only the spreadsheet file is neutralised: Genesys got the note as written.
    assert emulator.state.wrapups[comm(4, 3)].notes == hyperlink


def test_a_second_run_on_a_ledger_in_use_is_refused(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    holder = Ledger.open(str(db))
    holder.acquire_lock()
    try:
        refused = invoke(emulator, tmp_path, RECLASSIFY)

        assert refused.exit_code == 5
        assert "in use" in refused.stderr
        assert emulator.stats()["requests"] == {}
        assert len(query(db, "SELECT * FROM lock")) == 1  # still the holder's
        assert query(db, "SELECT * FROM runs") == []
    finally:
        holder.release_lock()
        holder.close()

    after = invoke(emulator, tmp_path, RECLASSIFY)
    check_sample(after, emulator, db)


# -- 10. progress and summary ----------------------------------------------------------------------


def test_without_a_tty_no_progress_bar_and_a_summary_on_stderr(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = invoke(emulator, tmp_path, RECLASSIFY, quiet=False)

    assert run.exit_code == 1
    assert run.stdout == ""
    err = run.stderr
    assert "\r" not in err and "row/s" not in err and "it/s" not in err and "%|" not in err
    assert "read 22 rows" in err
    assert "fine: applied 9, unchanged 1, skipped 1, duplicate 1" in err
    assert "not fine: unknown_code 2, ambiguous_code 1, conflict 2" in err
    assert "not_found 1, not_ended 1, no_agent 2, forbidden 1" in err
    assert re.search(r"\brequests 27\b", err)  # the org, 16 lookups, 1 code page, 9 POSTs
    assert re.search(r"\b429s 0\b", err)
    assert f"results: {tmp_path / 'out.csv'}" in err


def test_quiet_run_prints_only_the_summary(emulator: EmulatorHandle, tmp_path: Path) -> None:
    run = invoke(emulator, tmp_path, RECLASSIFY)

    assert "read 22 rows" not in run.stderr
    assert run.stderr.startswith("run 1: finished; 10 row(s) need attention")


# -- python -m, outside CliRunner ------------------------------------------------------------------


def test_python_dash_m_runs_and_returns_the_exit_code(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | emulator.env()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "wrapup_batch",
            "run",
            str(RECLASSIFY),
            "--ledger",
            str(tmp_path / "ledger.db"),
            "--results",
            str(tmp_path / "out.csv"),
            "--rate-limit",
            "6000",
            "--quiet",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 1, completed.stderr
    assert "run 1: finished; 10 row(s) need attention" in completed.stderr
    ordered, header = read_results(tmp_path / "out.csv")
    run = Run(completed.returncode, completed.stdout, completed.stderr, ordered, header)
    check_sample(run, emulator, tmp_path / "ledger.db")


# ---------------------------------------------------------------------------------------------
# --lookup analytics: many conversations per request, falling back to one GET each


ANALYTICS = "GET /api/v2/analytics/conversations/details"


def test_analytics_lookup_reaches_the_same_statuses_with_one_read_for_all(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = invoke(emulator, tmp_path, RECLASSIFY, "--lookup", "analytics")

    check_sample(run, emulator, tmp_path / "ledger.db")
    stats = emulator.stats(detail=True)
    assert route_total(stats, ANALYTICS) == 1
    check_each_posted_once(emulator, SAMPLE_APPLIED)
    # Analytics shows no end for the active conversation (c09), and knows nothing of the
    # unknown (c99) nor of the hidden division (c11): only those are read one by one.
    assert route_total(stats, GET_CONVERSATION) == 3


def test_analytics_lookup_falls_back_when_analytics_does_not_know_a_conversation(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.config.analytics_hidden = {conv(1), conv(3)}
    source = write_csv(
        tmp_path / "in.csv",
        ["conversation_id", "wrapup_code"],
        [[conv(1), "Sales"], [conv(3), "Sales"], [conv(4), "Sales"], [conv(5), "Sales"]],
    )

    run = invoke(emulator, tmp_path, source, "--lookup", "analytics", "--lookup-batch", "2")

    assert run.exit_code == 0, run.stderr
    assert set(run.statuses().values()) == {"applied"}
    stats = emulator.stats(detail=True)
    assert route_total(stats, ANALYTICS) == 2
    assert route_total(stats, GET_CONVERSATION) == 2
