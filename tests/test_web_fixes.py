"""The page's rows to fix, round trip: upload a file with bad rows, apply, download the rows to
fix (in the uploaded layout), correct them, upload them again into the same ledger, apply:
every row ends fine, and the emulator saw one POST per communication, never two."""

from __future__ import annotations

import codecs
import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest
from openpyxl.styles import PatternFill  # type: ignore[import-untyped]
from web_helpers import Web, apply, csrf, sign_in, token_of, upload, wait_for_end, web

from wrapup_batch.emulator import EmulatorHandle
from wrapup_batch.ledger import Ledger

__all__ = ["web"]  # the fixture, imported for pytest

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BAD_ID = "c0000002-0000-4000-8000-00000000000"  # one digit short
GOOD_ID = "c0000002-0000-4000-8000-000000000000"


def conv(n: int) -> str:
    return f"c00000{n:02d}-0000-4000-8000-000000000000"


#: (conversation_id, wrapup_code, notes) rows: three fine, then an unknown code (with a note on
#: two lines), an id that is not one, and two codes for one conversation (a conflict).
ROWS = [
    (conv(1), "Support - Technical", "ok"),
    (conv(3), "Sale", 'Caller said:\n"call me back"'),  # unknown_code: "Sales" was meant
    (conv(5), "Support - Technical", "line one\nline two"),
    (BAD_ID, "Support - Billing", ""),  # invalid
    (conv(4), "Complaint", "late delivery"),  # conflict with the next row
    (conv(4), "Sales", "late delivery"),
    (conv(6), "Callback Scheduled", ""),
]
FIRST_COUNTS = {"applied": 3, "unknown_code": 1, "invalid": 1, "conflict": 2}


def _run(web: Web, preview_url: str) -> tuple[int, dict[str, Any]]:
    answer = apply(web, token_of(preview_url))
    assert answer.status_code == 303, answer.text.split("<main")[-1][:1500]
    run_id = int(answer.headers["location"].rsplit("/", 1)[1])
    return run_id, wait_for_end(web, run_id)


def _posts(emulator: EmulatorHandle) -> dict[str, int]:
    return dict(emulator.stats(detail=True)["posts_per_communication"])


def _csv_bytes(delimiter: str, ending: str, bom: bool) -> bytes:
    def cell(value: str) -> str:
        if any(c in value for c in (delimiter, '"', "\n")):
            return '"' + value.replace('"', '""') + '"'
        return value

    lines = [delimiter.join(("conversation_id", "wrapup_code", "notes"))]
    lines += [delimiter.join(cell(v) for v in row) for row in ROWS]
    # a note's line break is the file's own line ending, as a spreadsheet saves it
    text = ending.join(line.replace("\n", ending) for line in lines)
    return (codecs.BOM_UTF8 if bom else b"") + (text + ending).encode("utf-8")


@pytest.mark.parametrize(
    ("delimiter", "ending", "bom"),
    [(",", "\n", False), (";", "\r\n", True)],
    ids=["comma-lf", "semicolon-crlf-bom"],
)
def test_csv_rows_to_fix_corrected_and_uploaded_again_all_end_fine(
    web: Web, emulator: EmulatorHandle, tmp_path: Path, delimiter: str, ending: str, bom: bool
) -> None:
    original = _csv_bytes(delimiter, ending, bom)
    source = tmp_path / "Reclass list.csv"
    source.write_bytes(original)
    sign_in(web)

    first, state = _run(web, upload(web, source))
    assert state["state"] == "done" and state["counts"] == FIRST_COUNTS
    after_first = _posts(emulator)
    assert len(after_first) == 3 and set(after_first.values()) == {1}

    download = web.client.get(f"/runs/{first}/to-fix")
    assert download.status_code == 200
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    assert download.headers["content-disposition"] == (
        "attachment; filename*=utf-8''Reclass%20list-to-fix.csv"
    )
    body = download.content
    # the uploaded layout: its BOM, header, delimiter, line ends and quoted line breaks, and
    # exactly the four records that are not fine, each as it was in the file
    records = original.removeprefix(codecs.BOM_UTF8).split(ending.encode())
    header = records[0] + ending.encode()
    expected = (
        (codecs.BOM_UTF8 if bom else b"")
        + header
        + ending.encode().join(records[2:4])  # row 2: two lines (its quoted note)
        + ending.encode()
        + ending.encode().join(records[6:9])  # rows 4, 5, 6 (row 3's two lines skipped)
        + ending.encode()
    )
    assert body == expected
    # the first address of the download leads to the same file
    assert web.client.get(f"/runs/{first}/to-fix.csv").content == body

    # the analyst corrects them: the code, the id, and one code for the conflicting rows
    d = delimiter.encode()
    fixed = (
        body.replace(d + b"Sale" + d, d + b"Sales" + d)
        .replace(BAD_ID.encode() + d, GOOD_ID.encode() + d)
        .replace(d + b"Sales" + d + b"late", d + b"Complaint" + d + b"late")
    )
    assert fixed.count(b"Complaint") == 2 and GOOD_ID.encode() in fixed
    again = tmp_path / "Reclass list-to-fix.csv"
    again.write_bytes(fixed)

    second, state = _run(web, upload(web, again))

    assert state["state"] == "done"
    assert state["counts"] == {"applied": 3, "duplicate": 1}  # conv 4: once, and its twin
    posts = _posts(emulator)
    assert len(posts) == 6 and set(posts.values()) == {1}  # nothing written twice
    assert {k: posts[k] for k in after_first} == after_first
    # nothing is left to fix: the second download is the header alone
    assert (
        web.client.get(f"/runs/{second}/to-fix").content
        == (b"\xef\xbb\xbf" if bom else b"") + header
    )
    runs = Ledger.open(str(web.ledger)).list_runs()
    assert [r.id for r in runs] == [first, second]


WHEN = dt.datetime(2026, 11, 2, 9, 30)


def review_workbook(path: Path) -> Path:
    """The rows on a second sheet, under an empty coloured band, with a date column."""
    book = openpyxl.Workbook()
    book.active.title = "Read me"
    book.active.append(["Conversations to reclassify: the rows are on the sheet Data"])
    sheet = book.create_sheet("Data")
    sheet.append([None, None, None, None])
    for column in "ABCD":
        sheet[f"{column}1"].fill = PatternFill("solid", fgColor="FFDD00")
    sheet.append(["Conversation Id", "Wrap-up", "Notes", "Call date"])
    for n, (conversation, code, notes) in enumerate(ROWS):
        sheet.append([conversation, code, notes or None, WHEN + dt.timedelta(days=n)])
        sheet.cell(row=sheet.max_row, column=4).number_format = "dd/mm/yyyy hh:mm"
    book.save(path)
    return path


def test_xlsx_rows_to_fix_come_back_as_a_workbook_and_upload_again(
    web: Web, emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = review_workbook(tmp_path / "quality review.xlsx")
    sign_in(web)

    preview_url = upload(web, source, sheet="Data")
    first, state = _run(web, preview_url)
    assert state["state"] == "done" and state["counts"] == FIRST_COUNTS
    after_first = _posts(emulator)

    download = web.client.get(f"/runs/{first}/to-fix")
    assert download.status_code == 200
    assert download.headers["content-type"] == XLSX
    assert download.headers["content-disposition"] == (
        "attachment; filename*=utf-8''quality%20review-to-fix.xlsx"
    )
    # the link on the run page is this download
    assert f'href="/runs/{first}/to-fix"' in web.client.get(f"/runs/{first}").text
    # the /to-fix.csv address leads to the workbook too (nothing CSV is served for a workbook)
    moved = web.client.get(f"/runs/{first}/to-fix.csv", follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"] == f"/runs/{first}/to-fix"

    book = openpyxl.load_workbook(io.BytesIO(download.content))
    assert book.sheetnames == ["Data"]
    sheet = book["Data"]
    assert sheet["A1"].fill.fgColor.rgb == "00FFDD00"  # the band above the header
    assert [c.value for c in sheet[2]] == ["Conversation Id", "Wrap-up", "Notes", "Call date"]
    rows = [[c.value for c in r] for r in sheet.iter_rows(min_row=3)]
    assert rows == [
        [conv(3), "Sale", 'Caller said:\n"call me back"', WHEN + dt.timedelta(days=1)],
        [BAD_ID, "Support - Billing", None, WHEN + dt.timedelta(days=3)],
        [conv(4), "Complaint", "late delivery", WHEN + dt.timedelta(days=4)],
        [conv(4), "Sales", "late delivery", WHEN + dt.timedelta(days=5)],
    ]
    assert sheet["D3"].number_format == "dd/mm/yyyy hh:mm"  # the date stays a date

    # the analyst corrects the cells and saves the workbook
    sheet["B3"] = "Sales"
    sheet["A4"] = GOOD_ID
    sheet["B6"] = "Complaint"
    again = tmp_path / "quality review-to-fix.xlsx"
    book.save(again)

    second, state = _run(web, upload(web, again))  # one sheet: no sheet to choose

    assert state["state"] == "done"
    assert state["counts"] == {"applied": 3, "duplicate": 1}
    posts = _posts(emulator)
    assert len(posts) == 6 and set(posts.values()) == {1}
    assert {k: posts[k] for k in after_first} == after_first
    left = openpyxl.load_workbook(io.BytesIO(web.client.get(f"/runs/{second}/to-fix").content))
    assert [[c.value for c in r] for r in left["Data"].iter_rows(min_row=2)] == [
        ["Conversation Id", "Wrap-up", "Notes", "Call date"]
    ]

    # another sheet chosen on the first upload after its run: its row numbers are not the
    # run's, so nothing is given back until the run's sheet is chosen again
    def choose(sheet: str) -> None:
        answer = web.client.post(
            f"/runs/{token_of(preview_url)}/sheet",
            data={"csrf_token": csrf(web), "sheet": sheet},
            follow_redirects=False,
        )
        assert answer.status_code == 303

    choose("Read me")
    refused = web.client.get(f"/runs/{first}/to-fix")
    assert refused.status_code == 400
    assert "Another sheet of quality review.xlsx was chosen after this run" in refused.text
    choose("Data")
    assert web.client.get(f"/runs/{first}/to-fix").content[:2] == b"PK"


def test_rows_to_fix_of_a_command_line_run_point_at_its_results(
    web: Web, emulator: EmulatorHandle, tmp_path: Path
) -> None:
    ledger = Ledger.open(str(web.ledger))
    run_id = ledger.start_run(source="nightly.csv", options={}, dry_run=True)
    ledger.close()
    sign_in(web)

    answer = web.client.get(f"/runs/{run_id}/to-fix")

    assert answer.status_code == 400
    assert "not started from this page: use its results file" in answer.text
    assert re.search(r"Traceback|File &#34;|File \"", answer.text) is None
