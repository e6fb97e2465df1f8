"""What a real org does (issue 9), through `wrapup-batch run` against the emulator:

1. a wrap-up is sent with the `endTime` that keeps the agent's after-call work where it was;
2. an agent still in after-call work is not raced (`not_ended`, retried by the next run);
3. analytics lags: a conversation that ended recently is read through the Conversations API;
4. every wrap-up media, every non-agent purpose, every system wrap-up code.

The emulator's own state (wrap-ups, analytics segments, request counts) is the witness.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import sqlite3
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_run_cli import (
    GET_CONVERSATION,
    POST_WRAPUP,
    RECLASSIFY,
    SAMPLE_COUNTS,
    api_requests,
    code,
    comm,
    conv,
    env_for,
    invoke,
    part,
    post_counts,
    query,
    route_total,
    write_csv,
)

from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, generated_conversation_id

SALES, COMPLAINT = code(1), code(5)
ANALYTICS = "GET /api/v2/analytics/conversations/details"
HEADER = ["conversation_id", "wrapup_code"]


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0)


def analytics_of(emulator: EmulatorHandle, ids: list[str]) -> dict[str, Any]:
    """The analytics multi-get, read straight from the emulator (the admin client's token)."""
    token_request = urllib.request.Request(
        f"{emulator.base_url}/oauth/token",
        data=b"grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    admin = emulator.client("wrapup-batch-admin")
    basic = base64.b64encode(f"{admin.client_id}:{admin.client_secret}".encode()).decode()
    token_request.add_header("Authorization", f"Basic {basic}")
    with urllib.request.urlopen(token_request, timeout=10) as response:
        token = json.load(response)["access_token"]
    found: dict[str, Any] = {}
    for start in range(0, len(ids), 100):
        request = urllib.request.Request(
            f"{emulator.base_url}/api/v2/analytics/conversations/details"
            f"?id={','.join(ids[start : start + 100])}",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            for conversation in json.load(response)["conversations"]:
                found[conversation["conversationId"]] = conversation
    return found


def after_call_work_ends(emulator: EmulatorHandle, ids: list[str]) -> dict[str, datetime]:
    """Per agent communication, when analytics says its after-call work ended: the end of its
    wrapup segment, else (no after-call work) the end of its last segment."""
    ends: dict[str, datetime] = {}
    for conversation in analytics_of(emulator, ids).values():
        for participant in conversation["participants"]:
            if participant["purpose"] not in ("agent", "user"):
                continue
            for session in participant["sessions"]:
                segments = session["segments"]
                wrapups = [s for s in segments if s["segmentType"] == "wrapup"]
                last = wrapups[-1] if wrapups else segments[-1]
                if "segmentEnd" in last:
                    ends[session["sessionId"]] = datetime.fromisoformat(last["segmentEnd"])
    return ends


def sample_ids() -> list[str]:
    with RECLASSIFY.open(encoding="utf-8") as handle:
        return sorted({row["conversation_id"] for row in csv.DictReader(handle)})


# -- 1. the end time ---------------------------------------------------------------------------


def test_a_backfill_of_the_sample_keeps_every_agents_after_call_work_where_it_was(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    ids = sample_ids()
    before = after_call_work_ends(emulator, ids)

    run = invoke(emulator, tmp_path, RECLASSIFY)

    assert run.exit_code == 1, run.stderr
    applied = [r for r in run.ordered if r["status"] == "applied"]
    assert len(applied) == SAMPLE_COUNTS["applied"]
    after = after_call_work_ends(emulator, ids)
    for row in applied:
        communication = row["communication_id"]
        # no touched conversation's wrap-up segment ends later than its after-call work did
        assert after[communication] <= before[communication], row
        assert after[communication] == before[communication], row
        sent = datetime.fromisoformat(row["wrapup_end_time"])
        assert sent == before[communication], row
    # c0000001: 45 s of after-call work (endAcwTime), not thirteen days
    first = run.rows[1]
    assert first["wrapup_end_time"] == "2026-11-20T08:08:30.300Z"
    assert emulator.state.wrapups[comm(1, 3)].end_time == "2026-11-20T08:08:30.300Z"
    # c0000002: no after-call work recorded: the wrap-up ends when the call did
    assert run.rows[2]["wrapup_end_time"] == "2026-11-20T09:09:40.740Z"
    ledger = query(
        tmp_path / "ledger.db",
        "SELECT wrapup_end_time FROM items WHERE conversation_id = ?",
        conv(1),
    )
    assert ledger == [{"wrapup_end_time": "2026-11-20T08:08:30.300Z"}]
    not_applied = [r for r in run.ordered if r["status"] not in ("applied", "duplicate")]
    assert all(r["wrapup_end_time"] == "" for r in not_applied)

    # replacing an agent's code keeps that wrap-up's own end (c0000008: 14:08:45.300)
    replaced = invoke(emulator, tmp_path, RECLASSIFY, "--on-existing", "replace")
    assert replaced.rows[8]["status"] == "applied"
    assert replaced.rows[8]["wrapup_end_time"] == "2026-11-20T14:08:45.300Z"
    assert after_call_work_ends(emulator, [conv(8)])[comm(8, 3)] == before[comm(8, 3)]


# -- 2. after-call work still going on ------------------------------------------------------------


@pytest.mark.parametrize("lookup", ["conversations", "analytics"])
def test_an_agent_still_in_after_call_work_is_not_raced_and_the_next_run_retries(
    emulator: EmulatorHandle, tmp_path: Path, lookup: str
) -> None:
    source = write_csv(
        tmp_path / "in.csv", HEADER, [[conv(20), "Sales"], [conv(21), "Support - Billing"]]
    )
    args = (source, "--lookup", lookup)

    run = invoke(emulator, tmp_path, *args)

    assert run.exit_code == 1, run.stderr
    for number, media, who in ((1, "calls", "Alice Agent"), (2, "emails", "Carol Agent")):
        row = run.rows[number]
        assert row["status"] == "not_ended"
        assert f"the agent {who}" in row["message"]
        assert "still in after-call work" in row["message"]
        assert f"{media} communication" in row["message"]
        assert "next run tries again" in row["message"]
    assert post_counts(emulator.stats()) == {}

    # the next run reads them again: still wrapping up, still not raced
    emulator.reset_stats()
    again = invoke(emulator, tmp_path, *args)
    assert again.statuses() == {1: "not_ended", 2: "not_ended"}
    assert route_total(emulator.stats(), GET_CONVERSATION) == 2
    assert post_counts(emulator.stats()) == {}

    # the agents finish their after-call work without choosing a code: the run after that
    # applies, with the end of that after-call work as the wrap-up's end
    finished = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}.000Z"
    emulator.state.end_after_call_work(comm(20, 3), finished)
    emulator.state.end_after_call_work(comm(21, 3), finished)
    done = invoke(emulator, tmp_path, *args)
    assert done.statuses() == {1: "applied", 2: "applied"}, done.ordered
    assert done.rows[1]["wrapup_end_time"] == finished
    assert emulator.state.wrapups[comm(20, 3)].code == SALES
    assert emulator.state.wrapups[comm(21, 3)].end_time == finished


# -- 3. analytics lags --------------------------------------------------------------------------

OLD_ROWS = 300


def test_with_analytics_lagging_a_code_set_a_minute_ago_is_skipped_not_overwritten(
    make_emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    emulator = make_emulator(
        EmulatorConfig(rate_limit=0, generate=OLD_ROWS, analytics_wrapup_lag_s=600)
    )
    rows = [[generated_conversation_id(i), "Sales"] for i in range(OLD_ROWS)]
    rows.append([conv(31), "Sales"])  # ended a minute ago; Bob chose Complaint 30 s ago
    source = write_csv(tmp_path / "in.csv", HEADER, rows)
    # analytics does not show Bob's code yet: "no wrap-up" there is not to be trusted
    segments = analytics_of(emulator, [conv(31)])[conv(31)]["participants"][2]["sessions"][0]
    assert not any(s.get("wrapUpCode") for s in segments["segments"])
    emulator.reset_stats()

    run = invoke(emulator, tmp_path, source, "--lookup", "analytics")

    assert run.exit_code == 0, run.stderr
    recent = run.rows[OLD_ROWS + 1]
    assert (recent["status"], recent["previous_code"]) == ("skipped", "Complaint"), recent
    assert emulator.state.wrapups[comm(31, 3)].code == COMPLAINT  # not overwritten
    assert all(run.rows[i + 1]["status"] == "applied" for i in range(OLD_ROWS))
    stats = emulator.stats()
    assert route_total(stats, GET_CONVERSATION) == 1  # only the recent one
    assert route_total(stats, ANALYTICS) == math.ceil((OLD_ROWS + 1) / 100)
    lookups_and_posts = route_total(stats, ANALYTICS) + route_total(stats, GET_CONVERSATION)
    lookups_and_posts += route_total(stats, POST_WRAPUP)
    assert lookups_and_posts / OLD_ROWS <= 1.05  # requests per old row stay about 1

    # what --analytics-settle prevents: trusting analytics at once overwrites Bob's code
    again = invoke(
        emulator, tmp_path, source, "--lookup", "analytics", "--analytics-settle", "0",
        ledger="other-ledger.db",
    )  # fmt: skip
    assert again.rows[OLD_ROWS + 1]["status"] == "applied"
    assert emulator.state.wrapups[comm(31, 3)].code == SALES


def test_analytics_settle_is_checked_like_any_duration(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", HEADER, [[conv(1), "Sales"]])
    run = invoke(emulator, tmp_path, source, "--lookup", "analytics", "--analytics-settle", "x")
    assert run.exit_code == 2
    assert "--analytics-settle" in run.stderr
    assert api_requests(emulator.stats()) == 0


# -- 4. every media, purpose and system code ----------------------------------------------------

MEDIA_ROWS = {
    # conversation number: (media path, code name)
    1: ("calls", "Sales"),
    4: ("emails", "Complaint"),
    5: ("messages", "Sales"),
    6: ("callbacks", "Callback Scheduled"),
    22: ("socials", "Sales"),
    23: ("videos", "Support - Billing"),
    24: ("cobrowsesessions", "Support - Technical"),
    25: ("screenshares", "Support - Billing"),
}


@pytest.mark.parametrize("lookup", ["conversations", "analytics"])
def test_every_wrapup_media_is_applied_on_its_own_path(
    emulator: EmulatorHandle, tmp_path: Path, lookup: str
) -> None:
    numbers = list(MEDIA_ROWS)
    source = write_csv(tmp_path / "in.csv", HEADER, [[conv(n), MEDIA_ROWS[n][1]] for n in numbers])

    run = invoke(emulator, tmp_path, source, "--lookup", lookup)

    assert run.exit_code == 0, run.stderr
    items = {i["conversation_id"]: i for i in query(tmp_path / "ledger.db", "SELECT * FROM items")}
    codes = {c.name: c.id for c in emulator.state.seed.codes}
    for row, n in enumerate(numbers, start=1):
        media, name = MEDIA_ROWS[n]
        assert run.rows[row]["status"] == "applied", run.rows[row]
        assert run.rows[row]["communication_id"] == comm(n, 3)
        assert items[conv(n)]["media"] == media
        assert emulator.state.wrapups[comm(n, 3)].code == codes[name]
    assert emulator.stats()["posts_per_communication"] == {comm(n, 3): 1 for n in numbers}
    if lookup == "analytics":
        # the social expression's analytics media type maps to no wrap-up path: read through
        # the Conversations API; the others come from the one analytics request
        assert route_total(emulator.stats(), GET_CONVERSATION) == 1


SYSTEM_ROWS = {
    # conversation number: (system code it has, status by default, status with replace)
    26: ("ININ-WRAP-UP-TIMEOUT", "applied", "applied"),
    27: ("ININ-WRAP-UP-SKIPPED", "applied", "applied"),
    28: ("ININ-WRAP-UP-DELETED", "skipped", "applied"),
    29: ("ININ-OUTBOUND-PREVIEW-SKIPPED", "skipped", "applied"),
}


@pytest.mark.parametrize("on_existing", ["skip", "replace"])
@pytest.mark.parametrize("lookup", ["conversations", "analytics"])
def test_system_wrapup_codes_are_applied_over_or_skipped_by_the_rule(
    emulator: EmulatorHandle, tmp_path: Path, on_existing: str, lookup: str
) -> None:
    numbers = list(SYSTEM_ROWS)
    source = write_csv(tmp_path / "in.csv", HEADER, [[conv(n), "Sales"] for n in numbers])

    run = invoke(emulator, tmp_path, source, "--on-existing", on_existing, "--lookup", lookup)

    for row, n in enumerate(numbers, start=1):
        system_code, by_default, with_replace = SYSTEM_ROWS[n]
        expected = by_default if on_existing == "skip" else with_replace
        result = run.rows[row]
        assert (result["status"], result["previous_code"]) == (expected, system_code), result
        now = emulator.state.wrapups[comm(n, 3)].code
        assert now == (SALES if expected == "applied" else system_code)
        if expected == "skipped":
            assert system_code in result["message"]
    # the timed-out after-call work keeps its end
    assert run.rows[1]["wrapup_end_time"] == "2026-11-21T12:09:00.000Z"


def test_a_participant_of_a_non_agent_purpose_with_a_user_id_is_not_wrapped_up(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """c0000030: Erin's 'station' participant ended after her agent participant."""
    source = write_csv(tmp_path / "in.csv", HEADER, [[conv(30), "Sales"]])
    run = invoke(emulator, tmp_path, source)
    assert run.exit_code == 0, run.stderr
    assert (run.rows[1]["participant_id"], run.rows[1]["communication_id"]) == (
        part(30, 3),
        comm(30, 3),
    )
    assert comm(30, 4) not in emulator.state.wrapups
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT status FROM items").fetchall() == [("applied",)]
    db.close()


def test_a_system_code_that_was_applied_over_is_not_revertible(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", HEADER, [[conv(26), "Sales"], [conv(27), "Sales"]])
    run = invoke(emulator, tmp_path, source)
    assert run.statuses() == {1: "applied", 2: "applied"}
    emulator.reset_stats()

    reverted = CliRunner().invoke(
        main,
        ["revert", "1", "--ledger", str(tmp_path / "ledger.db"), "--quiet"],
        env=dict(env_for(emulator)),
        catch_exceptions=False,
    )

    assert reverted.exit_code == 1, reverted.stderr
    rows = query(
        tmp_path / "ledger.db",
        "SELECT status, message FROM run_rows WHERE run_id = 2 ORDER BY row",
    )
    assert [r["status"] for r in rows] == ["not_revertible", "not_revertible"]
    assert "ININ-WRAP-UP-TIMEOUT" in rows[0]["message"]
    assert post_counts(emulator.stats()) == {}
    assert emulator.state.wrapups[comm(26, 3)].code == SALES


def test_lookup_compare_says_which_conversations_analytics_cannot_describe(
    emulator: EmulatorHandle,
) -> None:
    """c0000022 is a social expression (no analytics media type), c0000020 an agent still in
    after-call work: --lookup analytics reads both through the Conversations API."""
    ids = ",".join([conv(1), conv(20), conv(22)])
    result = CliRunner().invoke(
        main, ["check", "--lookup-compare", ids], env=dict(env_for(emulator))
    )
    assert result.exit_code == 0, result.stdout
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines()}
    assert "agree" in lines[f"✓ lookup-compare {conv(1)}"]
    for n in (20, 22):
        assert "through the Conversations API" in lines[f"✓ lookup-compare {conv(n)}"]
