"""Rows to fix: the input rows of a run that are not fine, given back in the file's own layout,
so that the analyst corrects them and uploads the file again into the same ledger.

    write_rows_to_fix(spec, rows, filename) -> RowsToFix  (a temporary file the caller deletes)

`rows` are data row numbers as `sources.read_rows` numbers them (the ledger's `row`), in
ascending order. Which record is row N is decided here exactly as `read_rows` decides it
(`sources.header_place`): row N is the Nth record under the header, blank records counted, and
a CSV record is not a line (a quoted value may hold line breaks).

CSV: the file's own bytes. The records above the header and the header, then the wanted
records, each as its original text (quotes, spacing, line ending, line breaks inside quoted
values), in the file's encoding with its byte order mark if it had one. No cell is rewritten:
a cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`) is given back as the
analyst uploaded it, unlike the results CSV (`report.neutralise_sql`), because this file is
made to be uploaded again, and an apostrophe put in front of a note or a code would be read
back as part of it and written to Genesys Cloud.

XLSX/XLSM: an .xlsx workbook holding the one sheet that was read (the other sheets are not
copied), under the same name: the rows above the header and the header with their cell styles,
then the wanted rows, each cell with its value as openpyxl reads it (numbers and dates as
numbers and dates, with their number formats; a formula as the value it last computed, as
`read_rows` reads it) and a text cell always as text (openpyxl would otherwise turn a text
starting with `=` into a formula). Written with openpyxl's write-only mode from its read-only
mode: a large workbook is never held in memory. Not kept: column widths, merged cells, other
sheets, macros (an .xlsm comes back as .xlsx).
"""

from __future__ import annotations

import codecs
import csv
import os
import tempfile
from collections.abc import Iterable, Iterator
from copy import copy
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from openpyxl import Workbook, load_workbook  # type: ignore[import-untyped]
from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]

from wrapup_batch.errors import InputError, UsageError
from wrapup_batch.sources import HeaderPlace, SourceSpec, csv_layout, header_place

__all__ = ["CSV_MEDIA_TYPE", "XLSX_MEDIA_TYPE", "RowsToFix", "write_rows_to_fix"]

CSV_MEDIA_TYPE = "text/csv"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_CSV_SUFFIXES = (".csv", ".txt", ".tsv")
#: A byte order mark, and the codec that writes what follows it (the BOM written as bytes).
_BOM_CODECS: tuple[tuple[bytes, str], ...] = (  # longest first, as sources._BOMS
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_BOM_READING = frozenset({"utf-8-sig", "utf-16", "utf-32"})  # the decoders that drop a BOM
_FIELD_LIMIT = 2**31 - 1  # pandas, which read the rows, has no limit on a value's length


class RowsToFix(NamedTuple):
    path: Path  # a temporary file: the caller sends it and deletes it
    filename: str  # for the download: <stem>-to-fix.<csv|tsv|txt|xlsx>
    media_type: str


def write_rows_to_fix(spec: SourceSpec, rows: Iterable[int], filename: str) -> RowsToFix:
    """Write the records of `spec.path` whose data row numbers are `rows` (ascending), in the
    file's own layout, to a temporary file. `filename` is the file's name as the analyst
    knows it. InputError when the file cannot be read (the messages of `sources`)."""
    if spec.path is None:
        raise UsageError("rows to fix need an input file")
    place = header_place(spec)
    stem = Path(filename).stem or "rows"
    if place.workbook:
        suffix, media_type = ".xlsx", XLSX_MEDIA_TYPE
    else:
        own = Path(filename).suffix.lower()
        suffix = own if own in _CSV_SUFFIXES else ".csv"
        media_type = CSV_MEDIA_TYPE
    handle, name = tempfile.mkstemp(prefix="to-fix-", suffix=suffix)
    os.close(handle)
    out = Path(name)
    try:
        if place.workbook:
            _write_sheet(spec.path, place, iter(rows), out)
        else:
            charset = _write_csv(spec, place, iter(rows), out)
            media_type = f"{CSV_MEDIA_TYPE}; charset={charset}"
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return RowsToFix(out, f"{stem}-to-fix{suffix}", media_type)


class RowOrderError(ValueError):
    """The row numbers given are not ascending (a caller's mistake, not the file's)."""


def _next_wanted(rows: Iterator[int], after: int | None) -> int | None:
    """The next wanted row number, checking the order the merge relies on."""
    wanted = next(rows, None)
    if wanted is not None and after is not None and wanted <= after:
        raise RowOrderError(f"rows to fix must be ascending: {wanted} after {after}")
    return wanted


# ---- CSV


class _Lines:
    """The lines of a text file, as `csv.reader` asks for them, keeping those it took since
    the last `take()`: the original text of the record it has just read."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self._taken: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self._handle)
        self._taken.append(line)
        return line

    def take(self) -> str:
        text = "".join(self._taken)
        self._taken.clear()
        return text


def _bom_and_codec(encoding: str, head: bytes) -> tuple[bytes, str]:
    """The byte order mark the file starts with (when its decoder dropped it) and the codec
    that writes the text after it as the file has it."""
    if encoding in _BOM_READING:
        for bom, codec in _BOM_CODECS:
            if head.startswith(bom):
                return bom, codec
    if encoding == "utf-8-sig":
        return b"", "utf-8"  # UTF-8 without a BOM
    return b"", encoding


def _charset(bom: bytes, codec: str) -> str:
    if bom and codec != "utf-8":
        return codec.removesuffix("-le").removesuffix("-be")  # the BOM tells the byte order
    return codec


def _write_csv(spec: SourceSpec, place: HeaderPlace, rows: Iterator[int], out: Path) -> str:
    assert spec.path is not None
    path = spec.path
    encoding, delimiter, _headers = csv_layout(spec)
    with path.open("rb") as raw:
        bom, codec = _bom_and_codec(encoding, raw.read(4))
    # surrogateescape both ways: a byte the codec cannot decode comes back as it was
    encoder = codecs.getincrementalencoder(codec)(errors="surrogateescape")
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
    number = 0
    try:
        with (
            path.open(encoding=encoding, errors="surrogateescape", newline="") as handle,
            out.open("wb") as sink,
        ):
            sink.write(bom)
            lines = _Lines(handle)
            wanted = _next_wanted(rows, None)
            for number, _record in enumerate(csv.reader(lines, delimiter=delimiter), start=1):
                text = lines.take()
                data_row = number - place.row
                while wanted is not None and wanted < data_row:  # a row not in the file
                    wanted = _next_wanted(rows, wanted)
                if data_row <= 0 or data_row == wanted:
                    sink.write(encoder.encode(text))
                    if data_row > 0:
                        wanted = _next_wanted(rows, wanted)
                elif wanted is None:
                    break  # nothing more is wanted: the rest of the file is not read
            sink.write(encoder.encode("", final=True))
    except (UnicodeError, csv.Error) as exc:
        raise InputError(
            f"{path}: record {number + 1} cannot be read again to give it back ({exc}); "
            "download the results file instead, and correct the rows it lists."
        ) from None
    return _charset(bom, codec)


# ---- XLSX


def _write_sheet(path: Path, place: HeaderPlace, rows: Iterator[int], out: Path) -> None:
    assert place.sheet is not None
    number = 0
    try:
        with path.open("rb") as stream:
            source = load_workbook(stream, read_only=True, data_only=True)
            try:
                sheet = source[place.sheet]
                sheet.reset_dimensions()  # as sources: every row that is there
                book = Workbook(write_only=True)
                target = book.create_sheet(title=place.sheet)
                wanted = _next_wanted(rows, None)
                for number, record in enumerate(sheet.iter_rows(), start=1):
                    data_row = number - place.row
                    while wanted is not None and wanted < data_row:
                        wanted = _next_wanted(rows, wanted)
                    if data_row <= 0:  # the rows above the header, and the header
                        target.append([_cell(target, c, styled=True) for c in record])
                    elif data_row == wanted:
                        target.append([_cell(target, c, styled=False) for c in record])
                        wanted = _next_wanted(rows, wanted)
                    elif wanted is None:
                        break
            finally:
                source.close()
        book.save(out)
    except (InputError, RowOrderError):
        raise
    except Exception as exc:  # a damaged sheet: openpyxl/lxml raise assorted errors
        raise _sheet_error(path, place, number, exc) from None


def _sheet_error(path: Path, place: HeaderPlace, number: int, exc: Exception) -> InputError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return InputError(
        f"{path}, sheet {place.sheet!r}: row {number + 1} cannot be read again to give it back "
        f"({first}); download the results file instead, and correct the rows it lists."
    )


def _cell(target: Any, cell: Any, *, styled: bool) -> Any:
    """A write-only copy of a read-only cell: its value and number format (and its look, for
    the rows above the data); a text stays a text."""
    value = cell.value
    styled = styled and bool(getattr(cell, "has_style", False))
    if value is None and not styled:
        return None
    out = WriteOnlyCell(target, value=value)
    if isinstance(value, str):  # "=SUM(A1)" as text stays text: never a formula here
        out.data_type = "e" if cell.data_type == "e" else "s"
    number_format = getattr(cell, "number_format", None)
    if number_format and number_format != "General":
        out.number_format = number_format
    if styled:
        out.font = copy(cell.font)
        out.fill = copy(cell.fill)
        out.border = copy(cell.border)
        out.alignment = copy(cell.alignment)
    return out
