"""GENESYSCLOUD_ACCESS_TOKEN: a user's token instead of the OAuth client, through the CLI.

The emulator issues users' tokens (`EmulatorHandle.user_token`) and expires or revokes them;
the runs are judged by exit codes, messages, the ledger and what the emulator received, and
every output is searched for the token.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_run_cli import (
    GET_CONVERSATION,
    POST_WRAPUP,
    RECLASSIFY,
    SAMPLE_APPLIED,
    TOKEN,
    check_each_posted_once,
    check_sample,
    env_for,
    invoke,
    query,
)

from wrapup_batch import runner
from wrapup_batch.api_settings import ApiSettings, settings_from_env
from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, Wrapup

ALICE = "b0000001-0000-4000-8000-000000000000"
EXPIRED = "the access token expired or was revoked: get a new one and set GENESYSCLOUD_ACCESS_TOKEN"
ORG_ME = "GET /api/v2/organizations/me"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0)


def token_env(emulator: EmulatorHandle, token: str, *, keep_client: bool = False) -> Any:
    """The emulator's host and a user's token; the OAuth client's variables unset."""
    env = env_for(emulator, GENESYSCLOUD_ACCESS_TOKEN=token)
    if not keep_client:
        env.update(GENESYSCLOUD_OAUTHCLIENT_ID=None, GENESYSCLOUD_OAUTHCLIENT_SECRET=None)
    return env


def org_meta(db: Path) -> dict[str, str]:
    rows = query(db, "SELECT key, value FROM meta WHERE key LIKE 'org_%'")
    return {r["key"]: r["value"] for r in rows}


def test_a_users_token_runs_the_sample_and_appears_in_no_output(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    token = emulator.user_token(ALICE)
    log_file = tmp_path / "run.log"
    summary = tmp_path / "summary.json"

    run = invoke(
        emulator, tmp_path, RECLASSIFY, "--log-file", log_file, "--log-format", "json", "-v",
        "--summary-json", summary, env=token_env(emulator, token), quiet=False,
    )  # fmt: skip

    check_sample(run, emulator, tmp_path / "ledger.db")
    stats = emulator.stats()
    assert TOKEN not in stats["requests"]  # no client-credentials token was asked for
    assert stats["requests"]["GET /api/v2/users/me"] == {"200": 1}
    meta = org_meta(tmp_path / "ledger.db")
    assert meta["org_principal"] == f"user Alice Agent ({ALICE})"
    outputs = {
        "stdout": run.stdout,
        "stderr": run.stderr,
        "log": log_file.read_text("utf-8"),
        "results": (tmp_path / "out.csv").read_text("utf-8-sig"),
        "summary": summary.read_text("utf-8"),
    }
    for ledger_file in tmp_path.glob("ledger.db*"):
        outputs[ledger_file.name] = ledger_file.read_bytes().decode("latin-1")
    assert '"row": 1' in outputs["log"]  # the log is the -v JSON log, with every row
    for where, text in outputs.items():
        assert token not in text, where
        assert token[:16] not in text, where


def test_the_token_wins_over_the_client_and_never_shows_in_a_repr(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    token = emulator.user_token()

    run = invoke(emulator, tmp_path, RECLASSIFY, env=token_env(emulator, token, keep_client=True))

    check_sample(run, emulator, tmp_path / "ledger.db")
    assert TOKEN not in emulator.stats()["requests"]
    settings = settings_from_env({"GENESYSCLOUD_ACCESS_TOKEN": token, **emulator.env()})
    assert settings.access_token == token and settings.uses_user_token
    assert token not in repr(settings) and token not in settings.principal
    assert not ApiSettings("h", "c", "s").uses_user_token


def test_an_expired_token_stops_the_run_with_exit_3_before_anything_is_sent(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    token = emulator.user_token(ttl=0)

    run = invoke(emulator, tmp_path, RECLASSIFY, env=token_env(emulator, token))

    assert run.exit_code == 3, run.stderr
    assert EXPIRED in run.stderr and "nothing is lost: run again to resume" in run.stderr
    assert token not in run.stderr
    requests = emulator.stats()["requests"]
    assert requests == {ORG_ME: {"401": 1}}
    assert set(run.statuses().values()) <= {"pending", "duplicate", "invalid"}


def test_a_token_revoked_mid_run_stops_it_and_a_new_token_resumes_without_a_second_write(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = emulator.user_token()
    stored = emulator.state.set_wrapup
    written: list[str] = []

    def set_then_revoke(communication_id: str, wrapup: Wrapup) -> None:
        stored(communication_id, wrapup)
        written.append(communication_id)
        if len(written) == 3:  # the user signs out while the run goes on
            emulator.state.revoke_token(token)

    monkeypatch.setattr(emulator.state, "set_wrapup", set_then_revoke)

    run = invoke(emulator, tmp_path, RECLASSIFY, env=token_env(emulator, token))

    assert run.exit_code == 3, run.stderr
    assert f"aborted: {EXPIRED}" in run.stderr
    assert "nothing is lost: run again to resume" in run.stderr
    statuses = list(run.statuses().values())
    assert statuses.count("applied") == 3
    assert "pending" in statuses or "in_flight" in statuses
    requests = emulator.stats()["requests"]
    assert any("401" in by_status for by_status in requests.values())

    rerun = invoke(emulator, tmp_path, RECLASSIFY, env=token_env(emulator, emulator.user_token()))
    check_sample(rerun, emulator, tmp_path / "ledger.db")
    # over both runs, every communication got exactly one accepted wrap-up
    check_each_posted_once(emulator, SAMPLE_APPLIED)
    assert emulator.stats()["requests"][POST_WRAPUP]["202"] == len(SAMPLE_APPLIED)


def test_check_with_a_token_names_the_user_and_the_org(emulator: EmulatorHandle) -> None:
    token = emulator.user_token(ALICE)

    result = CliRunner().invoke(main, ["check"], env=token_env(emulator, token))

    assert result.exit_code == 0, result.stdout
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        f"✓ credentials: the access token in GENESYSCLOUD_ACCESS_TOKEN is accepted by "
        f"{emulator.base_url} (user Alice Agent ({ALICE})), for org 'wrapup-batch emulator'"
    )
    assert token not in result.stdout
    emulator.revoke_token(token)
    refused = CliRunner().invoke(main, ["check"], env=token_env(emulator, token))
    assert refused.exit_code == 3
    assert EXPIRED in refused.stdout
    assert GET_CONVERSATION not in emulator.stats()["requests"]


def test_the_json_summary_of_an_aborted_token_run_names_the_cause(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    token = emulator.user_token(ttl=0)
    summary = tmp_path / "summary.json"

    run = invoke(
        emulator, tmp_path, RECLASSIFY, "--summary-json", summary, env=token_env(emulator, token)
    )

    assert run.exit_code == 3
    data = json.loads(summary.read_text("utf-8"))
    assert data["exit_code"] == 3 and EXPIRED in data["aborted"]
    assert token not in summary.read_text("utf-8")


def test_a_log_record_that_carries_the_token_is_redacted(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A record holding the token as plain text (no "Bearer" before it, which is redacted
    # anyway), as a library's debug line could: the redaction knows the token itself.
    token = emulator.user_token()
    identify = runner.identify

    def identify_and_log(client: Any, stamp: str) -> Any:
        logging.getLogger("wrapup_batch.genesys").warning("token in use: %s.", token)
        return identify(client, stamp)

    monkeypatch.setattr(runner, "identify", identify_and_log)
    log_file = tmp_path / "run.log"

    run = invoke(
        emulator, tmp_path, RECLASSIFY, "--log-file", log_file, "--log-format", "json",
        env=token_env(emulator, token),
    )  # fmt: skip

    assert run.exit_code == 1, run.stderr
    logged = log_file.read_text("utf-8")
    assert "token in use: ***." in run.stderr and "token in use: ***." in logged
    assert token not in run.stderr and token not in logged
