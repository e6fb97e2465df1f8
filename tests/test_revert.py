"""Reverting a run puts the previous codes back, on the emulator, as a resumable run."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from wrapup_batch.api_settings import ApiSettings
from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorHandle
from wrapup_batch.errors import UsageError
from wrapup_batch.genesys import GenesysClient
from wrapup_batch.ledger import Ledger
from wrapup_batch.runner import RunOptions, RunResult, revert_batch, run_batch
from wrapup_batch.sources import SourceSpec
from wrapup_batch.throttle import Throttle

SALES = "9c000001-0000-4000-8000-000000000000"
COMPLAINT = "9c000005-0000-4000-8000-000000000000"
SPAM = "9c000009-0000-4000-8000-000000000000"
FOLLOW_UP = "9c000011-0000-4000-8000-000000000000"
TECHNICAL = "9c000004-0000-4000-8000-000000000000"


def conv(n: int) -> str:
    return f"c00000{n:02d}-0000-4000-8000-000000000000"


def comm(n: int, participant: int, c: int = 1) -> str:
    return f"e00000{n:02d}-0000-4000-8000-0000000000{participant}{c}"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(str(tmp_path / "ledger.db"))
    yield opened
    opened.close()


def factory(emulator: EmulatorHandle):  # type: ignore[no-untyped-def]
    settings = ApiSettings(emulator.base_url, emulator.client_id, emulator.client_secret, 10.0)
    return lambda throttle: GenesysClient(settings, throttle=throttle)


OPTIONS = RunOptions(rate_limit=60000, on_existing="replace")


def run_csv(
    emulator: EmulatorHandle, ledger: Ledger, path: Path, rows: list[list[str]]
) -> RunResult:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conversation_id", "wrapup_code"])
        writer.writerows(rows)
    return run_batch(ledger, SourceSpec(path=path), OPTIONS, factory(emulator))


def results(ledger: Ledger, run_id: int) -> list[tuple[str, str]]:
    return [(r.conversation_id, r.status) for page in ledger.iter_results(run_id) for r in page]


def wrapups(emulator: EmulatorHandle) -> dict[str, str]:
    found: dict[str, str] = emulator.stats(detail=True)["wrapups"]
    return found


def test_revert_puts_previous_codes_back_and_reports_what_cannot_be(
    emulator: EmulatorHandle, ledger: Ledger, tmp_path: Path
) -> None:
    # c08 starts with Complaint; c01 and the conference c12 (all agents) have no wrap-up.
    first = run_csv(
        emulator, ledger, tmp_path / "in.csv", [[conv(8), "Sales"], [conv(1), "Complaint"]]
    )
    assert first.counts == {"applied": 2}
    assert wrapups(emulator)[comm(8, 3)] == SALES
    emulator.reset_stats()

    reverted = revert_batch(ledger, first.run_id, RunOptions(rate_limit=60000), factory(emulator))

    assert results(ledger, reverted.run_id) == [
        (conv(8), "applied"),
        (conv(1), "not_revertible"),
    ]
    assert reverted.exit_code == 1
    assert wrapups(emulator)[comm(8, 3)] == COMPLAINT
    assert wrapups(emulator)[comm(1, 3)] == COMPLAINT  # could not be cleared: left as it is
    assert emulator.stats(detail=True)["posts_per_communication"] == {comm(8, 3): 1}
    run = ledger.get_run(reverted.run_id)
    assert run is not None and (run.kind, run.source) == ("revert", f"revert of run {first.run_id}")

    # The revert is a run like any other: a rerun sends nothing, and it can be reverted.
    emulator.reset_stats()
    again = revert_batch(ledger, first.run_id, RunOptions(rate_limit=60000), factory(emulator))
    assert results(ledger, again.run_id) == [(conv(8), "applied"), (conv(1), "not_revertible")]
    assert emulator.stats(detail=True)["posts_per_communication"] == {}
    undo = revert_batch(ledger, reverted.run_id, RunOptions(rate_limit=60000), factory(emulator))
    assert results(ledger, undo.run_id) == [(conv(8), "applied")]
    assert wrapups(emulator)[comm(8, 3)] == SALES


def test_revert_leaves_alone_a_code_changed_since(
    emulator: EmulatorHandle, ledger: Ledger, tmp_path: Path
) -> None:
    first = run_csv(emulator, ledger, tmp_path / "in.csv", [[conv(8), "Sales"]])
    assert first.counts == {"applied": 1}
    emulator.state.assign(comm(8, 3), SPAM)  # somebody reclassified it after the run
    emulator.reset_stats()

    reverted = revert_batch(ledger, first.run_id, RunOptions(rate_limit=60000), factory(emulator))

    [row] = [r for page in ledger.iter_results(reverted.run_id) for r in page]
    assert row.status == "skipped"
    assert "changed since" in row.message and "Spam" in row.message
    assert wrapups(emulator)[comm(8, 3)] == SPAM
    assert emulator.stats(detail=True)["posts_per_communication"] == {}


def test_revert_of_an_all_agents_run_targets_each_communication(
    emulator: EmulatorHandle, ledger: Ledger, tmp_path: Path
) -> None:
    emulator.state.assign(comm(12, 3), TECHNICAL)
    emulator.state.assign(comm(12, 4), COMPLAINT)
    path = tmp_path / "in.csv"
    path.write_text(f"conversation_id,wrapup_code\n{conv(12)},Follow-up Required\n", "utf-8")
    options = RunOptions(rate_limit=60000, on_existing="replace", participant="all-agents")
    first = run_batch(ledger, SourceSpec(path=path), options, factory(emulator))
    assert first.counts == {"applied": 1}
    assert (wrapups(emulator)[comm(12, 3)], wrapups(emulator)[comm(12, 4)]) == (FOLLOW_UP,) * 2

    reverted = revert_batch(ledger, first.run_id, RunOptions(rate_limit=60000), factory(emulator))

    assert results(ledger, reverted.run_id) == [(conv(12), "applied"), (conv(12), "applied")]
    assert (wrapups(emulator)[comm(12, 3)], wrapups(emulator)[comm(12, 4)]) == (
        TECHNICAL,
        COMPLAINT,
    )


def test_revert_refuses_a_dry_run_and_an_unknown_run(
    emulator: EmulatorHandle, ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"conversation_id,wrapup_code\n{conv(1)},Sales\n", "utf-8")
    dry = run_batch(
        ledger, SourceSpec(path=path), RunOptions(rate_limit=60000, dry_run=True), factory(emulator)
    )
    with pytest.raises(UsageError, match="was a dry run"):
        revert_batch(ledger, dry.run_id, OPTIONS, factory(emulator))
    with pytest.raises(UsageError, match="has no run 99"):
        revert_batch(ledger, 99, OPTIONS, factory(emulator))


def test_client_repr_hides_the_secret() -> None:
    client = GenesysClient(ApiSettings("http://127.0.0.1:1", "id", "secret"), throttle=Throttle(60))
    assert "secret" not in repr(client) and "secret" not in repr(client.settings)


def test_revert_through_the_cli_dry_run_first(
    emulator: EmulatorHandle, ledger: Ledger, tmp_path: Path
) -> None:
    first = run_csv(
        emulator, ledger, tmp_path / "in.csv", [[conv(8), "Sales"], [conv(1), "Complaint"]]
    )
    env = {
        "GENESYSCLOUD_API_HOST": emulator.base_url,
        "GENESYSCLOUD_OAUTHCLIENT_ID": emulator.client_id,
        "GENESYSCLOUD_OAUTHCLIENT_SECRET": emulator.client_secret,
    }
    base = ["revert", str(first.run_id), "--ledger", str(tmp_path / "ledger.db"), "--quiet"]
    base += ["--rate-limit", "60000"]
    emulator.reset_stats()

    dry = CliRunner().invoke(
        main, [*base, "--dry-run", "--results", str(tmp_path / "d.csv")], env=env
    )

    assert dry.exit_code == 1, dry.output
    assert [r["status"] for r in _read(tmp_path / "d.csv")] == ["would_apply", "not_revertible"]
    assert emulator.stats(detail=True)["posts_per_communication"] == {}

    real = CliRunner().invoke(main, [*base, "--results", str(tmp_path / "r.csv")], env=env)

    assert real.exit_code == 1, real.output
    rows = _read(tmp_path / "r.csv")
    assert [r["status"] for r in rows] == ["applied", "not_revertible"]
    assert rows[0]["previous_code"] == "Sales"
    assert "had no wrap-up before run" in rows[1]["message"]
    assert wrapups(emulator)[comm(8, 3)] == COMPLAINT

    missing = CliRunner().invoke(
        main, ["revert", "42", "--ledger", str(tmp_path / "ledger.db")], env=env
    )
    assert missing.exit_code == 2
    assert "has no run 42" in missing.stderr


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))
