"""The commands around `run`: status, report, codes, check, and the help of every command.

Through the CLI (CliRunner) against the emulator on loopback and real SQLite ledgers, with
exact exit codes and messages. The seed's readable ids and the sample's outcome come from
test_run_cli.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from test_run_cli import (
    GET_CODES,
    GET_CONVERSATION,
    RECLASSIFY,
    SALES,
    SAMPLE_COUNTS,
    client_env,
    comm,
    conv,
    env_for,
    query,
    read_results,
    write_csv,
)

from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, OAuthClient
from wrapup_batch.emulator.config import DEFAULT_ORG_ID, DEFAULT_ORG_NAME
from wrapup_batch.ledger import Ledger

ANALYTICS = "GET /api/v2/analytics/conversations/details"
CLIENT = "wrapup-batch-demo"  # the emulator's default OAuth client
#: The rows of sample_data/reclassify.csv that are not fine after a run (see test_run_cli).
SAMPLE_NOT_FINE = {
    9: "not_ended",
    10: "no_agent",
    11: "forbidden",
    12: "not_found",
    14: "no_agent",
    17: "unknown_code",
    18: "unknown_code",
    19: "ambiguous_code",
    20: "conflict",
    21: "conflict",
}
SAMPLE_TODO = {s: n for s, n in SAMPLE_COUNTS.items() if s in SAMPLE_NOT_FINE.values()}
#: The seed's codes visible to the default client, sorted by name: (id, name, division).
VISIBLE_CODES = [
    ("9c000008-0000-4000-8000-000000000000", "Callback Scheduled", "Home"),
    ("9c000005-0000-4000-8000-000000000000", "Complaint", "Home"),
    ("9c000011-0000-4000-8000-000000000000", "Follow-up Required", "Sales Division"),
    ("9c000006-0000-4000-8000-000000000000", "No Answer", "Home"),
    ("9c000007-0000-4000-8000-000000000000", "No answer", "Sales Division"),
    ("9c000001-0000-4000-8000-000000000000", "Sales", "Sales Division"),
    ("9c000002-0000-4000-8000-000000000000", "Sales - Upsell", "Sales Division"),
    ("9c000009-0000-4000-8000-000000000000", "Spam", "Home"),
    ("9c000003-0000-4000-8000-000000000000", "Support - Billing", "Home"),
    ("9c000004-0000-4000-8000-000000000000", "Support - Technical", "Home"),
    ("9c000010-0000-4000-8000-000000000000", "Wrong Number", "Home"),
]
HOME = "d0000001-0000-4000-8000-000000000000"
SALES_DIVISION = "d0000002-0000-4000-8000-000000000000"
WRAPUP_NOTE = (
    "- conversation:participant:wrapup: not checked (only a write proves it); a run without it "
    "stops at its first wrap-up POST with exit 3"
)


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0)


def cli(
    *args: str | Path, env: Mapping[str, str | None] | None = None, input: str | None = None
) -> Result:
    return CliRunner().invoke(
        main, [str(a) for a in args], env=dict(env or {}), catch_exceptions=False, input=input
    )


def run_sample(emulator: EmulatorHandle, db: Path, *extra: str) -> Result:
    result = cli(
        "run", RECLASSIFY, "--ledger", db, "--rate-limit", "6000", "-q", *extra,
        env=env_for(emulator),
    )  # fmt: skip
    assert result.exit_code == 1, result.stderr
    return result


def add_client(
    emulator: EmulatorHandle, client_id: str, permissions: Sequence[str]
) -> dict[str, str | None]:
    """A client of the two visible divisions with only these permissions; its environment."""
    emulator.state.clients[client_id] = OAuthClient(
        client_id=client_id,
        client_secret=f"{client_id}-secret",
        name=client_id,
        division_ids=frozenset({HOME, SALES_DIVISION}),
        permissions=frozenset(permissions),
    )
    return client_env(emulator, client_id)


# -- help ---------------------------------------------------------------------------------------


def missing_help(group: click.Group) -> list[str]:
    """Commands, and options of commands, that have no help text."""
    missing = []
    for name, command in sorted(group.commands.items()):
        if not (command.help or "").strip():
            missing.append(name)
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append(f"{name} {param.opts[0]}")
    return missing


def test_the_help_check_catches_a_command_or_option_without_help() -> None:
    @click.group()
    def group() -> None:
        """A group."""

    @group.command()
    def helpless() -> None:
        pass

    @group.command()
    @click.option("--bare")
    def documented(bare: str) -> None:
        """Has help; its option has none."""

    assert missing_help(group) == ["documented --bare", "helpless"]


def test_every_command_and_option_has_help_text() -> None:
    assert {"run", "status", "report", "codes", "check", "emulator", "demo"} <= set(main.commands)
    assert missing_help(main) == []
    listing = cli("--help")
    assert listing.exit_code == 0
    for name, command in main.commands.items():
        assert re.search(rf"^  {name} +\S", listing.stdout, re.MULTILINE), name
        shown = cli(name, "--help")
        assert shown.exit_code == 0, name
        assert shown.stdout.startswith(f"Usage: main {name} [OPTIONS]")
        first_words = " ".join((command.help or "").split()[:4])
        assert first_words in " ".join(shown.stdout.split()), name


# -- status -------------------------------------------------------------------------------------


def test_status_without_a_ledger_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "nope.db"

    result = cli("status", "--ledger", db)

    assert result.exit_code == 2
    assert result.stderr == f"Error: no ledger at {db}; run `wrapup-batch run` first\n"
    assert result.stdout == ""
    assert not db.exists()


def test_status_of_a_ledger_without_runs(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    Ledger.open(str(db)).close()

    text = cli("status", "--ledger", db)
    as_json = cli("status", "--ledger", db, "--json")

    assert (text.exit_code, text.stdout) == (
        0,
        f"ledger {db}: no runs yet\n"
        "org: none recorded yet (the next run that reaches an org records it)\n",
    )
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == {
        "ledger": str(db),
        "org": None,
        "runs": [],
        "still_to_do": None,
        "live": [],
    }


def test_status_lists_each_run_and_the_rows_still_to_do(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    run_sample(emulator, db, "--dry-run")
    run_sample(emulator, db)

    text = cli("status", "--ledger", db)
    as_json = cli("status", "--ledger", db, "--json")

    assert text.exit_code == 0 and as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    runs = data["runs"]
    assert [(r["id"], r["kind"], r["dry_run"], r["exit_code"], r["rows"]) for r in runs] == [
        (1, "run", True, 1, 22),
        (2, "run", False, 1, 22),
    ]
    assert all(r["source"] == str(RECLASSIFY) for r in runs)
    dry_counts = dict(SAMPLE_COUNTS, would_apply=9)
    del dry_counts["applied"]
    assert runs[0]["counts"] == dry_counts
    assert runs[1]["counts"] == SAMPLE_COUNTS
    recorded = query(db, "SELECT started, finished FROM runs ORDER BY id")
    assert [(r["started"], r["finished"]) for r in runs] == [
        (r["started"], r["finished"]) for r in recorded
    ]
    assert data["still_to_do"] == {"run_id": 2, "rows": 10, "counts": SAMPLE_TODO}
    org = data["org"]  # recorded by the first run (the dry run), when it reached the org
    assert (org["id"], org["name"]) == (DEFAULT_ORG_ID, DEFAULT_ORG_NAME)
    assert (org["api_host"], org["principal"]) == (emulator.base_url, "OAuth client " + CLIENT)
    assert org["since"][:4] == runs[0]["started"][:4] and org["since"] <= runs[0]["finished"]

    todo = (
        "unknown_code 2, ambiguous_code 1, conflict 2, not_found 1, not_ended 1, no_agent 2, "
        "forbidden 1"
    )
    who = runs[0]["started_by"]["name"]  # the OS account that ran the command
    assert runs[1]["started_by"] == runs[0]["started_by"]
    assert runs[0]["started_by"]["id"].startswith("os:")
    expected = [
        f"ledger {db}: 2 run(s)",
        f"org '{DEFAULT_ORG_NAME}' (id {DEFAULT_ORG_ID}), first used through "
        f"{emulator.base_url} as OAuth client {CLIENT} on {org['since']}",
        f"run 1 (dry run): exit 1, 22 row(s), {runs[0]['started']} to {runs[0]['finished']} "
        f"by {who}",
        f"    source: {RECLASSIFY}",
        "    fine: unchanged 1, skipped 1, duplicate 1, would_apply 9",
        f"    not fine: {todo}",
        f"run 2 (run): exit 1, 22 row(s), {runs[1]['started']} to {runs[1]['finished']} by {who}",
        f"    source: {RECLASSIFY}",
        "    fine: applied 9, unchanged 1, skipped 1, duplicate 1",
        f"    not fine: {todo}",
        f"still to do after run 2: 10 row(s) ({todo})",
        "    fix these in the input (a rerun alone cannot): unknown_code 2, ambiguous_code 1, "
        "conflict 2",
        "    run the same input with this ledger again to retry these: not_ended 1",
        "    check these in Genesys Cloud (the id, the region, the role's divisions; "
        "`report --not-fine` has each message): not_found 1, no_agent 2, forbidden 1",
    ]
    assert text.stdout.splitlines() == expected


def test_status_after_a_dry_run_counts_the_rows_it_would_apply_as_still_to_do(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    run_sample(emulator, db, "--dry-run")

    data = json.loads(cli("status", "--ledger", db, "--json").stdout)

    assert data["still_to_do"] == {
        "run_id": 1,
        "rows": 19,
        "counts": {"would_apply": 9, **SAMPLE_TODO},
    }


def test_status_shows_a_run_that_has_not_finished(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = Ledger.open(str(db))
    try:
        ledger.start_run(source="in.csv", options={}, dry_run=False)
    finally:
        ledger.close()

    result = cli("status", "--ledger", db)

    assert result.exit_code == 0
    started, who = query(db, "SELECT started, started_by_name FROM runs")[0].values()
    assert result.stdout.splitlines() == [
        f"ledger {db}: 1 run(s)",
        "org: none recorded yet (the next run that reaches an org records it)",
        "run 1 (run): not finished (running now, or stopped without a summary), 0 row(s), "
        f"started {started} by {who}",
        "    source: in.csv",
        "still to do after run 1: nothing",
    ]


# -- report -------------------------------------------------------------------------------------


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_report_writes_the_last_run_to_stdout(emulator: EmulatorHandle, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    run_sample(emulator, db, "--results", str(tmp_path / "run.csv"))

    result = cli("report", "--ledger", db)

    assert result.exit_code == 0
    assert result.stderr == "run 1: 22 row(s) written to standard output\n"
    assert not result.stdout.startswith("\ufeff")
    ran, _ = read_results(tmp_path / "run.csv")
    assert csv_rows(result.stdout) == ran  # the same as the run's --results file


def test_report_the_failures_of_a_run_to_a_file(emulator: EmulatorHandle, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    run_sample(emulator, db)
    out = tmp_path / "failures.csv"

    chosen = cli(
        "report", "--ledger", db, "--status", "forbidden", "--status", "not_found", "-o", out
    )

    assert chosen.exit_code == 0
    assert chosen.stderr == f"run 1: 2 row(s) with status not_found, forbidden written to {out}\n"
    assert chosen.stdout == ""
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")  # a BOM, for spreadsheets
    rows, header = read_results(out)
    assert header[:4] == ["row", "conversation_id", "wrapup_code", "status"]
    assert [(r["row"], r["status"], r["http_status"]) for r in rows] == [
        ("11", "forbidden", "403"),
        ("12", "not_found", "404"),
    ]
    assert all(r["context_id"] for r in rows)

    not_fine = cli("report", "--ledger", db, "--not-fine")

    assert not_fine.exit_code == 0
    assert {int(r["row"]): r["status"] for r in csv_rows(not_fine.stdout)} == SAMPLE_NOT_FINE
    assert (
        not_fine.stderr == "run 1: 10 row(s) not fine or not finished written to standard output\n"
    )

    with_skipped = cli("report", "--ledger", db, "--not-fine", "--status", "skipped", "-o", out)
    assert with_skipped.stderr == (
        f"run 1: 11 row(s) not fine or not finished or with status skipped written to {out}\n"
    )
    rows, _ = read_results(out)
    assert {int(r["row"]): r["status"] for r in rows} == {**SAMPLE_NOT_FINE, 8: "skipped"}


def test_report_an_earlier_run(emulator: EmulatorHandle, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    first_input = write_csv(
        tmp_path / "a.csv",
        ["conversation_id", "wrapup_code"],
        [[conv(1), "Sales"], [conv(99), "Sales"]],
    )
    second_input = write_csv(
        tmp_path / "b.csv", ["conversation_id", "wrapup_code"], [[conv(4), "Complaint"]]
    )
    env = env_for(emulator)
    assert cli("run", first_input, "--ledger", db, "-q", env=env).exit_code == 1
    assert cli("run", second_input, "--ledger", db, "-q", env=env).exit_code == 0

    first = cli("report", "--ledger", db, "--run", "1")
    last = cli("report", "--ledger", db)

    assert first.exit_code == 0 and last.exit_code == 0
    assert [(r["conversation_id"], r["status"]) for r in csv_rows(first.stdout)] == [
        (conv(1), "applied"),
        (conv(99), "not_found"),
    ]
    assert first.stderr == "run 1: 2 row(s) written to standard output\n"
    assert [(r["conversation_id"], r["status"]) for r in csv_rows(last.stdout)] == [
        (conv(4), "applied")
    ]
    assert last.stderr == "run 2: 1 row(s) written to standard output\n"


def test_report_refuses_an_unknown_run_status_or_empty_ledger(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    Ledger.open(str(db)).close()

    empty = cli("report", "--ledger", db)
    assert (empty.exit_code, empty.stderr) == (2, f"Error: ledger {db} has no runs yet\n")

    run_sample(emulator, db)
    unknown = cli("report", "--ledger", db, "--run", "7")
    assert unknown.exit_code == 2
    assert unknown.stderr == (
        f"Error: ledger {db} has no run 7; `wrapup-batch status --ledger {db}` lists its runs\n"
    )
    assert unknown.stdout == ""

    bad_status = cli("report", "--ledger", db, "--status", "broken")
    assert bad_status.exit_code == 2
    assert "Invalid value for '--status': 'broken' is not one of 'applied'," in bad_status.stderr


# -- codes --------------------------------------------------------------------------------------


def test_codes_lists_the_org_codes_sorted_by_name(emulator: EmulatorHandle) -> None:
    result = cli("codes", env=env_for(emulator))

    assert result.exit_code == 0
    assert result.stderr == "11 code(s)\n"
    lines = result.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["id", "name", "division"]
    assert [tuple(re.split(r"\s{2,}", line)) for line in lines[1:]] == VISIBLE_CODES
    assert lines[1] == "9c000008-0000-4000-8000-000000000000  Callback Scheduled   Home"
    assert emulator.stats()["requests"][GET_CODES] == {"200": 1}


def test_codes_match_and_json(emulator: EmulatorHandle) -> None:
    result = cli("codes", "--match", "SUPPORT  -", "--json", env=env_for(emulator))

    assert result.exit_code == 0
    assert json.loads(result.stdout) == [
        {
            "id": "9c000003-0000-4000-8000-000000000000",
            "name": "Support - Billing",
            "division_id": HOME,
            "division_name": "Home",
        },
        {
            "id": "9c000004-0000-4000-8000-000000000000",
            "name": "Support - Technical",
            "division_id": HOME,
            "division_name": "Home",
        },
    ]
    assert result.stderr == "2 of 11 code(s) match 'SUPPORT  -'\n"

    nothing = cli("codes", "--match", "escalation", env=env_for(emulator))
    assert (nothing.exit_code, nothing.stdout) == (0, "")
    assert nothing.stderr == "0 of 11 code(s) match 'escalation'\n"


def test_codes_in_the_sandbox() -> None:
    result = cli("codes", "--sandbox", "--match", "no answer")

    assert result.exit_code == 0
    assert [line.split("  ")[0] for line in result.stdout.splitlines()[1:]] == [
        "9c000006-0000-4000-8000-000000000000",
        "9c000007-0000-4000-8000-000000000000",
    ]


def test_codes_without_the_permission_exits_3_naming_it(emulator: EmulatorHandle) -> None:
    result = cli("codes", env=client_env(emulator, "wrapup-batch-nocodes"))

    assert result.exit_code == 3
    assert result.stderr == (
        "Error: the OAuth client may not read wrap-up codes (403: Unable to perform the "
        "requested action. You are missing the following permission(s): "
        "[routing:wrapupCode:view]); give its role the permission routing:wrapupCode:view\n"
    )
    assert result.stdout == ""


def test_codes_with_a_bad_secret_or_no_credentials(emulator: EmulatorHandle) -> None:
    refused = cli("codes", env=env_for(emulator, GENESYSCLOUD_OAUTHCLIENT_SECRET="wrong"))
    assert refused.exit_code == 3
    assert refused.stderr.startswith(
        f"Error: the OAuth client 'wrapup-batch-demo' was refused by {emulator.base_url} (401: "
    )

    missing = cli("codes", env=env_for(emulator, GENESYSCLOUD_OAUTHCLIENT_ID=None))
    assert missing.exit_code == 2
    assert missing.stderr == (
        "Error: set GENESYSCLOUD_OAUTHCLIENT_ID to an OAuth client-credentials client of your "
        "org, or GENESYSCLOUD_ACCESS_TOKEN to a token from a user's login (or use --sandbox "
        "to run against the built-in emulator)\n"
    )


# -- check --------------------------------------------------------------------------------------


def check(
    emulator: EmulatorHandle, *args: str, env: Mapping[str, str | None] | None = None
) -> Result:
    return cli("check", "--rate-limit", "6000", *args, env=env or env_for(emulator))


def credentials_line(emulator: EmulatorHandle, client_id: str = "wrapup-batch-demo") -> str:
    return (
        f"✓ credentials: OAuth client {client_id!r} got a token from {emulator.base_url}, "
        f"for org '{DEFAULT_ORG_NAME}' (id {DEFAULT_ORG_ID})"
    )


def test_check_passes_on_a_well_set_up_client(emulator: EmulatorHandle) -> None:
    result = check(emulator, "--conversation", conv(8).upper())

    assert result.exit_code == 0, result.stdout
    assert result.stdout.splitlines() == [
        credentials_line(emulator),
        "✓ wrap-up codes: 11 readable (routing:wrapupCode:view)",
        f"✓ conversation {conv(8)}: readable (conversation:communication:view); ended; "
        f"agent communication(s): {comm(8, 3)} (calls, wrap-up 'Complaint' "
        "(9c000005-0000-4000-8000-000000000000))",
        WRAPUP_NOTE,
        "3 check(s) passed, 1 not checked (the lines marked -)",
    ]
    assert result.stderr == ""
    stats = emulator.stats()
    assert stats["requests"][GET_CONVERSATION] == {"200": 1}
    assert stats["post_attempts"] == 0


def test_check_without_a_conversation_says_it_was_not_checked() -> None:
    result = cli("check", "--sandbox")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[2:] == [
        "- conversation: not checked; give --conversation ID to prove "
        "conversation:communication:view",
        WRAPUP_NOTE,
        "2 check(s) passed, 2 not checked (the lines marked -)",
    ]


def test_check_with_a_bad_secret_stops_at_the_credentials(emulator: EmulatorHandle) -> None:
    secret = "not-the-secret-5e1f"
    result = check(emulator, env=env_for(emulator, GENESYSCLOUD_OAUTHCLIENT_SECRET=secret))

    assert result.exit_code == 3
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        f"✗ credentials: the OAuth client 'wrapup-batch-demo' was refused by {emulator.base_url}"
        " (401: "
    )
    assert "GENESYSCLOUD_OAUTHCLIENT_SECRET" in lines[0]
    assert lines[1:] == ["1 check(s) failed, 0 passed"]
    assert secret not in result.output
    assert emulator.stats()["requests"] == {"POST /oauth/token": {"401": 1}}


def test_check_names_the_missing_code_permission(emulator: EmulatorHandle) -> None:
    result = check(
        emulator, "--conversation", conv(1), env=client_env(emulator, "wrapup-batch-nocodes")
    )

    assert result.exit_code == 3
    lines = result.stdout.splitlines()
    assert lines[1] == (
        "✗ wrap-up codes: missing permission routing:wrapupCode:view (403: Unable to perform "
        "the requested action. You are missing the following permission(s): "
        "[routing:wrapupCode:view])"
    )
    # The other checks still ran: the conversation is readable (codes shown by id).
    assert lines[2].startswith(f"✓ conversation {conv(1)}: readable")
    assert lines[-1] == "1 check(s) failed, 2 passed, 1 not checked (the lines marked -)"


def test_check_names_the_missing_conversation_permission(emulator: EmulatorHandle) -> None:
    env = add_client(emulator, "no-conversations", ["routing:wrapupCode:view"])

    result = check(emulator, "--conversation", conv(1), env=env)

    assert result.exit_code == 3
    assert result.stdout.splitlines()[1:] == [
        "✓ wrap-up codes: 11 readable (routing:wrapupCode:view)",
        f"✗ conversation {conv(1)}: missing permission conversation:communication:view (403: "
        "Unable to perform the requested action. You are missing the following permission(s): "
        "[conversation:communication:view])",
        WRAPUP_NOTE,
        "1 check(s) failed, 2 passed, 1 not checked (the lines marked -)",
    ]


def test_check_a_conversation_of_another_division_or_unknown(emulator: EmulatorHandle) -> None:
    hidden = check(emulator, "--conversation", conv(11))
    assert hidden.exit_code == 3
    assert hidden.stdout.splitlines()[2] == (
        f"✗ conversation {conv(11)}: forbidden (403: Access to Conversation {conv(11)} is "
        "forbidden.); the client's role does not grant conversation:communication:view in this "
        "conversation's division"
    )

    unknown = check(emulator, "--conversation", conv(99))
    assert unknown.exit_code == 1
    assert unknown.stdout.splitlines()[2] == (
        f"✗ conversation {conv(99)}: not found (404); check the conversation id and the region"
    )


def test_check_refuses_an_id_that_is_not_a_uuid(emulator: EmulatorHandle) -> None:
    result = check(emulator, "--conversation", "12345")

    assert result.exit_code == 2
    assert result.stderr == "Error: --conversation '12345' is not a conversation id (a UUID)\n"
    assert emulator.stats()["requests"] == {}


def test_lookup_compare_agrees_on_the_seed(emulator: EmulatorHandle) -> None:
    result = check(
        emulator, "--lookup-compare", f"{conv(1)},{conv(12)}", "--lookup-compare", conv(8)
    )

    assert result.exit_code == 0, result.stdout
    assert result.stdout.splitlines()[4:] == [
        "✓ analytics: 3 of 3 conversation(s) found (analytics:conversationDetail:view)",
        f"✓ lookup-compare {conv(1)}: the two APIs agree on 1 agent communication(s) (calls): "
        "ids, media and wrap-up codes",
        f"✓ lookup-compare {conv(12)}: the two APIs agree on 2 agent communication(s) (calls): "
        "ids, media and wrap-up codes",
        f"✓ lookup-compare {conv(8)}: the two APIs agree on 1 agent communication(s) (calls): "
        "ids, media and wrap-up codes",
        "6 check(s) passed, 2 not checked (the lines marked -)",
    ]
    stats = emulator.stats()
    assert stats["requests"][ANALYTICS] == {"200": 1}
    assert stats["requests"][GET_CONVERSATION] == {"200": 3}


def test_lookup_compare_reports_a_lagging_wrapup_and_an_unknown_conversation(
    emulator: EmulatorHandle,
) -> None:
    emulator.config.analytics_wrapup_lag_s = 600.0  # analytics sees new wrap-ups late
    emulator.state.assign(comm(1, 3), SALES)
    emulator.config.analytics_hidden = {conv(4)}

    result = check(emulator, "--lookup-compare", f"{conv(1)},{conv(4)},{conv(5)}")

    assert result.exit_code == 1
    assert result.stdout.splitlines()[4:] == [
        "✓ analytics: 2 of 3 conversation(s) found (analytics:conversationDetail:view)",
        f"✗ lookup-compare {conv(1)}: the two APIs disagree: {comm(1, 3)}: wrap-up 'Sales' "
        f"({SALES}) vs none in analytics",
        f"✗ lookup-compare {conv(4)}: analytics does not know this conversation (yet)",
        f"✓ lookup-compare {conv(5)}: the two APIs agree on 1 agent communication(s) "
        "(messages): ids, media and wrap-up codes",
        "- 2 of 3 conversation(s) differ: keep --lookup conversations (the default) on this org",
        "2 check(s) failed, 4 passed, 2 not checked (the lines marked -)",
    ]


def test_lookup_compare_names_the_missing_analytics_permission(emulator: EmulatorHandle) -> None:
    env = add_client(
        emulator,
        "no-analytics",
        ["routing:wrapupCode:view", "conversation:communication:view"],
    )

    result = check(emulator, "--lookup-compare", conv(1), env=env)

    assert result.exit_code == 3
    assert result.stdout.splitlines()[4:] == [
        "✗ analytics: missing permission analytics:conversationDetail:view (403: Unable to "
        "perform the requested action. You must have at least one of the following "
        "permissions assigned: [analytics:conversationDetail:view, "
        "analytics:agentConversationDetail:view]); --lookup analytics needs it",
        "1 check(s) failed, 2 passed, 2 not checked (the lines marked -)",
    ]
