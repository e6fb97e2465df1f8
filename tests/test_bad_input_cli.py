"""Bad input through the CLI (issue 5): the corpus of tests/data/bad_inputs/ and generated files.

tests/test_sources.py proves what the library makes of each file; here the whole tool is run on
it against the emulator, and:
- a file-level error exits 2 before any API call (the emulator saw no request at all, not even
  for a token), with one line on stderr naming the file, the line/row or column, and what to
  try; no traceback; no results file;
- row-level errors become statuses with messages in the results, and the valid rows of the
  same file are applied (the emulator holds their wrap-ups and notes as given).

The corpus names conversations that exist nowhere; each file is copied with its ids (and the
code "Billing") swapped for the emulator's seeded ones, in the file's own encoding, so that its
valid rows can really be applied: A → c0000001 (a call, agent Alice), B → c0000004 (an email,
agent Carol), C → Carol's user id, "Billing" → "Support - Billing", "Facturación" (UTF-16 and
Latin-1 files) → "Support - Billing". Upper case and braces are kept as written.
"""

from __future__ import annotations

import csv
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest
from test_run_cli import CRM, Run, comm, conv, invoke, part, user, write_csv

from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle

BAD = Path(__file__).parent / "data" / "bad_inputs"
A = "6f0d5c38-2b6e-4a55-9c3e-0f5b8a1d2e01"
B = "a3c1e7f2-9d4b-4c8a-8e6f-1b2c3d4e5f60"
C = "0e9b7a6c-5d4f-4e3a-b2c1-d0e9f8a7b6c5"
SWAPS = {A: conv(1), B: conv(4), C: user(3), "Billing": "Support - Billing"}
BILLING = "9c000003-0000-4000-8000-000000000000"
SALES = "9c000001-0000-4000-8000-000000000000"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0)


def localise(name: str, tmp_path: Path, encoding: str = "utf-8") -> Path:
    """A copy of corpus file `name` naming the emulator's conversations (see the docstring)."""
    text = (BAD / name).read_bytes().decode(encoding)
    for old, new in SWAPS.items():
        text = re.sub(
            re.escape(old),
            lambda m, new=new: new.upper() if m.group(0).isupper() else new,
            text,
            flags=re.IGNORECASE,
        )
    text = text.replace("Facturación", "Support - Billing")
    target = tmp_path / name
    # UTF-16's codec writes the BOM the corpus file starts with; keep the other bytes as they were
    target.write_bytes(text.encode("utf-16" if encoding == "utf-16" else encoding))
    return target


def check_refused(run: Run, emulator: EmulatorHandle, *needles: str) -> str:
    """Exit 2, one line naming what is wrong, no traceback, and nothing sent at all."""
    output = run.stdout + run.stderr
    assert run.exit_code == 2, output
    assert "Traceback" not in output
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("Error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert emulator.stats()["requests"] == {}  # not even a token
    assert run.ordered == []  # no results file
    return lines[0]


def check_ran(run: Run, exit_code: int, statuses: dict[int, str]) -> None:
    output = run.stdout + run.stderr
    assert "Traceback" not in output
    assert run.exit_code == exit_code, output
    assert run.statuses() == statuses


# -- file-level errors: exit 2, nothing sent ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("empty.csv", ["is empty", "expected a header line with conversation_id and wrapup_code"]),
        (
            "missing_column.csv",
            ["no wrapup_code column in the header (line 1)", "'notes'", "--column"],
        ),
        ("no_header.csv", ["line looks like data", "add a header line"]),
        ("pipe_delimited.csv", ["line 1 seems to use '|'", "commas, semicolons or tabs"]),
        ("latin1.csv", ["cannot be decoded as UTF-8: line 3", "0xF3", "--encoding latin-1"]),
        ("binary_junk.csv", ["does not look like a CSV or XLSX file", "right file"]),
        ("unclosed_quote.csv", ["starts in row 2 is never closed", "closing quote"]),
        ("too_many_fields.csv", ["row 2 has 4 values but the header has 3", "must be quoted"]),
        ("no_rows.xlsx", ["sheet 'Sheet1' has no rows", "--sheet"]),
        ("not_a_workbook.xlsx", ["not a valid .xlsx workbook", "rename it to .csv"]),
    ],
)
def test_a_corpus_file_that_cannot_be_read_is_refused_before_any_request(
    emulator: EmulatorHandle, tmp_path: Path, name: str, needles: list[str]
) -> None:
    source = tmp_path / name
    shutil.copy(BAD / name, source)

    run = invoke(emulator, tmp_path, source)

    check_refused(run, emulator, str(source), *needles)


def test_a_missing_file_is_refused(emulator: EmulatorHandle, tmp_path: Path) -> None:
    run = invoke(emulator, tmp_path, tmp_path / "nope.csv")
    check_refused(run, emulator, f"{tmp_path / 'nope.csv'}: no such file", "check the path")


def test_a_directory_is_refused(emulator: EmulatorHandle, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    run = invoke(emulator, tmp_path, folder)
    check_refused(run, emulator, f"{folder} is a directory", "give the file's path")


def test_an_unreadable_file_is_refused(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tests run as root, whom chmod 000 does not stop; so the refusal the operating system
    # would give another user is simulated where the tool opens the file (Path.open).
    source = write_csv(tmp_path / "locked.csv", ["conversation_id", "wrapup_code"], [])
    real_open = Path.open

    def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == source:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    run = invoke(emulator, tmp_path, source)
    check_refused(run, emulator, f"{source} cannot be read: permission denied", "permissions")


def test_a_failing_query_is_refused(emulator: EmulatorHandle, tmp_path: Path) -> None:
    crm = shutil.copy(CRM, tmp_path / "crm.sqlite")
    run = invoke(
        emulator, tmp_path, "--source-url", f"sqlite:///{crm}", "--query", "SELEC * FROM x"
    )
    check_refused(run, emulator, f"query on sqlite:///{crm}", "syntax error", "Check the SQL")


def test_a_query_without_a_conversation_id_column_is_refused(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    crm = shutil.copy(CRM, tmp_path / "crm.sqlite")
    run = invoke(
        emulator,
        tmp_path,
        "--source-url",
        f"sqlite:///{crm}",
        "--query",
        "SELECT wrapup_code, notes FROM wrapup_backfill",
    )
    check_refused(
        run,
        emulator,
        "no conversation_id column in the query's result",
        "Columns returned: 'wrapup_code', 'notes'",
        "AS conversation_id",
    )


# -- readable files: row-level statuses, valid rows applied -----------------------------------


def test_a_header_only_file_is_an_empty_run_with_no_request(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = invoke(emulator, tmp_path, localise("header_only.csv", tmp_path))
    check_ran(run, 0, {})
    assert "the input has no rows" in run.stderr
    assert emulator.stats()["requests"] == {}


def test_utf16_with_a_bom_is_read_and_its_accents_reach_genesys(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = localise("utf16_bom.csv", tmp_path, "utf-16")
    assert source.read_bytes().startswith(b"\xff\xfe")
    run = invoke(emulator, tmp_path, source)
    check_ran(run, 0, {1: "applied"})
    assert emulator.state.wrapups[comm(1, 3)].notes == "Résumé envoyé"
    assert run.rows[1]["notes"] == "Résumé envoyé"


def test_latin1_with_its_encoding_is_applied_as_written(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = localise("latin1.csv", tmp_path, "latin-1")
    refused = invoke(emulator, tmp_path, source)
    check_refused(refused, emulator, "line 3", "--encoding latin-1")

    run = invoke(emulator, tmp_path, source, "--encoding", "latin-1")

    check_ran(run, 0, {1: "applied", 2: "applied"})
    assert emulator.state.wrapups[comm(4, 3)].notes == "café"
    assert emulator.state.wrapups[comm(1, 3)].notes == "ok"


def test_quoted_newlines_and_quotes_reach_genesys_as_written(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = invoke(emulator, tmp_path, localise("quoted_newlines.csv", tmp_path))
    # Row 1's code is "Support - Billing, refunds" (a comma inside quotes): no such code.
    check_ran(run, 1, {1: "unknown_code", 2: "applied"})
    assert "Support - Billing, refunds" in run.rows[1]["message"]
    assert run.rows[1]["notes"] == "line one\nline two, with a comma"
    assert emulator.state.wrapups[comm(4, 3)].notes == 'say "hi"'
    assert comm(1, 3) not in emulator.state.wrapups


def test_trailing_blank_lines_are_skipped_and_row_numbers_kept(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = invoke(emulator, tmp_path, localise("trailing_blank_lines.csv", tmp_path))
    check_ran(run, 0, {1: "applied", 3: "applied"})  # line 3 was blank: B is row 3
    assert emulator.stats()["wrapups"][comm(1, 3)] == BILLING


def test_a_bom_and_genesys_style_headers(emulator: EmulatorHandle, tmp_path: Path) -> None:
    source = localise("bom.csv", tmp_path)
    assert source.read_bytes().startswith(b"\xef\xbb\xbf")
    run = invoke(emulator, tmp_path, source)
    check_ran(run, 0, {1: "applied"})
    assert emulator.stats()["wrapups"][comm(1, 3)] == BILLING


def test_excel_formulas_are_sent_as_written_and_neutralised_in_the_results(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run = invoke(emulator, tmp_path, localise("formulas.csv", tmp_path))
    check_ran(run, 1, {1: "invalid", 2: "unknown_code", 3: "applied"})
    assert run.rows[1]["conversation_id"].startswith("'=HYPERLINK(")
    assert "is not a conversation id" in run.rows[1]["message"]
    assert (run.rows[2]["wrapup_code"], run.rows[2]["notes"]) == ("'=1+1", "'@SUM(A1)")
    assert run.rows[3]["notes"] == "'=cmd|' /C calc'!A0"
    assert emulator.state.wrapups[comm(4, 3)].notes == "=cmd|' /C calc'!A0"  # as given


def test_ids_with_braces_and_upper_case(emulator: EmulatorHandle, tmp_path: Path) -> None:
    source = localise("ids_braces_upper.csv", tmp_path)
    assert "{C0000001-0000-4000-8000-000000000000}" in source.read_text(encoding="utf-8")
    run = invoke(emulator, tmp_path, source)
    check_ran(run, 0, {1: "applied", 2: "applied"})
    assert [r["conversation_id"] for r in run.ordered] == [conv(1), conv(4)]
    assert run.rows[2]["agent_id"] == user(3)
    assert run.rows[2]["participant_id"] == part(4, 3)
    wrapups = emulator.stats()["wrapups"]
    assert (wrapups[comm(1, 3)], wrapups[comm(4, 3)]) == (BILLING, SALES)


def test_a_ten_megabyte_field_is_a_row_level_outcome(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    csv.field_size_limit(sys.maxsize)  # for reading the results back: they hold the 10 MB
    big = "n" * 10_000_000
    source = tmp_path / "big.csv"
    source.write_text(
        f'conversation_id,wrapup_code,notes\n{conv(1)},Sales,"{big}"\n{conv(4)},Sales,short\n'
        + "z" * 10_000_000
        + ",Sales,\n",
        encoding="utf-8",
    )

    run = invoke(emulator, tmp_path, source)

    check_ran(run, 1, {1: "rejected", 2: "applied", 3: "invalid"})
    # Genesys refuses a 10 MB request (the emulator: 413, as aiohttp caps bodies at 1 MB); the
    # row says so with the HTTP status; a 10 MB id is an invalid row with a short message.
    assert run.rows[1]["http_status"] == "413"
    assert len(run.rows[3]["message"]) < 200
    assert "is not a conversation id" in run.rows[3]["message"]
    assert emulator.state.wrapups[comm(4, 3)].notes == "short"


def test_an_xlsx_with_rows_only_below_blank_ones(emulator: EmulatorHandle, tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append([])
    sheet.append(["Conversation ID", "Wrap-up Code"])
    sheet.append([conv(1), "Sales"])
    sheet.append(["=1+1", "Sales"])
    source = tmp_path / "in.xlsx"
    workbook.save(source)

    run = invoke(emulator, tmp_path, source)

    check_ran(run, 1, {1: "applied", 2: "invalid"})


def test_a_hundred_thousand_copies_of_one_row_cost_one_post(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = tmp_path / "copies.csv"
    source.write_text(
        "conversation_id,wrapup_code\n" + f"{conv(1)},Sales\n" * 100_000, encoding="utf-8"
    )
    started = time.monotonic()

    run = invoke(emulator, tmp_path, source, rate_limit="100000")

    elapsed = time.monotonic() - started
    assert run.exit_code == 0, run.stderr
    assert len(run.ordered) == 100_000
    assert run.ordered[0]["status"] == "applied"
    assert {r["status"] for r in run.ordered[1:]} == {"duplicate"}
    assert run.ordered[-1]["message"] == "same as row 1"
    stats = emulator.stats(detail=True)
    assert stats["posts_per_communication"] == {comm(1, 3): 1}
    assert stats["post_attempts"] == 1
    assert elapsed < 60, elapsed  # ingest, dedupe and a 100k-line results file
    print(f"\n100k copies of one row: {elapsed:.1f} s")
