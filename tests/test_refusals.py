"""When the org refuses: the refusal breaker, `run --limit`, through the CLI on the emulator.

The emulator's `refuse_wrapups` (every wrap-up POST answers 400 with a code) and
`queue_codes_only` (a code outside the participant's queue list is refused) reproduce an org
that refuses; the runs are judged by their exit codes, statuses, messages and what the
emulator received.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from test_run_cli import (
    RECLASSIFY,
    SAMPLE_APPLIED,
    SAMPLE_EXPECTED,
    Run,
    check_each_posted_once,
    check_row,
    check_sample,
    comm,
    conv,
    invoke,
    items_by_conversation,
    post_counts,
    query,
    write_csv,
)

from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, generated_conversation_id
from wrapup_batch.jobs import load_job

REFUSAL = "wrapup.not.allowed.for.client"
NOT_IN_QUEUE = "conversations.error.wrapup.code.not.in.queue"
GENERATED = 30
CONCURRENCY = 4


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # Generated conversations: an agent of the Support queue each, no wrap-up yet.
    return EmulatorConfig(rate_limit=0, generate=GENERATED)


def generated_csv(tmp_path: Path, codes: list[str], name: str = "in.csv") -> Path:
    rows = [[generated_conversation_id(i), code] for i, code in enumerate(codes)]
    return write_csv(tmp_path / name, ["conversation_id", "wrapup_code"], rows)


def counts(run: Run) -> Counter[str]:
    return Counter(run.statuses().values())


def check_breaker_message(run: Run, limit: int, status: int, code: str, message: str) -> None:
    """One message quoting Genesys's status, code, message and contextId, and what to try."""
    found = re.search(
        rf"aborted: the first {limit} wrap-up POSTs were all refused alike and none was "
        rf'accepted: Genesys answered {status} {re.escape(code)}: "([^"]*)" \(contextId '
        r"([0-9a-f-]{36})\)",
        run.stderr,
    )
    assert found, run.stderr
    assert message in found.group(1)
    context_ids = {r["context_id"] for r in run.ordered if r["status"] == "rejected"}
    assert found.group(2) in context_ids  # the contextId of one of the refused POSTs
    for advice in (
        "rows not tried stay pending",
        "conversation:participant:wrapup",
        "GENESYSCLOUD_ACCESS_TOKEN",
        "support case",
        "--stop-after-refusals 0",
    ):
        assert advice in run.stderr, advice
    assert run.stderr.count("were all refused alike") == 1  # said once, not also as a warning


# -- the breaker ---------------------------------------------------------------------------------


def test_an_org_that_refuses_every_wrapup_stops_the_run_after_ten_and_a_rerun_resumes(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.config.refuse_wrapups = REFUSAL
    source = generated_csv(tmp_path, ["Sales"] * GENERATED)

    run = invoke(emulator, tmp_path, source, "--concurrency", str(CONCURRENCY))

    assert run.exit_code == 3, run.stderr
    check_breaker_message(run, 10, 400, REFUSAL, "cannot be set by this client")
    sent = emulator.stats()["post_attempts"]
    # the tenth refusal stops it: at most the POSTs already in flight follow
    assert 10 <= sent <= 10 + CONCURRENCY - 1
    assert post_counts(emulator.stats()) == {"400": sent}
    assert counts(run) == {"rejected": sent, "pending": GENERATED - sent}
    for row in run.ordered:
        if row["status"] == "rejected":
            assert (row["http_status"], row["error_code"]) == ("400", REFUSAL)
            assert "cannot be set by this client" in row["message"]
    assert query(tmp_path / "ledger.db", "SELECT exit_code FROM runs") == [{"exit_code": 3}]

    # The org lets them through now: the rerun sends the rejected and the pending rows.
    emulator.config.refuse_wrapups = ""
    emulator.reset_stats()
    rerun = invoke(emulator, tmp_path, source)
    assert rerun.exit_code == 0, rerun.stderr
    assert counts(rerun) == {"applied": GENERATED}
    assert emulator.stats()["posts_accepted"] == GENERATED


def test_stop_after_refusals_sets_how_many_and_zero_switches_it_off(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.config.refuse_wrapups = REFUSAL
    source = generated_csv(tmp_path, ["Sales"] * 12)

    three = invoke(emulator, tmp_path, source, "--stop-after-refusals", "3", "--concurrency", "1")
    assert three.exit_code == 3, three.stderr
    check_breaker_message(three, 3, 400, REFUSAL, "cannot be set by this client")
    assert counts(three) == {"rejected": 3, "pending": 9}  # one at a time: exactly three

    emulator.reset_stats()
    off = invoke(emulator, tmp_path, source, "--stop-after-refusals", "0", ledger="off.db")
    assert off.exit_code == 1, off.stderr
    assert counts(off) == {"rejected": 12}
    assert emulator.stats()["post_attempts"] == 12
    assert "aborted" not in off.stderr


def test_the_sample_on_an_org_that_refuses_with_fewer_posts_than_the_limit(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    # The sample has 9 rows to POST: below the default 10 the breaker never trips; every
    # refused row is recorded with Genesys's answer.
    emulator.config.refuse_wrapups = REFUSAL

    run = invoke(emulator, tmp_path, RECLASSIFY)

    assert run.exit_code == 1, run.stderr
    assert "aborted" not in run.stderr
    for number, expect in SAMPLE_EXPECTED.items():
        row = run.rows[number]
        if expect.status == "applied":
            assert (row["status"], row["error_code"]) == ("rejected", REFUSAL)
        else:
            check_row(row, expect)
    assert post_counts(emulator.stats()) == {"400": 9}


def test_refusals_with_different_codes_do_not_stop_the_run(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two kinds of refusal, alternating: about the rows, not the org.
    emulator.config.queue_codes_only = True
    visible_code = emulator.state.visible_code
    billing = "9c000003-0000-4000-8000-000000000000"
    monkeypatch.setattr(
        emulator.state,
        "visible_code",
        lambda client, code_id: None if code_id == billing else visible_code(client, code_id),
    )
    source = generated_csv(tmp_path, ["Sales", "Support - Billing"] * 8)

    run = invoke(emulator, tmp_path, source, "--concurrency", "1")

    assert run.exit_code == 1, run.stderr
    assert counts(run) == {"rejected": 16}
    assert Counter(r["error_code"] for r in run.ordered) == {
        NOT_IN_QUEUE: 8,
        "conversations.error.wrapup.code.not.found": 8,
    }


def test_one_accepted_wrapup_first_means_later_refusals_are_the_rows_own(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.config.queue_codes_only = True
    # Generated agents are in the Support queue: the first code is one of its codes, the
    # next fifteen ("Sales") are not.
    source = generated_csv(tmp_path, ["Support - Technical"] + ["Sales"] * 15)

    run = invoke(emulator, tmp_path, source, "--concurrency", "1")

    assert run.exit_code == 1, run.stderr
    assert counts(run) == {"applied": 1, "rejected": 15}
    assert {r["error_code"] for r in run.ordered if r["status"] == "rejected"} == {NOT_IN_QUEUE}
    assert "aborted" not in run.stderr


# -- --queue-codes-only on the sample, and a queue that refuses them all ------------------------


def test_the_sample_under_queue_codes_only_refuses_the_code_outside_the_queue(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.config.queue_codes_only = True

    run = invoke(emulator, tmp_path, RECLASSIFY)

    assert run.exit_code == 1, run.stderr
    # Row 5 asks 'Support - Technical' for a web message of the Sales queue.
    row = run.rows[5]
    assert (row["status"], row["http_status"], row["error_code"]) == (
        "rejected",
        "400",
        NOT_IN_QUEUE,
    )
    assert "is not one of the wrap-up codes" in row["message"] and row["context_id"]
    for number, expect in SAMPLE_EXPECTED.items():
        if number != 5:
            check_row(run.rows[number], expect)
    applied = {c: code for c, code in SAMPLE_APPLIED.items() if c != comm(5, 3)}
    check_each_posted_once(emulator, applied)
    assert items_by_conversation(tmp_path / "ledger.db")[conv(5)]["status"] == "rejected"


def test_a_queue_whose_list_refuses_every_code_asked_stops_the_run(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.config.queue_codes_only = True
    source = generated_csv(tmp_path, ["Sales"] * GENERATED)  # not a Support queue code

    run = invoke(emulator, tmp_path, source)

    assert run.exit_code == 3, run.stderr
    check_breaker_message(run, 10, 400, NOT_IN_QUEUE, "is not one of the wrap-up codes")
    sent = emulator.stats()["post_attempts"]
    assert counts(run) == {"rejected": sent, "pending": GENERATED - sent}


# -- run --limit ---------------------------------------------------------------------------------


def test_limit_runs_only_the_first_rows_and_the_full_run_then_finishes_the_rest(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    first = invoke(emulator, tmp_path, RECLASSIFY, "--limit", "5")

    assert first.exit_code == 0, first.stderr
    assert list(first.rows) == [1, 2, 3, 4, 5]
    for number in range(1, 6):
        check_row(first.rows[number], SAMPLE_EXPECTED[number])
    assert post_counts(emulator.stats()) == {"202": 5}
    runs = query(tmp_path / "ledger.db", "SELECT source, options FROM runs")
    assert runs[0]["source"] == f"{RECLASSIFY}, first 5 row(s)"
    assert '"limit": 5' in runs[0]["options"]

    rest = invoke(emulator, tmp_path, RECLASSIFY)
    check_sample(rest, emulator, tmp_path / "ledger.db")
    check_each_posted_once(emulator, SAMPLE_APPLIED)  # rows 1-5 were not sent again


def test_limit_larger_than_the_input_takes_it_all_and_zero_is_refused(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = invoke(emulator, tmp_path, RECLASSIFY, "--limit", "1000")
    check_sample(run, emulator, tmp_path / "ledger.db")

    zero = invoke(emulator, tmp_path, RECLASSIFY, "--limit", "0", ledger="zero.db")
    assert zero.exit_code == 2
    assert "--limit" in zero.stderr


def test_limit_and_stop_after_refusals_from_a_job_file(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.config.refuse_wrapups = REFUSAL
    source = generated_csv(tmp_path, ["Sales"] * 20)
    job = tmp_path / "job.toml"
    job.write_text(
        f'input = "{source.name}"\nlimit = 8\nstop_after_refusals = 2\nconcurrency = 1\n',
        encoding="utf-8",
    )
    assert load_job(job).params["limit"] == 8

    run = invoke(emulator, tmp_path, "--job", job)

    assert run.exit_code == 3, run.stderr
    assert list(run.rows) == list(range(1, 9))  # the job's limit
    check_breaker_message(run, 2, 400, REFUSAL, "cannot be set by this client")
    assert counts(run) == {"rejected": 2, "pending": 6}

    job.write_text(f'input = "{source.name}"\nstop_after_refusals = -1\n', encoding="utf-8")
    emulator.reset_stats()
    bad = invoke(emulator, tmp_path, "--job", job, ledger="bad.db")
    assert bad.exit_code == 2
    assert "'stop_after_refusals' must be an integer from 0" in bad.stderr
    assert emulator.stats()["requests"] == {}
