"""wrapup_batch.fixes: the rows to fix, given back in the file's own layout.

Which record is row N must be exactly what `sources.read_rows` calls row N (the ledger's row
numbers come from there): checked here on generated CSV files (quoted line breaks, blank lines,
three line endings, BOMs, UTF-16) and on workbooks (empty rows above the header and between
the rows, a second sheet, typed cells).
"""

from __future__ import annotations

import codecs
import datetime as dt
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl.styles import Font, PatternFill  # type: ignore[import-untyped]

from wrapup_batch.errors import InputError
from wrapup_batch.fixes import (
    CSV_MEDIA_TYPE,
    XLSX_MEDIA_TYPE,
    RowOrderError,
    RowsToFix,
    _write_sheet,
    write_rows_to_fix,
)
from wrapup_batch.models import InputRow
from wrapup_batch.sources import HeaderPlace, SourceSpec, header_place, read_rows

IDS = [f"c00000{n:02d}-0000-4000-8000-000000000000" for n in range(1, 10)]


def rows_of(spec: SourceSpec) -> list[InputRow]:
    return [row for chunk in read_rows(spec) for row in chunk]


def values(row: InputRow) -> tuple[Any, ...]:
    """A row's content, without its number (which differs in the file given back)."""
    return (row.conversation_id, row.wrapup_code, row.notes, row.agent_id, row.problem)


def fix(spec: SourceSpec, rows: list[int], name: str = "in.csv") -> tuple[RowsToFix, bytes]:
    made = write_rows_to_fix(spec, rows, name)
    try:
        return made, made.path.read_bytes()
    finally:
        made.path.unlink()


# ---------------------------------------------------------------------------- CSV, generated

_TEXT = st.lists(st.sampled_from([*"ab é,;\t\"'=+-@", "\n", "\r\n", "\r"]), max_size=8).map("".join)
_ID = st.one_of(st.sampled_from(IDS), st.sampled_from(["", "not-an-id", " " + IDS[0].upper()]))
_DATA = st.tuples(_ID, st.one_of(st.sampled_from(["Sales", "", "=Sales"]), _TEXT), _TEXT)
#: Hand-written records that csv.writer would not write: a stray quote inside a value, a quoted
#: value with text after it, a short record, and a lone CR in an unquoted value in a file of
#: other line ends (a line break for pandas as for the csv module: two records, split at "|").
_RAW = ['{id}{d}Sa"les{d}x', '{id}{d}"Sales" {d}', "{id}{d}Sales", "{id}{d}Sa\r|les{d}x"]
#: A record: data cells, a blank line, or a hand-written line.
_RECORD = st.one_of(
    _DATA.map(lambda cells: ("data", cells)),
    st.just(("blank", ())),
    st.sampled_from(_RAW).map(lambda raw: ("raw", (raw,))),
)


def _quoted(cells: tuple[str, ...], delimiter: str, quote_all: bool) -> str:
    """A CSV line's cells as a spreadsheet writes them: a value holding the delimiter, a quote
    or a line break quoted (csv.writer leaves a lone CR unquoted when lines end with LF)."""
    special = (delimiter, '"', "\r", "\n")
    return delimiter.join(
        '"' + c.replace('"', '""') + '"' if quote_all or any(s in c for s in special) else c
        for c in cells
    )


def _csv_file(
    records: list[tuple[str, tuple[str, ...]]],
    delimiter: str,
    ending: str,
    quote_all: bool,
    final_ending: bool,
) -> tuple[str, list[tuple[str, bool]]]:
    """The file's text, and each record's own text with whether read_rows makes a row of it
    (a record whose cells are all blank is skipped, but counted), header first."""
    texts: list[tuple[str, bool]] = []
    header = ("conversation_id", "wrapup_code", "notes")
    for kind, cells in [("data", header), *records]:
        if kind == "blank":
            texts.append((ending, False))
        elif kind == "raw":
            parts = cells[0].format(id=IDS[1], d=delimiter).split("|")
            texts.extend((part, True) for part in parts[:-1])
            texts.append((parts[-1] + ending, True))
        else:
            texts.append(
                (_quoted(cells, delimiter, quote_all) + ending, any(c.strip() for c in cells))
            )
    if not final_ending and records and records[-1][0] != "blank":
        texts[-1] = (texts[-1][0].removesuffix(ending), texts[-1][1])
    return "".join(t for t, _ in texts), texts


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(_RECORD, min_size=1, max_size=12),
    delimiter=st.sampled_from([",", ";", "\t"]),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    quote_all=st.booleans(),
    final_ending=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-8-bom", "utf-16-le-bom", "utf-16-be-bom"]),
    data=st.data(),
)
def test_a_csv_gives_back_exactly_the_records_read_rows_numbers(
    records: list[tuple[str, tuple[str, ...]]],
    delimiter: str,
    ending: str,
    quote_all: bool,
    final_ending: bool,
    encoding: str,
    data: st.DataObject,
) -> None:
    text, texts = _csv_file(records, delimiter, ending, quote_all, final_ending)
    codec = encoding.removesuffix("-bom")
    bom = {"utf-8": codecs.BOM_UTF8, "utf-16-le": codecs.BOM_UTF16_LE}.get(codec, b"")
    bom = codecs.BOM_UTF16_BE if codec == "utf-16-be" else bom
    bom = bom if encoding.endswith("-bom") else b""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.csv"
        path.write_bytes(bom + text.encode(codec))
        spec = SourceSpec(path=path, chunk_size=3)
        read = rows_of(spec)
        # read_rows numbers records, not lines: row N is the Nth record under the header
        assert [r.row for r in read] == [n for n, (_, row) in enumerate(texts) if row and n]
        chosen = sorted(data.draw(st.sets(st.sampled_from([r.row for r in read]))) if read else [])
        made, body = fix(spec, chosen)

        # the header and the chosen records, each as its own text, in the file's encoding
        expected = texts[0][0] + "".join(texts[n][0] for n in chosen)
        assert body == bom + expected.encode(codec)
        assert made.filename == "in-to-fix.csv"
        charset = {"utf-8": "utf-8", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}[codec]
        assert made.media_type == f"{CSV_MEDIA_TYPE}; charset={charset}"
        # and read again, they are the same rows
        path.write_bytes(body)
        by_number = {r.row: r for r in read}
        assert [values(r) for r in rows_of(spec)] == [values(by_number[n]) for n in chosen]


def test_a_csv_keeps_its_bytes_quotes_and_line_ends(tmp_path: Path) -> None:
    header = b'"conversation_id";wrapup_code;notes;Call date\r\n'
    records = [
        f"{IDS[0]};Sales;ok;2026-11-02\r\n".encode(),
        f'{IDS[1]};Sale;"two\r\nlines; and a ""quote""";02/11/2026\r\n'.encode(),
        b"\r\n",  # a blank record: row 3, never given back
        f'{IDS[2]} ;=HYPERLINK("x");  spaced  ;\r\n'.encode(),
        f"{IDS[3]};Caf\u00e9 cr\u00e8me;;\r\n".encode(),
    ]
    path = tmp_path / "export.csv"
    path.write_bytes(codecs.BOM_UTF8 + header + b"".join(records))
    spec = SourceSpec(path=path)
    assert [r.row for r in rows_of(spec)] == [1, 2, 4, 5]

    made, body = fix(spec, [2, 4, 5], "export.csv")

    # byte for byte, formula-like cells included: this file is for uploading again
    assert body == codecs.BOM_UTF8 + header + records[1] + records[3] + records[4]
    assert (made.filename, made.media_type) == ("export-to-fix.csv", "text/csv; charset=utf-8")


def test_a_header_on_two_lines_is_one_record(tmp_path: Path) -> None:
    header = b'"Conversation\nId",wrapup_code\n'
    path = tmp_path / "in.csv"
    path.write_bytes(header + f"{IDS[0]},Sales\n{IDS[1]},X\n".encode())
    assert [r.row for r in rows_of(SourceSpec(path=path))] == [1, 2]

    assert fix(SourceSpec(path=path), [2])[1] == header + f"{IDS[1]},X\n".encode()


def test_a_tsv_keeps_its_name_and_rows_beyond_the_file_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "in.tsv"
    path.write_text(f"conversation_id\twrapup_code\n{IDS[0]}\tSales\n{IDS[1]}\tX", "utf-8")

    made, body = fix(SourceSpec(path=path), [2, 7, 9], "My list.tsv")

    assert body == f"conversation_id\twrapup_code\n{IDS[1]}\tX".encode()
    assert made.filename == "My list-to-fix.tsv"


def test_no_rows_gives_the_header_alone_and_unordered_rows_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"conversation_id,wrapup_code\n{IDS[0]},Sales\n{IDS[1]},X\n", "utf-8")

    assert fix(SourceSpec(path=path), [])[1] == b"conversation_id,wrapup_code\n"
    with pytest.raises(RowOrderError):
        write_rows_to_fix(SourceSpec(path=path), [2, 1], "in.csv")


def test_a_file_that_is_gone_is_a_clear_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        write_rows_to_fix(SourceSpec(path=tmp_path / "gone.csv"), [1], "gone.csv")


# ---------------------------------------------------------------------------- workbooks

WHEN = dt.datetime(2026, 11, 2, 9, 30)


def _workbook(path: Path) -> Path:
    """A workbook whose rows are on its second sheet, under two empty rows (one of them
    styled: a coloured band) and with an empty row between the rows."""
    book = openpyxl.Workbook()
    book.active.title = "Read me"
    book.active.append(["Conversations to reclassify"])
    sheet = book.create_sheet("Data")
    sheet.append([])
    sheet.append([None, None, None])
    for column in "ABCDE":
        sheet[f"{column}2"].fill = PatternFill("solid", fgColor="FFDD00")
    sheet.append(["Conversation Id", "Wrap-up", "Notes", "Call date", "Minutes"])
    for column in "ABCDE":
        sheet[f"{column}3"].font = Font(bold=True)
    sheet.append([IDS[0], "Sales", "ok", WHEN, 12])  # row 1
    sheet.append([IDS[1], "Sale", "=1+1 as text", WHEN.date(), 3.5])  # row 2
    sheet.append([])  # row 3: empty, never given back
    sheet.append(["not-an-id", "Sales", None, WHEN, 7])  # row 4
    sheet.append([IDS[3], "Sales", "=SUM(E4:E5)", None, 1])  # row 5: a formula cell
    sheet["E8"].number_format = "0.00"
    sheet["D5"].number_format = "dd/mm/yyyy hh:mm"
    sheet["C5"].data_type = "s"  # "=1+1 as text" is a text, not a formula
    sheet["C8"] = "=SUM(E4:E5)"  # a formula (no cached value: openpyxl never computes one)
    book.save(path)
    return path


def test_a_workbook_gives_back_its_sheet_with_typed_cells(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "list.xlsm")
    spec = SourceSpec(path=path, sheet="Data")
    assert header_place(spec) == HeaderPlace(workbook=True, sheet="Data", row=3)
    read = rows_of(spec)
    assert [r.row for r in read] == [1, 2, 4, 5]

    made = write_rows_to_fix(spec, [2, 4], "list.xlsm")
    try:
        assert (made.filename, made.media_type) == ("list-to-fix.xlsx", XLSX_MEDIA_TYPE)
        book = openpyxl.load_workbook(made.path)
        assert book.sheetnames == ["Data"]  # the sheet read; the others are not copied
        sheet = book["Data"]
        cells = [[c.value for c in r] for r in sheet.iter_rows()]
        assert cells[0] == [] or all(v is None for v in cells[0])
        assert all(v is None for v in cells[1])
        assert sheet["A2"].fill.fgColor.rgb == "00FFDD00"  # the band above the header kept
        assert cells[2] == ["Conversation Id", "Wrap-up", "Notes", "Call date", "Minutes"]
        assert sheet["A3"].font.b is True
        assert cells[3] == [IDS[1], "Sale", "=1+1 as text", WHEN.replace(hour=0, minute=0), 3.5]
        assert sheet["C4"].data_type == "s"  # text, not a formula
        assert sheet["D4"].number_format == "dd/mm/yyyy hh:mm"
        assert cells[4] == ["not-an-id", "Sales", None, WHEN, 7]
        assert isinstance(sheet["E5"].value, int)
        assert len(cells) == 5
        # uploaded again (one sheet: no --sheet needed), the same rows
        again = rows_of(SourceSpec(path=made.path))
        by_number = {r.row: r for r in read}
        assert [values(r) for r in again] == [values(by_number[n]) for n in (2, 4)]
    finally:
        made.path.unlink()


def test_a_formula_is_given_back_as_the_value_it_was_read_as(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "list.xlsx")
    spec = SourceSpec(path=path, sheet="Data")

    made = write_rows_to_fix(spec, [5], "list.xlsx")
    try:
        sheet = openpyxl.load_workbook(made.path)["Data"]
        # no cached value in the source (openpyxl wrote it), so read_rows read an empty note
        assert [c.value for c in sheet[4]] == [IDS[3], "Sales", None, None, 1]
        assert all(c.data_type != "f" for row in sheet.iter_rows() for c in row)
        assert sheet["E4"].number_format == "0.00"
    finally:
        made.path.unlink()


def test_rows_above_the_header_are_copied_whatever_they_hold(tmp_path: Path) -> None:
    """read_rows takes a sheet's first non-empty row as its header (a title above it is
    refused, with a hint): the writer still copies whatever is above the header it is told."""
    book = openpyxl.Workbook()
    book.active.title = "S"
    for row in (["Export of 2026-11-20"], [], ["conversation_id", "wrapup_code"]):
        book.active.append(row)
    book.active.append([IDS[0], "A"])
    book.active.append([IDS[1], "B"])
    book.save(tmp_path / "t.xlsx")
    out = tmp_path / "out.xlsx"

    _write_sheet(tmp_path / "t.xlsx", HeaderPlace(True, "S", 3), iter([2]), out)

    got = [[c.value for c in r] for r in openpyxl.load_workbook(out)["S"].iter_rows()]
    assert [[v for v in r if v is not None] for r in got] == [
        ["Export of 2026-11-20"],
        [],
        ["conversation_id", "wrapup_code"],
        [IDS[1], "B"],
    ]


def test_a_damaged_workbook_is_a_clear_input_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(InputError, match=r"bad\.xlsx") as info:
        write_rows_to_fix(SourceSpec(path=path), [1], "bad.xlsx")
    assert "Traceback" not in str(info.value)


def _temp_files() -> Iterator[Path]:
    yield from Path(tempfile.gettempdir()).glob("to-fix-*")


def test_nothing_is_left_behind_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"conversation_id,wrapup_code\n{IDS[0]},Sales\n{IDS[1]},X\n", "utf-8")
    before = set(_temp_files())
    with pytest.raises(RowOrderError):
        write_rows_to_fix(SourceSpec(path=path), [2, 2], "in.csv")
    assert set(_temp_files()) == before
