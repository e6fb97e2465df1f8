"""A ledger belongs to one org, and `--sandbox` runs keep a ledger of their own (the CLI).

Two emulators with different org ids are two orgs. The ledger is read with sqlite3; what
each org received is read from its emulator's stats.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_ledger import OUTCOME_COLUMNS
from test_run_cli import (
    POST_WRAPUP,
    RECLASSIFY,
    SAMPLE_APPLIED,
    TOKEN,
    check_each_posted_once,
    check_sample,
    client_env,
    env_for,
    invoke,
    query,
)

from wrapup_batch.cli import SANDBOX_LEDGER, main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle
from wrapup_batch.emulator.config import DEFAULT_ORG_ID, DEFAULT_ORG_NAME
from wrapup_batch.ledger import DEFAULT_LEDGER, SCHEMA_VERSION

OTHER_ORG = "0e000000-0000-4000-8000-0000000000b2"
ORG_ME = "GET /api/v2/organizations/me"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0)


def org_meta(db: Path) -> dict[str, str]:
    rows = query(db, "SELECT key, value FROM meta WHERE key LIKE 'org_%'")
    return {r["key"]: r["value"] for r in rows}


def snapshot(db: Path) -> tuple[list[object], ...]:
    """Everything a run could change in a ledger."""
    with sqlite3.connect(db) as conn:
        return tuple(
            conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("meta", "runs", "items", "run_rows")
        )


def test_the_issue_scenario_sandbox_then_an_org_in_one_folder(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `run calls.csv --sandbox`, then `run calls.csv` against an org, both with the default
    # ledger: the sandbox run has its own, and the org gets its wrap-ups.
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    no_org = {name: None for name in env_for(emulator)}

    sandbox = runner.invoke(main, ["run", str(RECLASSIFY), "--sandbox", "-q"], env=no_org)
    assert sandbox.exit_code == 1, sandbox.stderr
    assert (tmp_path / SANDBOX_LEDGER).exists() and not (tmp_path / DEFAULT_LEDGER).exists()
    assert org_meta(tmp_path / SANDBOX_LEDGER)["org_id"] == DEFAULT_ORG_ID

    real = runner.invoke(
        main, ["run", str(RECLASSIFY), "-q", "--results", "real.csv"], env=env_for(emulator)
    )
    assert real.exit_code == 1, real.stderr
    check_each_posted_once(emulator, SAMPLE_APPLIED)
    assert org_meta(tmp_path / DEFAULT_LEDGER)["org_api_host"] == emulator.base_url


def test_a_run_against_another_org_on_the_same_ledger_is_refused_and_changes_nothing(
    emulator: EmulatorHandle, make_emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    other = make_emulator(EmulatorConfig(rate_limit=0, org_id=OTHER_ORG, org_name="Acme Prod"))
    first = invoke(emulator, tmp_path, RECLASSIFY)
    check_sample(first, emulator, tmp_path / "ledger.db")
    before = snapshot(tmp_path / "ledger.db")

    refused = invoke(other, tmp_path, RECLASSIFY, results="other.csv")

    assert refused.exit_code == 2, refused.stderr
    message = refused.stderr
    assert message.startswith(f"Error: ledger {tmp_path / 'ledger.db'} belongs to org ")
    for part in (
        f"'{DEFAULT_ORG_NAME}' (id {DEFAULT_ORG_ID})",
        f"first used through {emulator.base_url} as OAuth client wrapup-batch-demo",
        f"this run reaches org 'Acme Prod' (id {OTHER_ORG}) through {other.base_url}",
        "nothing was sent and the ledger is unchanged",
        "--ledger acme-prod-ledger.db",
    ):
        assert part in message, part
    assert message.count("Error:") == 1 and "Traceback" not in message
    assert not (tmp_path / "other.csv").exists()
    # the other org was asked who it is, and nothing else
    assert other.stats()["requests"] == {TOKEN: {"200": 1}, ORG_ME: {"200": 1}}
    assert snapshot(tmp_path / "ledger.db") == before

    # what the message says to do works
    own = invoke(other, tmp_path, RECLASSIFY, ledger="acme-prod-ledger.db")
    check_sample(own, other, tmp_path / "acme-prod-ledger.db")
    assert org_meta(tmp_path / "acme-prod-ledger.db")["org_name"] == "Acme Prod"


def test_a_rerun_with_nothing_to_do_on_another_org_is_refused_too(
    emulator: EmulatorHandle, make_emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    # The case that reported every row fine: all applied on one org, nothing left to send.
    rows = tmp_path / "in.csv"
    rows.write_text(
        "conversation_id,wrapup_code\nc0000001-0000-4000-8000-000000000000,Sales\n",
        encoding="utf-8",
    )
    assert invoke(emulator, tmp_path, rows).exit_code == 0
    other = make_emulator(EmulatorConfig(rate_limit=0, org_id=OTHER_ORG, org_name="Acme"))

    refused = invoke(other, tmp_path, rows)

    assert refused.exit_code == 2, refused.stderr
    assert "belongs to org" in refused.stderr and "Acme" in refused.stderr
    assert POST_WRAPUP not in other.stats()["requests"]
    assert query(tmp_path / "ledger.db", "SELECT id FROM runs") == [{"id": 1}]


def test_the_same_org_through_another_client_is_accepted_and_the_same_client_asks_nothing(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    first = invoke(emulator, tmp_path, RECLASSIFY, "--dry-run")
    assert first.exit_code == 1
    assert emulator.stats()["requests"][ORG_ME] == {"200": 1}
    recorded = org_meta(tmp_path / "ledger.db")
    assert recorded["org_principal"] == "OAuth client wrapup-batch-demo"

    emulator.reset_stats()
    admin = invoke(emulator, tmp_path, RECLASSIFY, env=client_env(emulator, "wrapup-batch-admin"))
    assert admin.exit_code == 1, admin.stderr
    assert emulator.stats()["requests"][ORG_ME] == {"200": 1}  # another client: it asks
    assert org_meta(tmp_path / "ledger.db") == recorded  # the first use stays recorded

    emulator.reset_stats()
    again = invoke(emulator, tmp_path, RECLASSIFY)
    assert again.exit_code == 1
    assert ORG_ME not in emulator.stats()["requests"]  # the recorded host and client


def test_an_older_ledger_is_migrated_and_bound_with_a_warning(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    invoke(emulator, tmp_path, RECLASSIFY, "--dry-run")
    with sqlite3.connect(db) as conn:  # as the version before (ledger schema 4) left it
        conn.execute("DELETE FROM meta WHERE key LIKE 'org_%'")
        conn.execute("ALTER TABLE runs DROP COLUMN started_by_id")  # added in schema 6
        conn.execute("ALTER TABLE runs DROP COLUMN started_by_name")
        conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
        for column in OUTCOME_COLUMNS:  # added in schema 6
            conn.execute(f"ALTER TABLE run_rows DROP COLUMN {column}")
        conn.execute("ALTER TABLE runs DROP COLUMN work_ready")  # schema 7's additions
        conn.execute("ALTER TABLE run_rows DROP COLUMN held_by")
        for table in ("workers", "conversation_claims", "rate_budgets"):
            conn.execute(f"DROP TABLE {table}")

    run = invoke(emulator, tmp_path, RECLASSIFY)

    check_sample(run, emulator, db)
    assert "had no org recorded (its 1 earlier run(s) were made by an older wrapup-batch)" in (
        run.stderr
    )
    assert f"it now belongs to org '{DEFAULT_ORG_NAME}'" in run.stderr
    assert query(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        {"value": str(SCHEMA_VERSION)}
    ]
    assert org_meta(db)["org_id"] == DEFAULT_ORG_ID


def test_a_sandbox_run_never_uses_the_production_ledger_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    told = runner.invoke(
        main, ["run", str(RECLASSIFY), "--sandbox", "-q", "--ledger", "mine.db", "--limit", "3"]
    )
    default = runner.invoke(main, ["run", str(RECLASSIFY), "--sandbox", "-q", "--limit", "3"])

    assert (told.exit_code, default.exit_code) == (0, 0), told.stderr + default.stderr
    assert (tmp_path / "mine.db").exists() and (tmp_path / SANDBOX_LEDGER).exists()
    assert not (tmp_path / DEFAULT_LEDGER).exists()
    status = runner.invoke(main, ["status", "--ledger", SANDBOX_LEDGER])
    assert status.exit_code == 0
    assert (
        f"org '{DEFAULT_ORG_NAME}' (id {DEFAULT_ORG_ID}), first used through http://127.0.0.1:"
        in (status.stdout)
    )


def test_status_without_a_ledger_points_at_the_sandbox_ledger_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    nothing = runner.invoke(main, ["status"])
    assert nothing.exit_code == 2
    assert SANDBOX_LEDGER not in nothing.stderr

    runner.invoke(main, ["run", str(RECLASSIFY), "--sandbox", "-q", "--limit", "2"])
    pointed = runner.invoke(main, ["status"])
    report = runner.invoke(main, ["report"])

    assert pointed.exit_code == report.exit_code == 2
    for result in (pointed, report):
        assert result.stderr == (
            f"Error: no ledger at {DEFAULT_LEDGER}; run `wrapup-batch run` first (--sandbox runs "
            f"write {SANDBOX_LEDGER}: add --ledger {SANDBOX_LEDGER})\n"
        )
