"""A newcomer's first day (issue 10): each case is what a new admin or analyst did through the
CLI, and asserts what they should have seen. The emulator on loopback is the witness of what
was sent; the ledger is read with sqlite3, the results and logs as files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner
from test_run_cli import (
    GET_CONVERSATION,
    RECLASSIFY,
    SAMPLE_COUNTS,
    api_requests,
    env_for,
    query,
    read_results,
)

from wrapup_batch.cli import main
from wrapup_batch.emulator import (
    EmulatorConfig,
    EmulatorHandle,
    generated_conversation_id,
    start_emulator,
)


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0)


def cli(emulator: EmulatorHandle | None, *args: str | Path, **env: str | None) -> Any:
    environment = {**(env_for(emulator) if emulator is not None else {}), **env}
    return CliRunner().invoke(main, [str(a) for a in args], env=environment, catch_exceptions=False)


def requests_seen(emulator: EmulatorHandle) -> int:
    """Every request the emulator got, the token endpoint's included."""
    stats = emulator.stats()
    return api_requests(stats) + sum(stats["requests"].get("POST /oauth/token", {}).values())


# -- 1. outputs checked before anything is written ------------------------------------------------


@pytest.mark.parametrize(
    ("option", "name"),
    [
        ("--results", "nodir/x.csv"),
        ("--summary-json", "nodir/summary.json"),
        ("--log-file", "nodir/run.log"),
    ],
)
def test_an_output_that_cannot_be_written_stops_the_run_before_any_request(
    emulator: EmulatorHandle, tmp_path: Path, option: str, name: str
) -> None:
    target = tmp_path / name

    run = cli(emulator, "run", RECLASSIFY, "--ledger", tmp_path / "l.db", option, target)

    assert run.exit_code == 2, run.stderr
    assert f"{target}" in run.stderr and "Traceback" not in run.stderr
    assert requests_seen(emulator) == 0  # not even a token
    assert emulator.stats(detail=True)["posts_per_communication"] == {}


def test_a_results_path_that_is_a_folder_is_refused_before_any_request(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = cli(emulator, "run", RECLASSIFY, "--ledger", tmp_path / "l.db", "--results", tmp_path)

    assert run.exit_code == 2
    assert f"--results {tmp_path} is a folder; give a file name" in run.stderr
    assert requests_seen(emulator) == 0


def test_a_full_disk_after_the_work_still_prints_the_summary_and_the_works_exit_code(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """/dev/full takes the check (a writable file) and fails the write (no space left)."""
    results = tmp_path / "out.csv"

    run = cli(
        emulator, "run", RECLASSIFY, "--ledger", tmp_path / "l.db", "--results", results,
        "--summary-json", "/dev/full", "-q",
    )  # fmt: skip

    assert run.exit_code == 1, run.stderr  # the sample's bad rows: not 2
    assert "run 1: finished; 10 row(s) need attention" in run.stderr
    assert "Error: cannot write the summary to /dev/full" in run.stderr
    rows, _ = read_results(results)  # the other output was written
    assert len(rows) == 22
    assert sum(emulator.stats(detail=True)["posts_per_communication"].values()) == 9


# -- 2. every row's outcome in the log ------------------------------------------------------------


def test_the_json_log_holds_every_rows_outcome_with_the_same_fields(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    log_file, results = tmp_path / "run.log", tmp_path / "out.csv"

    run = cli(
        emulator, "run", RECLASSIFY, "--ledger", tmp_path / "l.db", "--results", results,
        "--log-file", log_file, "--log-format", "json", "-q",
    )  # fmt: skip

    assert run.exit_code == 1, run.stderr
    records = [json.loads(line) for line in log_file.read_text("utf-8").splitlines()]
    outcomes = {r["row"]: r for r in records if "row" in r}
    rows, _ = read_results(results)
    assert sorted(outcomes) == list(range(1, 23))  # all 22 rows, not 16
    for row in rows:
        record = outcomes[int(row["row"])]
        assert record["status"] == row["status"]
        assert record["conversation_id"] == row["conversation_id"]
        assert record["run_id"] == 1 and record["level"] == "INFO"
        assert record["message"].startswith(f"row {row['row']} {row['conversation_id']}: ")
    assert {outcomes[n]["status"] for n in (16, 17, 18, 19, 20, 21)} == {
        "duplicate",
        "unknown_code",
        "ambiguous_code",
        "conflict",
    }
    assert 'did you mean "Sales"' in outcomes[17]["message"]
    assert "http_status" not in outcomes[16]  # nothing was sent for a duplicate


def test_verbose_shows_invalid_rows_on_the_console(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "conversation_id,wrapup_code\nnot-a-uuid,Sales\nc0000001-0000-4000-8000-000000000000,\n",
        "utf-8",
    )

    run = cli(emulator, "run", source, "--ledger", tmp_path / "l.db", "-v", "-q")

    assert run.exit_code == 1, run.stderr
    assert "INFO row 1 not-a-uuid: invalid (" in run.stderr
    assert "INFO row 2 c0000001-0000-4000-8000-000000000000: invalid (" in run.stderr


# -- 3. a network failure is not a credentials failure --------------------------------------------


UNREACHABLE = {
    "GENESYSCLOUD_API_HOST": "https://api.nonexistent-host.invalid",
    "GENESYSCLOUD_OAUTHCLIENT_ID": "some-client",
    "GENESYSCLOUD_OAUTHCLIENT_SECRET": "some-secret",
    "GENESYSCLOUD_REGION": None,
}


def closed_port_host() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens there


@pytest.mark.parametrize("host", ["https://api.nonexistent-host.invalid", "closed port"])
def test_an_unreachable_host_exits_7_with_a_network_hint_not_a_credentials_one(
    tmp_path: Path, host: str
) -> None:
    env = {
        **UNREACHABLE,
        "GENESYSCLOUD_API_HOST": closed_port_host() if host == "closed port" else host,
    }
    source = tmp_path / "blank.csv"
    source.write_text("conversation_id,wrapup_code\nc0000001-0000-4000-8000-000000000000,Sales\n")
    ledger = tmp_path / "b4.db"

    run = cli(None, "run", source, "--ledger", ledger, "-q", **env)

    assert run.exit_code == 7, run.stderr
    assert "could not reach" in run.stderr and "to get a token" in run.stderr
    assert "check the network, a proxy (HTTPS_PROXY), and the region" in run.stderr
    assert "credentials were not tried" in run.stderr and "refused" not in run.stderr
    assert query(ledger, "SELECT exit_code FROM runs") == [{"exit_code": 7}]
    assert query(ledger, "SELECT status FROM items") == [{"status": "pending"}]
    for command in (["codes"], ["check"]):
        other = cli(None, *command, **env)
        assert other.exit_code == 7, other.stdout + other.stderr
        assert "could not reach" in other.stderr


def test_an_unreachable_host_with_a_users_token_also_exits_7(tmp_path: Path) -> None:
    env = {
        **UNREACHABLE,
        "GENESYSCLOUD_API_HOST": closed_port_host(),
        "GENESYSCLOUD_OAUTHCLIENT_ID": None,
        "GENESYSCLOUD_OAUTHCLIENT_SECRET": None,
        "GENESYSCLOUD_ACCESS_TOKEN": "a-users-token",
    }
    source = tmp_path / "blank.csv"
    source.write_text("conversation_id,wrapup_code\nc0000001-0000-4000-8000-000000000000,Sales\n")

    run = cli(None, "run", source, "--ledger", tmp_path / "b4.db", "-q", **env)

    assert run.exit_code == 7, run.stderr
    assert "could not reach" in run.stderr and "check the network, a proxy" in run.stderr
    assert "a-users-token" not in run.stderr


# -- 4. workbooks and headers ---------------------------------------------------------------------

CONV1 = "c0000001-0000-4000-8000-000000000000"
CONV3 = "c0000003-0000-4000-8000-000000000000"


def workbook(path: Path, sheets: dict[str, list[list[str]]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def test_a_workbook_with_its_data_on_the_second_sheet_names_the_sheets_and_the_flag(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = workbook(
        tmp_path / "fix.xlsx",
        {
            "Read me": [["Conversations to reclassify, from the quality review"]],
            "Data": [["Conversation Id", "Wrap-up"], [CONV1, "Sales"]],
        },
    )

    refused = cli(emulator, "run", source, "--ledger", tmp_path / "l.db")
    accepted = cli(emulator, "run", source, "--sheet", "Data", "--ledger", tmp_path / "l.db")

    assert refused.exit_code == 2
    assert "The workbook's sheets are 'Read me', 'Data'" in refused.stderr
    assert "sheet 'Data' has these columns: add --sheet Data." in refused.stderr
    assert "delimiter" not in refused.stderr
    assert accepted.exit_code == 0, accepted.stderr
    assert emulator.stats(detail=True)["posts_per_communication"] == {
        "e0000001-0000-4000-8000-000000000031": 1
    }


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_a_header_below_a_title_is_found_and_the_fix_named(tmp_path: Path, kind: str) -> None:
    rows = [["Export of 2026-11-20"], [], ["conversation_id", "wrapup_code"], [CONV1, "Sales"]]
    if kind == "csv":
        source = tmp_path / "in.csv"
        source.write_text("\n".join(",".join(r) for r in rows) + "\n", "utf-8")
    else:
        source = workbook(tmp_path / "in.xlsx", {"Sheet1": rows})

    run = cli(None, "run", source, "--ledger", tmp_path / "l.db", "--sandbox")

    unit = "line" if kind == "csv" else "row"
    assert run.exit_code == 2
    assert (
        f"The header seems to be on {unit} 3, not {unit} 1: delete the 2 {unit}(s) above it"
    ) in run.stderr
    assert "Traceback" not in run.stderr


def test_the_missing_column_hint_names_the_column_that_is_missing(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"conversation_id,disposition\n{CONV1},Sales\n", "utf-8")

    run = cli(None, "run", source, "--ledger", tmp_path / "l.db", "--sandbox")

    assert run.exit_code == 2
    assert "no wrapup_code column" in run.stderr
    assert "map them with --column wrapup_code=YourHeader" in run.stderr
    assert "--column conversation_id=" not in run.stderr


@pytest.mark.parametrize(
    "header", ["Conversation Id,Wrap-up", "Conversation Id,Wrap-up Code", "Conversation,Wrap-up"]
)
def test_the_genesys_ui_headers_are_understood(
    emulator: EmulatorHandle, tmp_path: Path, header: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"{header}\n{CONV1},Sales\n{CONV3},Sales\n", "utf-8")

    run = cli(emulator, "run", source, "--ledger", tmp_path / "l.db", "-q")

    assert run.exit_code == 0, run.stderr
    assert sum(emulator.stats(detail=True)["posts_per_communication"].values()) == 2


def test_a_bom_file_with_one_stray_byte_is_told_what_will_work(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(
        b"\xef\xbb\xbfconversation_id,wrapup_code,notes\n"
        + f"{CONV1},Sales,Caf".encode()
        + b"\xe9 au lait\n"  # one byte of cp1252 in a UTF-8 file
        + f"{CONV3},Sales,Cr\u00e8me br\u00fbl\u00e9e\n".encode()
    )

    run = cli(None, "run", source, "--ledger", tmp_path / "l.db", "--sandbox")
    as_cp1252 = cli(
        None, "run", source, "--encoding", "cp1252", "--ledger", tmp_path / "l.db", "--sandbox",
        "--dry-run", "-q",
    )  # fmt: skip

    assert run.exit_code == 2
    assert "line 2 has the byte(s) 0xE9" in run.stderr
    assert "starts with a UTF-8 byte order mark, so it is UTF-8 with a stray byte" in run.stderr
    assert "correct line 2 in a text editor" in run.stderr
    assert "--encoding cp1252" not in run.stderr and "try --encoding" not in run.stderr
    # ... and with --encoding cp1252 anyway, the header is still found (no "ï»¿conversation_id")
    assert as_cp1252.exit_code == 0, as_cp1252.stderr


# -- 5. results that say what happened in this run ------------------------------------------------


def test_a_duplicate_row_shows_no_http_status_since_nothing_was_sent_for_it(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    results = tmp_path / "out.csv"

    run = cli(emulator, "run", RECLASSIFY, "--ledger", tmp_path / "l.db", "--results", results)

    assert run.exit_code == 1, run.stderr
    rows = {int(r["row"]): r for r in read_results(results)[0]}
    assert (rows[1]["status"], rows[1]["http_status"]) == ("applied", "202")
    assert rows[16]["status"] == "duplicate" and rows[16]["message"] == "same as row 1"
    assert (rows[16]["http_status"], rows[16]["error_code"], rows[16]["context_id"]) == ("", "", "")


def test_the_report_of_a_dry_run_still_shows_what_the_dry_run_found(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    ledger = tmp_path / "l.db"
    dry = cli(emulator, "run", RECLASSIFY, "--ledger", ledger, "--dry-run", "-q")
    real = cli(emulator, "run", RECLASSIFY, "--ledger", ledger, "-q")
    assert (dry.exit_code, real.exit_code) == (1, 1), dry.stderr + real.stderr

    first = cli(None, "report", "--ledger", ledger, "--run", "1")
    second = cli(None, "report", "--ledger", ledger, "--run", "2")

    def statuses(text: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for line in text.splitlines()[1:]:
            status = line.split(",")[3]
            found[status] = found.get(status, 0) + 1
        return found

    others = {k: v for k, v in SAMPLE_COUNTS.items() if k != "applied"}
    assert statuses(first.stdout) == {**others, "would_apply": 9}  # not "applied"
    assert statuses(second.stdout) == SAMPLE_COUNTS
    would = [line for line in first.stdout.splitlines() if ",would_apply," in line]
    assert all(",202," not in line for line in would)  # no HTTP status: nothing was sent


def test_a_reruns_summary_counts_only_its_own_applied_rows_in_its_rate(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    ledger, summary = tmp_path / "l.db", tmp_path / "s.json"
    lines = RECLASSIFY.read_text("utf-8").splitlines()
    first_part = tmp_path / "first.csv"
    first_part.write_text("\n".join(lines[:4]) + "\n", "utf-8")  # rows 1-3: applied
    first = cli(emulator, "run", first_part, "--ledger", ledger, "-q")
    assert first.exit_code == 0, first.stderr

    rerun = cli(emulator, "run", RECLASSIFY, "--ledger", ledger, "--summary-json", summary, "-q")

    assert rerun.exit_code == 1, rerun.stderr
    data = json.loads(summary.read_text("utf-8"))
    assert data["counts"]["applied"] == 9
    assert data["applied_this_run"] == data["wrapup_posts"] == 6
    assert "this run applied 6 row(s) (" in rerun.stderr
    assert "the other 3 applied row(s) were applied by earlier runs" in rerun.stderr


def test_revert_results_name_the_codes_they_put_back(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    ledger, results = tmp_path / "l.db", tmp_path / "revert.csv"
    source = tmp_path / "in.csv"
    # conversation 8 starts with Complaint; 1 has no wrap-up
    source.write_text(
        "conversation_id,wrapup_code\nc0000008-0000-4000-8000-000000000000,Sales\n"
        "c0000001-0000-4000-8000-000000000000,Sales\n",
        "utf-8",
    )
    run = cli(emulator, "run", source, "--ledger", ledger, "--on-existing", "replace", "-q")
    assert run.exit_code == 0, run.stderr

    revert = cli(emulator, "revert", "1", "--ledger", ledger, "--results", results, "-q")

    assert revert.exit_code == 1, revert.stderr  # conversation 1: not_revertible
    rows, _ = read_results(results)
    put_back = [r for r in rows if r["status"] == "applied"]
    assert [(r["conversation_id"], r["wrapup_code"]) for r in put_back] == [
        ("c0000008-0000-4000-8000-000000000000", "Complaint")  # a name, not its id
    ]
    assert put_back[0]["code_id"] == "9c000005-0000-4000-8000-000000000000"


# -- 6. summaries that point at the next step -----------------------------------------------------


def test_a_dry_run_without_results_points_at_results_and_report(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    ledger = tmp_path / "l.db"

    run = cli(emulator, "run", RECLASSIFY, "--ledger", ledger, "--dry-run", "-q")

    assert run.exit_code == 1, run.stderr
    assert "dry run: nothing was written to Genesys Cloud" in run.stderr
    assert (
        f"every row's outcome: add --results FILE, or `wrapup-batch report --ledger {ledger} "
        "--run 1 -o FILE` (--not-fine for only the rows to look at)"
    ) in run.stderr
    report = cli(None, "report", "--ledger", ledger, "--run", "1", "--not-fine")
    assert report.exit_code == 0 and len(report.stdout.splitlines()) == 1 + 10


def test_skipped_rows_say_they_had_another_code_and_how_to_replace_it(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    # conversation 8 already has Complaint
    source.write_text("conversation_id,wrapup_code\nc0000008-0000-4000-8000-000000000000,Sales\n")

    run = cli(emulator, "run", source, "--ledger", tmp_path / "l.db", "-q")

    assert run.exit_code == 0, run.stderr
    assert "  fine: skipped 1" in run.stderr
    assert (
        "  skipped 1: these already had another wrap-up code and were left as they were; "
        "--on-existing replace changes them"
    ) in run.stderr
    assert emulator.stats(detail=True)["posts_per_communication"] == {}


def test_status_after_a_dry_run_tells_rows_to_edit_from_rows_to_run(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source, ledger = tmp_path / "in.csv", tmp_path / "l.db"
    source.write_text(
        "conversation_id,wrapup_code\nnot-a-uuid,Sales\nc0000001-0000-4000-8000-000000000000,Sales\n"
        "c0000002-0000-4000-8000-000000000000,Sale\n"
    )
    cli(emulator, "run", source, "--ledger", ledger, "--dry-run", "-q")

    status = cli(None, "status", "--ledger", ledger)

    lines = status.stdout.splitlines()
    assert lines[-3:] == [
        "still to do after run 1: 3 row(s) (would_apply 1, invalid 1, unknown_code 1)",
        "    fix these in the input (a rerun alone cannot): invalid 1, unknown_code 1",
        "    the same run without --dry-run applies these: would_apply 1",
    ]
    assert "again to retry" not in status.stdout


# -- 7. the sandbox and the demo explain themselves -----------------------------------------------


def test_each_sandbox_call_says_it_starts_a_fresh_emulator(tmp_path: Path) -> None:
    ledger, source = tmp_path / "l.db", tmp_path / "in.csv"
    source.write_text("conversation_id,wrapup_code\nc0000001-0000-4000-8000-000000000000,Sales\n")

    run = cli(None, "run", source, "--ledger", ledger, "--sandbox")
    revert = cli(None, "revert", "1", "--ledger", ledger, "--sandbox")

    for output in (run.stderr, revert.stderr):
        assert "sandbox: a fresh emulator, seeded from sample_data/emulator_seed.json" in output
        assert "the next --sandbox call (a rerun, a revert) starts from the seed again" in output
    assert run.exit_code == 0, run.stderr
    assert revert.exit_code == 1  # conversation 1 had no wrap-up before: not_revertible


def test_the_emulator_lists_conversations_to_try_and_prints_the_generated_pattern(
    tmp_path: Path,
) -> None:
    listed = cli(None, "emulator", "--list", "37", "--generate", "10")  # the seed has 31

    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0] == "conversation_id,source,media,ended,agent_wrapup"
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 37
    assert rows[0][:4] == ["c0000001-0000-4000-8000-000000000000", "seed", "calls", "yes"]
    assert ["c0000007-0000-4000-8000-000000000000", "seed", "calls", "yes", "Sales"] in rows
    assert rows[-1][:2] == ["9e000000-0000-4000-8000-000000000005", "generated"]
    # the listed ids are the ones the emulator serves: a dry run over them finds each one
    source = tmp_path / "in.csv"
    source.write_text(
        "conversation_id,wrapup_code\n" + "".join(f"{r[0]},Sales\n" for r in rows[-6:])
    )
    with start_emulator(EmulatorConfig(generate=10, rate_limit=0)) as handle:
        dry = cli(handle, "run", source, "--ledger", tmp_path / "l.db", "--dry-run", "-q")
    assert dry.exit_code == 0, dry.stderr
    assert "would_apply 6" in dry.stderr


def test_the_emulator_prints_the_id_pattern_at_start_and_a_busy_port_is_a_usage_error(
    emulator: EmulatorHandle,
) -> None:
    busy = cli(None, "emulator", "--port", str(emulator.port))

    assert busy.exit_code == 2, busy.output
    assert f"port {emulator.port} on 127.0.0.1 is in use" in busy.stderr
    assert "give another --port" in busy.stderr and "--log-file" not in busy.stderr

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "wrapup_batch", "emulator", "--port", str(port), "--generate", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    banner = "".join(lines)
    assert "conversations: 31 of the seed (c0000001-0000-4000-8000-000000000000, ...)" in banner
    assert (
        "and 50 generated ones (ended, no wrap-up), ids 9e000000-0000-4000-8000-{i:012x} for "
        "i = 0 to 49 in hexadecimal (the first: 9e000000-0000-4000-8000-000000000000)"
    ) in banner
    assert "`wrapup-batch emulator --list 20 --generate 50` prints some as CSV" in banner


def test_the_demo_reads_as_a_guided_tour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    demo = cli(None, "demo", "--output", "out")

    assert demo.exit_code == 0, demo.output
    text = demo.stderr
    assert "on the built-in emulator, a stand-in for a Genesys Cloud org" in text
    assert "wrong on purpose" in text
    assert text.count("10 row(s) need attention") == 3
    assert (
        "The 10 row(s) that need attention are the sample's deliberate mistakes: row 9 "
        "not_ended, row 10 no_agent, row 11 forbidden, row 12 not_found, row 14 no_agent, "
        "row 17 unknown_code, row 18 unknown_code, row 19 ambiguous_code, row 20 conflict, "
        "row 21 conflict."
    ) in text
    assert "-> 9 wrap-up(s) applied, one POST each (9 POSTs)" in text
    assert "-> 0 wrap-up POSTs: the ledger knows which rows are done" in text
    assert "Next:\n  wrapup-batch status --ledger out/demo-ledger.db" in text
    assert "  wrapup-batch report --ledger out/demo-ledger.db --not-fine" in text
    assert "  wrapup-batch run YOUR.csv --sandbox --dry-run --results preview.csv" in text
    status = cli(None, "status", "--ledger", "out/demo-ledger.db")
    assert status.exit_code == 0 and "3 run(s)" in status.stdout


# -- 8. small ones --------------------------------------------------------------------------------


def test_a_mistyped_input_path_leaves_no_ledger_behind(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    run = cli(emulator, "run", "reclasify.csv")

    assert run.exit_code == 2
    assert "reclasify.csv: no such file; check the path" in run.stderr
    assert not (tmp_path / "wrapup-ledger.db").exists()
    assert requests_seen(emulator) == 0


def test_max_runtime_leaves_no_row_in_flight_whose_post_was_never_sent(
    make_emulator: Any, tmp_path: Path
) -> None:
    """At 60 requests/min the workers queue for the throttle; at the deadline those waiting to
    POST give up. Their rows go back to pending (nothing was sent), not in_flight."""
    emulator = make_emulator(EmulatorConfig(rate_limit=0, generate=20))
    source, results = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text(
        "conversation_id,wrapup_code\n"
        + "".join(f"{generated_conversation_id(i)},Sales\n" for i in range(20))
    )
    args = ("run", source, "--ledger", tmp_path / "l.db", "--results", results, "-q")

    stopped = cli(
        emulator, *args, "--lookup", "analytics", "--rate-limit", "60", "--max-runtime", "8s"
    )

    assert stopped.exit_code == 4, stopped.stderr
    rows, _ = read_results(results)
    statuses = {r["status"] for r in rows}
    assert "pending" in statuses and statuses <= {"applied", "pending"}, statuses  # no in_flight
    unsent = [r for r in rows if r["message"] == "stopped before its wrap-up was sent"]
    assert unsent and all(r["status"] == "pending" for r in unsent)
    posted = emulator.stats(detail=True)["posts_per_communication"]
    assert len(posted) == sum(r["status"] == "applied" for r in rows)

    rerun = cli(emulator, *args, "--rate-limit", "6000")

    assert rerun.exit_code == 0, rerun.stderr
    posted = emulator.stats(detail=True)["posts_per_communication"]
    assert len(posted) == 20 and set(posted.values()) == {1}


def test_progress_lines_off_a_terminal_carry_rate_eta_and_time(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("conversation_id,wrapup_code\nc0000001-0000-4000-8000-000000000000,Sales\n")

    run = cli(emulator, "run", source, "--ledger", tmp_path / "l.db")

    assert run.exit_code == 0, run.stderr
    assert "read 1 row\n" in run.stderr and "read 1 rows" not in run.stderr
    line = next(x for x in run.stderr.splitlines() if x.startswith("0/1 rows"))
    assert re.fullmatch(
        r"0/1 rows, applied 0, failed 0, [\d.]+ rows/min, ETA \S+, elapsed \S+", line
    ), line


def test_a_second_ctrl_c_is_not_shown_as_an_error(emulator: EmulatorHandle, tmp_path: Path) -> None:
    """Two SIGINTs to a real run: the first stops taking rows, the second abandons those in
    flight; the user sees what happened, not "Error:"."""
    emulator.config.latency_ms = 2000  # the second Ctrl-C comes while a request is in flight
    source = tmp_path / "in.csv"
    source.write_text(
        "conversation_id,wrapup_code\n"
        + "".join(f"c{n:07d}-0000-4000-8000-000000000000,Sales\n" for n in (1, 2, 3, 4, 5, 6))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESYSCLOUD_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "wrapup_batch", "run", str(source), "--ledger",
         str(tmp_path / "l.db"), "--concurrency", "1", "-q"],
        env={**env, **emulator.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while emulator.stats()["requests"].get(GET_CONVERSATION) is None:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 4, err
    assert "Error:" not in err and "Traceback" not in err
    assert "stopped: interrupted again" in err
    assert "the next run reads them back before it sends anything" in err
