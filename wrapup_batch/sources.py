"""Input sources: a CSV/XLSX file or a SQL query, read in chunks of normalised `InputRow`s.

    read_rows(spec) -> Iterator[list[InputRow]]

Nothing here holds more than one chunk in memory: CSV goes through pandas' C parser with
`chunksize`, XLSX through openpyxl's read-only streaming mode, SQL through a server-side
cursor (`stream_results`) read in `partitions`.

Columns. `conversation_id` and `wrapup_code` are required, `notes` and `agent_id` optional;
every other column is ignored. A header matches a canonical name when the two are equal after
`normalise_header` (case, surrounding spaces, runs of spaces/hyphens/underscores), and also
when they are equal with the underscores dropped, so that `ConversationId`, `Conversation ID`
and `Wrap-up Code` (as Genesys Cloud's own exports spell them) work without `--column`.
`SourceSpec.columns` maps a canonical name to the input's own header and takes precedence.

Rows. The header is line 1 of a CSV, the first non-empty row of a sheet, the column names of
a query. `InputRow.row` numbers the records under it from 1. A record whose used columns are
all empty (a blank line, a line of bare delimiters, an empty spreadsheet row) is skipped but
still counted, so row N stays spreadsheet row N + 1 (header on row 1), and line N + 1 of a CSV
without multi-line values. An input with a header and no rows yields no chunks; it is not an
error here (the runner reports "no rows"). Row-level problems (an id that is not a UUID, an
empty code) never raise: the row carries a `problem` message naming the column.

Files. Encoding: UTF-8 with or without a BOM by default, UTF-16/UTF-32 recognised by their
BOM, anything else through `SourceSpec.encoding`. The delimiter (`,` `;` or tab) is detected on
the header line. The format is XLSX when the file is a zip archive (whatever its name), CSV
otherwise. Every file-level problem raises `InputError` with one message for a person that
names the file, the line/row or column, and what to try; no pandas, openpyxl, SQLAlchemy or
codec exception escapes. Problems found in the middle of the stream (a bad byte at row 500 000)
are raised when reached.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd
import sqlalchemy as sa
from openpyxl import load_workbook  # type: ignore[import-untyped]

from .errors import InputError, UsageError
from .models import InputRow

__all__ = [
    "CANONICAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "HeaderPlace",
    "SourceSpec",
    "csv_layout",
    "describe_source",
    "header_place",
    "mask_url",
    "match_columns",
    "normalise_conversation_id",
    "normalise_header",
    "read_header",
    "read_rows",
    "sheet_names",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("conversation_id", "wrapup_code")
OPTIONAL_COLUMNS: tuple[str, ...] = ("notes", "agent_id")
CANONICAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

DELIMITERS: tuple[str, ...] = (",", ";", "\t")
_OTHER_DELIMITERS = "|^~:"
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}

_HEAD_BYTES = 64 * 1024  # what is sniffed for format, encoding, binary content and header
_ROW_VALUE_LIMIT = 200  # raw values kept on an invalid row
_MESSAGE_VALUE_LIMIT = 60  # raw values quoted in a message

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the pre-2007 .xls format
_EXCEL_SUFFIXES = frozenset({".xlsx", ".xlsm"})
_BOMS: tuple[tuple[bytes, str], ...] = (  # longest first: UTF-32-LE's BOM starts like UTF-16-LE's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

_UUID_RE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}", re.IGNORECASE
)
#: The hyphenated form: its canonical form is its lower case (no uuid.UUID round trip needed).
_HYPHENATED_UUID_RE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
_BOM_AS_8_BIT = "\u00ef\u00bb\u00bf"  # a UTF-8 BOM read as cp1252 or latin-1: "ï»¿"
_SEPARATOR_RUN_RE = re.compile(r"[\s_\-]+")
_URL_PASSWORD_RE = re.compile(r":[^:/@\s]*@")


@dataclass(frozen=True)
class SourceSpec:
    """Where the rows come from: a file (`path`) or a SQL query (`source_url` + `query`)."""

    path: Path | None = None  # CSV or XLSX file
    encoding: str | None = None  # CSV only; None: UTF-8 (BOM or not) or UTF-16/32 by BOM
    sheet: str | int | None = None  # XLSX sheet name or 0-based index; default the first
    source_url: str | None = None  # SQLAlchemy URL for a SQL source
    query: str | None = None  # SQL text, run exactly as given
    columns: Mapping[str, str] = field(default_factory=dict)  # canonical name -> input header
    chunk_size: int = 50_000  # rows per chunk: one ledger transaction each


# --------------------------------------------------------------------------- public helpers


def normalise_header(name: str) -> str:
    """A header as compared with the canonical names: `" Conversation-ID "` -> `"conversation_id"`.

    Case-folded, surrounding spaces (and a stray BOM) stripped, and every run of spaces,
    hyphens and underscores turned into one `_`.
    """
    name = name.strip().strip("\ufeff").removeprefix(_BOM_AS_8_BIT).strip()
    return _SEPARATOR_RUN_RE.sub("_", name.casefold())


def normalise_conversation_id(value: str) -> str | None:
    """The canonical (lower-case, hyphenated) form of a UUID, or None when `value` is not one.

    Accepts surrounding spaces, upper case, `{braces}`, and the 32-digit form without hyphens.
    """
    text = value.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if _HYPHENATED_UUID_RE.fullmatch(text):  # the usual form: a million rows read faster
        return text.lower()
    if not _UUID_RE.fullmatch(text):
        return None
    return str(uuid.UUID(text))


def describe_source(spec: SourceSpec) -> str:
    """A short name for the source, for messages, logs and the ledger; never a password."""
    if spec.path is not None:
        if spec.sheet is not None:
            return f"{spec.path} (sheet {spec.sheet!r})"
        return str(spec.path)
    if spec.source_url is not None:
        return f"query on {mask_url(spec.source_url)}"
    return "(no input)"


def mask_url(url: str) -> str:
    """`url` with its password replaced by `***` (also when SQLAlchemy cannot parse it)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # any parse failure: fall back to a regex that needs no parsing
        return _URL_PASSWORD_RE.sub(":***@", url)


def read_rows(spec: SourceSpec) -> Iterator[list[InputRow]]:
    """Chunks (non-empty lists of at most `chunk_size`) of normalised rows, in input order.

    A generator: nothing is opened until the first `next()`, and file-level problems raise
    `InputError` (or `UsageError` for an inconsistent spec) from there or when reached.
    """
    _check_spec(spec)
    if spec.path is not None:
        yield from _read_file(spec, spec.path)
    else:
        yield from _read_sql(spec)


def check_source(spec: SourceSpec) -> None:
    """Raise at once what `read_rows` would raise first for a spec or a file that cannot be
    opened (no such file, a directory, unreadable): called before a run opens its ledger, so
    that a mistyped path leaves nothing behind."""
    _check_spec(spec)
    if spec.path is not None:
        _read_head(spec.path)


# --------------------------------------------------------------------------- spec and columns


def _check_spec(spec: SourceSpec) -> None:
    if spec.path is not None and (spec.source_url is not None or spec.query is not None):
        raise UsageError("give either an input file or --source-url with --query, not both")
    if spec.path is None:
        if spec.source_url is None and spec.query is None:
            raise UsageError("no input: give a CSV/XLSX file, or --source-url with --query")
        if spec.source_url is None:
            raise UsageError("--query needs --source-url (the database to run it on)")
        if spec.query is None or not spec.query.strip():
            raise UsageError("--source-url needs --query or --query-file (the SQL to run)")
    if spec.chunk_size < 1:
        raise UsageError(f"chunk size must be at least 1, not {spec.chunk_size}")
    for canonical in spec.columns:
        if normalise_header(canonical) not in CANONICAL_COLUMNS:
            raise UsageError(
                f"--column {canonical}=...: {canonical!r} is not an input column; "
                f"the columns are {', '.join(CANONICAL_COLUMNS)}"
            )


def _header_key(name: str) -> str:
    return normalise_header(name).replace("_", "")


#: Other headers taken for a column when no header matches its own name: those of Genesys
#: Cloud's own exports ("Conversation Id" and "Wrap-up Code" already match as they are).
HEADER_ALIASES: Mapping[str, tuple[str, ...]] = {
    "conversation_id": ("Conversation",),
    "wrapup_code": ("Wrap-up", "Wrap-up Name", "Wrap-up Code Name"),
}


def _resolve_columns(
    headers: Sequence[str], spec: SourceSpec, where: str, what: str
) -> dict[str, int] | str:
    """Canonical name -> position in `headers`, or a message saying what is wrong.

    `where` names the source ("reclassify.csv"), `what` the header ("the header (line 1)").
    """
    keys = [_header_key(h) for h in headers]
    mapping = {normalise_header(k): v for k, v in spec.columns.items()}
    positions: dict[str, int] = {}
    for canonical in CANONICAL_COLUMNS:
        wanted = mapping.get(canonical, canonical)
        hits = _column_hits(keys, canonical, mapping)
        if canonical in mapping and not hits:
            return (
                f"{where}: --column {canonical}={wanted} names a column that is not in {what}. "
                f"Columns found: {_list_headers(headers)}."
            )
        if len(hits) > 1:
            found = " and ".join(f"{headers[i]!r} (column {i + 1})" for i in hits[:3])
            return (
                f"{where}: {found} in {what} both match {canonical}; rename one, or pick one "
                f"with --column {canonical}=HEADER."
            )
        if hits:
            positions[canonical] = hits[0]
    missing = [c for c in REQUIRED_COLUMNS if c not in positions]
    if missing:
        maps = " ".join(f"--column {c}=YourHeader" for c in missing)
        return (
            f"{where}: no {' and no '.join(missing)} column in {what}. "
            f"Columns found: {_list_headers(headers)}. Expected columns: conversation_id and "
            "wrapup_code (required), notes and agent_id (optional), matched ignoring case and "
            f"spaces; to use other headers, map them with {maps}."
        )
    return positions


def _column_hits(keys: Sequence[str], canonical: str, mapping: Mapping[str, str]) -> list[int]:
    """The positions of the headers (as `_header_key`s) that match a canonical column: its
    `--column` header when mapped, else its own name, else one of its aliases."""
    wanted = _header_key(mapping.get(canonical, canonical))
    hits = [i for i, key in enumerate(keys) if key == wanted]
    if not hits and canonical not in mapping:
        aliases = {_header_key(alias) for alias in HEADER_ALIASES.get(canonical, ())}
        hits = [i for i, key in enumerate(keys) if key in aliases]
    return hits


def _looks_like_header(cells: Sequence[str]) -> bool:
    """Whether these cells hold both required columns (by name or alias)."""
    keys = {_header_key(c) for c in cells}
    return all(
        _header_key(c) in keys or any(_header_key(a) in keys for a in HEADER_ALIASES.get(c, ()))
        for c in REQUIRED_COLUMNS
    )


def _list_headers(headers: Sequence[str]) -> str:
    shown = [repr(_truncate(h, 40)) for h in headers[:20]]
    more = f" and {len(headers) - 20} more" if len(headers) > 20 else ""
    return (", ".join(shown) + more) if shown else "none"


def _missing_column_hints(headers: Sequence[str], *, csv_file: bool = True) -> str:
    """Extra advice when the "header" looks like a data row or like an unsplit line."""
    hints = ""
    if headers and normalise_conversation_id(headers[0]) is not None:
        hints += (
            " The first line looks like data, not a header: add a header line such as "
            "conversation_id,wrapup_code."
        )
    unsplit = len(headers) == 1 and any(c in headers[0] for c in _OTHER_DELIMITERS + " ")
    if csv_file and unsplit:
        hints += " Only one column was found: the delimiter must be a comma, a semicolon or a tab."
    return hints


def _header_further_down(lines: Sequence[Sequence[str]], what: str) -> str:
    """A hint when a later line or row (within the first few) holds the header."""
    for offset, cells in enumerate(lines[:20], start=2):
        if _looks_like_header(cells):
            above = offset - 1
            return (
                f" The header seems to be on {what} {offset}, not {what} 1: delete the "
                f"{above} {what}(s) above it, so that the header comes first."
            )
    return ""


# --------------------------------------------------------------------------- rows


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _make_row(number: int, values: Mapping[str, str]) -> InputRow | None:
    """One normalised row, or None when every used column is empty (a blank record)."""
    raw_id = values["conversation_id"]
    raw_code = values["wrapup_code"]
    raw_notes = values.get("notes", "")
    raw_agent = values.get("agent_id", "")
    if not (raw_id.strip() or raw_code.strip() or raw_notes.strip() or raw_agent.strip()):
        return None

    problems: list[str] = []
    conversation_id = normalise_conversation_id(raw_id)
    if not raw_id.strip():
        problems.append("conversation_id is empty")
    elif conversation_id is None:
        problems.append(
            f"conversation_id {_truncate(raw_id.strip(), _MESSAGE_VALUE_LIMIT)!r} is not a "
            "conversation id (expected a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6)"
        )
    code = raw_code.strip()
    if not code:
        problems.append("wrapup_code is empty")
    agent_id: str | None = None
    if raw_agent.strip():
        agent_id = normalise_conversation_id(raw_agent)
        if agent_id is None:
            problems.append(
                f"agent_id {_truncate(raw_agent.strip(), _MESSAGE_VALUE_LIMIT)!r} is not a user "
                "id (expected a UUID, or leave it empty)"
            )
    notes = raw_notes if raw_notes.strip() else None

    if not problems:
        assert conversation_id is not None
        return InputRow(number, conversation_id, code, notes, agent_id)
    return InputRow(
        row=number,
        conversation_id=conversation_id or _truncate(raw_id, _ROW_VALUE_LIMIT),
        wrapup_code=_truncate(code, _ROW_VALUE_LIMIT),
        notes=None if notes is None else _truncate(notes, _ROW_VALUE_LIMIT),
        agent_id=agent_id or (_truncate(raw_agent, _ROW_VALUE_LIMIT) or None),
        problem="; ".join(problems),
    )


def _cell_text(value: object) -> str:
    """A spreadsheet or database value as text: None/NaN -> "", 12.0 -> "12", dates ISO."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _rows_from_records(
    records: Iterable[Sequence[object]], positions: Mapping[str, int], first_number: int
) -> list[InputRow]:
    """Rows from records (tuples in header order), numbered from `first_number`."""
    rows: list[InputRow] = []
    append = rows.append
    fast = _fast_row if positions.keys() == {"conversation_id", "wrapup_code"} else None
    id_pos, code_pos = positions["conversation_id"], positions["wrapup_code"]
    for number, record in enumerate(records, start=first_number):
        if fast is not None:  # only the two required columns: skip the dict for a valid row
            found = fast(number, record, id_pos, code_pos)
            if found is not None:
                append(found)
                continue
        values = {
            name: _cell_text(record[pos]) if pos < len(record) else ""
            for name, pos in positions.items()
        }
        row = _make_row(number, values)
        if row is not None:
            append(row)
    return rows


def _fast_row(number: int, record: Sequence[object], id_pos: int, code_pos: int) -> InputRow | None:
    """The row when both values are text, the id is a hyphenated UUID and the code is not
    empty (what `_make_row` would build); None sends the record through `_make_row`."""
    if id_pos >= len(record) or code_pos >= len(record):
        return None
    raw_id, raw_code = record[id_pos], record[code_pos]
    if not (isinstance(raw_id, str) and isinstance(raw_code, str)):
        return None
    text = raw_id.strip()
    code = raw_code.strip()
    if not code or not _HYPHENATED_UUID_RE.fullmatch(text):
        return None
    return InputRow(number, text.lower(), code)


# --------------------------------------------------------------------------- files


def _read_file(spec: SourceSpec, path: Path) -> Iterator[list[InputRow]]:
    head = _read_head(path)
    name = str(path)
    if not head:
        raise InputError(
            f"{name} is empty: expected a header line with conversation_id and wrapup_code, "
            "then one line per conversation."
        )
    suffix = path.suffix.casefold()
    if head.startswith(_OLE_MAGIC):
        raise InputError(
            f"{name} is an old-style Excel .xls workbook, which is not supported: save it as "
            ".xlsx or CSV and try again."
        )
    if head.startswith(_ZIP_MAGIC):
        yield from _read_xlsx(spec, path)
    elif suffix in _EXCEL_SUFFIXES:
        raise InputError(
            f"{name} is not a valid {suffix} workbook (it is not a zip archive): if it is "
            "really a CSV file, rename it to .csv."
        )
    else:
        yield from _read_csv(spec, path, head)


def _read_head(path: Path) -> bytes:
    name = str(path)
    if not path.exists():
        raise InputError(f"{name}: no such file; check the path (relative to {Path.cwd()}).")
    if path.is_dir():
        raise InputError(f"{name} is a directory, not a CSV or XLSX file; give the file's path.")
    try:
        with path.open("rb") as f:
            return f.read(_HEAD_BYTES)
    except PermissionError:
        raise InputError(
            f"{name} cannot be read: permission denied; check the file's permissions or run as "
            "a user who can read it."
        ) from None
    except OSError as exc:
        raise InputError(f"{name} cannot be read: {exc.strerror or exc}.") from None


# ---- CSV


def _detect_encoding(spec: SourceSpec, head: bytes) -> str:
    if spec.encoding is not None:
        try:
            return codecs.lookup(spec.encoding).name
        except LookupError:
            raise InputError(
                f"{spec.path}: unknown encoding {spec.encoding!r}; try --encoding utf-8, "
                "latin-1, cp1252 or utf-16."
            ) from None
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    return "utf-8-sig"  # plain UTF-8, and a BOM if there is one


def _check_not_binary(name: str, head: bytes, encoding: str) -> None:
    if encoding.startswith(("utf-16", "utf-32")):
        return
    if b"\x00" in head:
        sample = head[:4096]
        even_zero, odd_zero = sample[0::2].count(0), sample[1::2].count(0)
        if odd_zero > len(sample) * 0.4 and even_zero == 0:
            raise InputError(
                f"{name} looks like UTF-16 without a byte order mark; try --encoding utf-16-le."
            )
        if even_zero > len(sample) * 0.4 and odd_zero == 0:
            raise InputError(
                f"{name} looks like UTF-16 without a byte order mark; try --encoding utf-16-be."
            )
    # control characters other than tab, line ends, form feed and DOS's end-of-file mark (0x1A)
    controls = sum(head.count(bytes([b])) for b in (*range(0, 9), *range(14, 26), *range(27, 32)))
    if b"\x00" in head or controls > 2 + len(head) // 100:
        raise InputError(
            f"{name} does not look like a CSV or XLSX file (it contains binary data near the "
            "start); check that this is the right file."
        )


def _detect_delimiter(name: str, header_line: str) -> str:
    """The supported delimiter used most on the header line (outside quotes); comma if none."""
    counts = dict.fromkeys(DELIMITERS + tuple(_OTHER_DELIMITERS), 0)
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    if counts[best]:
        return best
    other = max(_OTHER_DELIMITERS, key=lambda d: counts[d])
    if counts[other]:
        raise InputError(
            f"{name}: line 1 seems to use {other!r} as its delimiter, which is not supported; "
            "save the file with commas, semicolons or tabs between the columns."
        )
    return ","


def _read_csv(spec: SourceSpec, path: Path, head: bytes) -> Iterator[list[InputRow]]:
    name = str(path)
    encoding, delimiter, headers = _csv_header(spec, path, head)
    resolved = _resolve_columns(headers, spec, name, "the header (line 1)")
    if isinstance(resolved, str):
        text = head.decode(encoding, errors="replace")
        try:
            later = list(
                csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter)
            )
        except csv.Error:
            later = []
        raise InputError(
            resolved + (_header_further_down(later[1:21], "line") or _missing_column_hints(headers))
        )

    try:
        yield from _parse_csv(spec, path, encoding, delimiter, resolved)
    except UnicodeDecodeError as exc:
        raise _decode_error(name, path, encoding, exc) from None
    except pd.errors.ParserError as exc:
        raise _parser_error(name, str(exc), delimiter) from None
    except (pd.errors.EmptyDataError, ValueError, OSError, csv.Error) as exc:
        raise InputError(f"{name} cannot be read as CSV: {_first_line(exc)}.") from None


def _csv_header(spec: SourceSpec, path: Path, head: bytes) -> tuple[str, str, list[str]]:
    """(encoding, delimiter, the header's cells) of a CSV file, from its first bytes."""
    name = str(path)
    encoding = _detect_encoding(spec, head)
    _check_not_binary(name, head, encoding)
    text = head.decode(encoding, errors="replace")  # for sniffing only; pandas decodes strictly
    if not text.strip("\ufeff \t\r\n"):
        raise InputError(
            f"{name} has no header: it is blank. Expected a header line with conversation_id "
            "and wrapup_code, then one line per conversation."
        )
    header_line = text.lstrip("\ufeff").splitlines()[0]
    if not header_line.strip():
        raise InputError(
            f"{name}: line 1 is blank; the header (conversation_id, wrapup_code, ...) must be "
            "the first line: delete the blank lines above it."
        )
    delimiter = _detect_delimiter(name, header_line)
    try:
        headers = next(
            csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter)
        )
    except csv.Error as exc:
        raise InputError(f"{name}: the header (line 1) cannot be read: {exc}.") from None
    return encoding, delimiter, headers


def _parse_csv(
    spec: SourceSpec, path: Path, encoding: str, delimiter: str, positions: Mapping[str, int]
) -> Iterator[list[InputRow]]:
    """The data rows, through pandas' C parser, a chunk at a time."""
    reader = pd.read_csv(
        path,
        sep=delimiter,
        encoding=encoding,
        encoding_errors="strict",
        # No header: record 0 is the header line, already parsed. Given a header, pandas would
        # silently drop extra values in the first data row (or make them an index); this way a
        # row with more values than the header's columns is always an error.
        header=None,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        skip_blank_lines=False,  # blank lines count as rows, so row N is line N + 1
        chunksize=spec.chunk_size,
        engine="c",
    )
    used = sorted(set(positions.values()))  # only the columns we use are converted
    local = {canonical: used.index(pos) for canonical, pos in positions.items()}
    size = spec.chunk_size + 1  # the first chunk also holds the header
    number = 0  # the record number of the chunk's first record = its data row number
    with reader:
        while True:
            try:
                frame = reader.get_chunk(size)
            except StopIteration:
                return
            if used[-1] >= frame.shape[1]:  # the sniffed header and pandas' disagree
                raise InputError(f"{path}: the header (line 1) cannot be read as CSV.")
            if number == 0:
                frame, number, size = frame.iloc[1:], 1, spec.chunk_size
            records = zip(*(frame.iloc[:, pos].tolist() for pos in used), strict=True)
            rows = _rows_from_records(records, local, number)
            number += len(frame)
            if rows:
                yield rows


def _parser_error(name: str, message: str, delimiter: str) -> InputError:
    """pandas' C tokenizer error, in terms of data rows (1-based, under the header)."""
    message = message.strip().removeprefix("Error tokenizing data. C error: ")
    if match := re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message):
        expected, line, saw = (int(g) for g in match.groups())
        return InputError(
            f"{name}: row {line - 1} has {saw} values but the header has {expected} columns; "
            f"a value containing the delimiter ({_DELIMITER_NAMES[delimiter]}) must be quoted "
            '("like, this").'
        )
    if match := re.search(r"EOF inside string starting at row (\d+)", message):
        return InputError(
            f"{name}: the quoted value that starts in row {match.group(1)} is never closed; "
            'add the missing closing quote (") or remove the stray one.'
        )
    return InputError(f"{name} cannot be read as CSV: {message}.")


def _decode_error(name: str, path: Path, encoding: str, exc: UnicodeDecodeError) -> InputError:
    line, bad = _locate_decode_error(path, encoding)
    where = f"line {line}" if line else "somewhere in the file"
    bad_text = " ".join(f"0x{b:02X}" for b in (bad or exc.object[exc.start : exc.end])[:4])
    if encoding.startswith(("utf-16", "utf-32")):
        advice = "The file may be cut short or damaged: export it again."
    elif encoding == "utf-8-sig" and _starts_with_utf8_bom(path):
        advice = (
            "The file starts with a UTF-8 byte order mark, so it is UTF-8 with a stray byte: "
            f"correct {where} in a text editor (or export the file again as UTF-8). Another "
            "--encoding would misread its other accented letters."
        )
    else:
        advice = (
            "If the file was saved in another encoding, name it: try --encoding latin-1 "
            "(or cp1252) for Western European text, or --encoding utf-16."
        )
    return InputError(
        f"{name} cannot be decoded as {_encoding_label(encoding)}: {where} has the byte(s) "
        f"{bad_text}. {advice}"
    )


def _starts_with_utf8_bom(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(3) == codecs.BOM_UTF8
    except OSError:
        return False


def _encoding_label(encoding: str) -> str:
    return "UTF-8" if encoding == "utf-8-sig" else encoding


def _locate_decode_error(path: Path, encoding: str) -> tuple[int | None, bytes | None]:
    """The 1-based line of the first undecodable byte, and the bytes; found by re-reading."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    line = 1
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 16):
                state = decoder.getstate()
                try:
                    line += decoder.decode(block).count("\n")
                    continue
                except UnicodeDecodeError:
                    decoder.setstate(state)
                for i in range(len(block)):  # again, a byte at a time, to find the line
                    try:
                        line += decoder.decode(block[i : i + 1]).count("\n")
                    except UnicodeDecodeError as exc:
                        return line, exc.object[exc.start : exc.end]
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:  # a truncated sequence at the very end
        return line, exc.object[exc.start : exc.end]
    except OSError:
        return None, None
    return None, None


# ---- XLSX


def _read_xlsx(spec: SourceSpec, path: Path) -> Iterator[list[InputRow]]:
    name = str(path)
    try:
        stream: IO[bytes] = path.open("rb")  # a file object: openpyxl then ignores the suffix
    except OSError as exc:
        raise InputError(f"{name} cannot be read: {exc.strerror or exc}.") from None
    try:
        try:
            workbook = load_workbook(stream, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises anything from KeyError to BadZipFile
            raise InputError(
                f"{name} is not a valid XLSX workbook ({_first_line(exc)}); open it in a "
                "spreadsheet and save it again as .xlsx, or export the sheet as CSV."
            ) from None
        try:
            yield from _read_sheet(spec, name, workbook)
        finally:
            workbook.close()
    finally:
        stream.close()


def _pick_sheet(spec: SourceSpec, name: str, sheetnames: list[str]) -> str:
    sheets = ", ".join(repr(s) for s in sheetnames)
    wanted = spec.sheet
    if wanted is None:
        if not sheetnames:
            raise InputError(f"{name} has no sheets.")
        return sheetnames[0]
    if isinstance(wanted, str):
        if wanted in sheetnames:
            return wanted
        folded = [s for s in sheetnames if s.casefold() == wanted.strip().casefold()]
        if len(folded) == 1:
            return folded[0]
        if not wanted.strip().isdigit():
            raise InputError(f"{name} has no sheet named {wanted!r}; its sheets are {sheets}.")
        wanted = int(wanted)
    if 0 <= wanted < len(sheetnames):
        return sheetnames[wanted]
    raise InputError(
        f"{name} has no sheet number {wanted} (counting from 0); it has {len(sheetnames)} "
        f"sheet(s): {sheets}."
    )


def _read_sheet(spec: SourceSpec, name: str, workbook: Any) -> Iterator[list[InputRow]]:
    sheet_name = _pick_sheet(spec, name, list(workbook.sheetnames))
    where = f"{name}, sheet {sheet_name!r}"
    try:
        sheet = workbook[sheet_name]
        sheet.reset_dimensions()  # other programs may record a wrong size; read what is there
        records: Iterator[tuple[object, ...]] = sheet.iter_rows(values_only=True)
        header_row, headers = _find_header(records, where)
        resolved = _resolve_columns(headers, spec, where, f"the header (row {header_row})")
        if isinstance(resolved, str):
            below = [[_cell_text(v) for v in r] for r in _take(records, 20)]
            hint = _header_further_down(below, "row") if header_row == 1 else ""
            raise InputError(
                resolved
                + (
                    hint
                    or _other_sheets_hint(workbook, sheet_name)
                    or _missing_column_hints(headers, csv_file=False)
                )
            )
        number = 1
        while batch := _take(records, spec.chunk_size):
            rows = _rows_from_records(batch, resolved, number)
            number += len(batch)
            if rows:
                yield rows
    except InputError:
        raise
    except Exception as exc:  # a damaged sheet: openpyxl/lxml raise assorted errors
        raise InputError(
            f"{where} cannot be read ({_first_line(exc)}); open it in a spreadsheet and save it "
            "again, or export the sheet as CSV."
        ) from None


def _other_sheets_hint(workbook: Any, current: str) -> str:
    """Name the workbook's sheets, and the one whose first row holds the columns if any."""
    names = list(workbook.sheetnames)
    if len(names) < 2:
        return ""
    found = ", ".join(repr(n) for n in names)
    for other in names:
        if other == current:
            continue
        try:
            for record in workbook[other].iter_rows(values_only=True, max_row=20):
                cells = [_cell_text(v) for v in record]
                if any(c.strip() for c in cells):
                    if _looks_like_header(cells):
                        return (
                            f" The workbook's sheets are {found}; sheet {other!r} has these "
                            f"columns: add --sheet {_quoted_arg(other)}."
                        )
                    break
        except Exception:  # a damaged sheet: say only what is known
            continue
    return f" The workbook's sheets are {found}; pick the one with the rows with --sheet NAME."


def _quoted_arg(value: str) -> str:
    return value if re.fullmatch(r"[\w.-]+", value) else "'" + value.replace("'", "'\\''") + "'"


def _find_header(records: Iterator[tuple[object, ...]], where: str) -> tuple[int, list[str]]:
    """The first row with any value in it, as (its 1-based row number, its cells as text)."""
    for number, record in enumerate(records, start=1):
        cells = [_cell_text(v) for v in record]
        if any(c.strip() for c in cells):
            return number, cells
    raise InputError(
        f"{where} has no rows: expected a header row with conversation_id and wrapup_code; "
        "pick another sheet with --sheet NAME."
    )


def _take(records: Iterator[tuple[object, ...]], count: int) -> list[tuple[object, ...]]:
    batch: list[tuple[object, ...]] = []
    for record in records:
        batch.append(record)
        if len(batch) == count:
            break
    return batch


# --------------------------------------------------------------------------- headers and sheets


def sheet_names(path: Path) -> list[str]:
    """The sheets of an XLSX workbook, in order; `[]` for a CSV file. InputError when the file
    cannot be read (the same messages as `read_rows`)."""
    head = _read_head(path)
    if not head.startswith(_ZIP_MAGIC):
        return []
    try:
        with path.open("rb") as stream:
            workbook = load_workbook(stream, read_only=True, data_only=True)
            try:
                return list(workbook.sheetnames)
            finally:
                workbook.close()
    except Exception as exc:  # openpyxl raises anything from KeyError to BadZipFile
        raise InputError(
            f"{path} is not a valid XLSX workbook ({_first_line(exc)}); open it in a "
            "spreadsheet and save it again as .xlsx, or export the sheet as CSV."
        ) from None


def read_header(spec: SourceSpec) -> list[str]:
    """The header cells of the file `spec.path` (of `spec.sheet` for a workbook), as
    `read_rows` sees them: for showing them, and for `match_columns`."""
    if spec.path is None:
        raise UsageError("read_header needs a file")
    path = spec.path
    head = _read_head(path)
    if not head:
        raise InputError(f"{path} is empty: expected a header line with conversation_id and "
                         "wrapup_code, then one line per conversation.")  # fmt: skip
    if head.startswith(_OLE_MAGIC):
        raise InputError(
            f"{path} is an old-style Excel .xls workbook, which is not supported: save it as "
            ".xlsx or CSV and try again."
        )
    if not head.startswith(_ZIP_MAGIC):
        return _csv_header(spec, path, head)[2]
    sheets = sheet_names(path)
    sheet = _pick_sheet(spec, str(path), sheets)
    with path.open("rb") as stream:
        workbook = load_workbook(stream, read_only=True, data_only=True)
        try:
            records = workbook[sheet].iter_rows(values_only=True)
            return _find_header(records, f"{path}, sheet {sheet!r}")[1]
        finally:
            workbook.close()


@dataclass(frozen=True)
class HeaderPlace:
    """Where `read_rows` finds the header of the file `spec.path`: data row N is record
    `row + N` (a CSV record, which a quoted value may spread over several lines; a sheet row,
    counting empty rows), and the records above the header are not read."""

    workbook: bool  # an XLSX/XLSM workbook (a zip archive), else CSV
    sheet: str | None  # the sheet read, for a workbook
    row: int  # the header's 1-based record (CSV) or row (sheet) number


def header_place(spec: SourceSpec) -> HeaderPlace:
    """Where the header of the file `spec.path` (of `spec.sheet` for a workbook) is, as
    `read_rows` finds it; InputError with the same messages when the file cannot be read."""
    if spec.path is None:
        raise UsageError("header_place needs a file")
    path = spec.path
    if not _read_head(path).startswith(_ZIP_MAGIC):
        return HeaderPlace(workbook=False, sheet=None, row=1)  # the header is line 1
    sheet_names(path)  # a file that is no workbook: the same message as read_rows
    with path.open("rb") as stream:
        workbook = load_workbook(stream, read_only=True, data_only=True)
        try:
            sheet = _pick_sheet(spec, str(path), list(workbook.sheetnames))
            where = f"{path}, sheet {sheet!r}"
            try:
                worksheet = workbook[sheet]
                worksheet.reset_dimensions()  # as _read_sheet: the rows that are there
                row = _find_header(worksheet.iter_rows(values_only=True), where)[0]
            except InputError:
                raise
            except Exception as exc:  # a damaged sheet, as in _read_sheet
                raise InputError(
                    f"{where} cannot be read ({_first_line(exc)}); open it in a spreadsheet "
                    "and save it again, or export the sheet as CSV."
                ) from None
            return HeaderPlace(workbook=True, sheet=sheet, row=row)
        finally:
            workbook.close()


def csv_layout(spec: SourceSpec) -> tuple[str, str, list[str]]:
    """(encoding, delimiter, header cells) of the CSV file `spec.path`, as `read_rows` reads it."""
    if spec.path is None:
        raise UsageError("csv_layout needs a file")
    return _csv_header(spec, spec.path, _read_head(spec.path))


def match_columns(headers: Sequence[str], columns: Mapping[str, str]) -> dict[str, int]:
    """Canonical column -> position in `headers`, matched as `read_rows` matches them (with
    `columns` as `--column` mappings, and the Genesys Cloud aliases); the columns that no
    header (or more than one) matches are left out."""
    found: dict[str, int] = {}
    keys = [_header_key(h) for h in headers]
    mapping = {normalise_header(k): v for k, v in columns.items()}
    for canonical in CANONICAL_COLUMNS:
        hits = _column_hits(keys, canonical, mapping)
        if len(hits) == 1:
            found[canonical] = hits[0]
    return found


# --------------------------------------------------------------------------- SQL


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return _truncate(lines[0], 300) if lines else type(exc).__name__


def _driver_message(exc: BaseException, password: str | None) -> str:
    """The database's one-line error (not SQLAlchemy's wrapper text), without the password."""
    orig = getattr(exc, "orig", None)
    source = orig if isinstance(orig, BaseException) else exc
    message = f"{type(source).__module__}.{type(source).__name__}: {_first_line(source)}"
    message = message.rstrip(".")
    message = message.removeprefix("builtins.")
    return message.replace(password, "***") if password else message


def _read_sql(spec: SourceSpec) -> Iterator[list[InputRow]]:
    assert spec.source_url is not None and spec.query is not None
    where = describe_source(spec)
    masked = mask_url(spec.source_url)
    try:
        url = sa.engine.make_url(spec.source_url)
    except Exception:
        raise InputError(
            f"--source-url {masked} is not a database URL SQLAlchemy understands; it looks "
            "like sqlite:///path/to/file.sqlite or postgresql://user@host/dbname."
        ) from None
    password = url.password if isinstance(url.password, str) else None
    if url.get_backend_name() == "sqlite":
        _check_sqlite_file(url, masked)
    try:
        engine = sa.create_engine(url)
    except Exception as exc:  # unknown dialect, or its driver is not installed
        raise InputError(
            f"--source-url {masked} cannot be used: {_driver_message(exc, password)}; install "
            "the database driver it names, or check the URL's scheme."
        ) from None
    try:
        yield from _stream_query(spec, engine, where, password)
    finally:
        engine.dispose()


def _check_sqlite_file(url: sa.engine.URL, masked: str) -> None:
    """Refuse a missing SQLite file: sqlite would otherwise create an empty one."""
    database = url.database or ""
    is_file_path = database not in ("", ":memory:") and not database.startswith("file:")
    if is_file_path and not Path(database).is_file():
        raise InputError(
            f"--source-url {masked}: the SQLite database file {database} does not exist; "
            "check the path (three slashes for a relative path, four for an absolute one)."
        )


def _stream_query(
    spec: SourceSpec, engine: sa.engine.Engine, where: str, password: str | None
) -> Iterator[list[InputRow]]:
    assert spec.query is not None
    stage = "connect"
    try:
        with engine.connect() as conn:
            stage = "run the query"
            _make_read_only(conn)
            # exec_driver_sql: the SQL goes to the driver exactly as given (text() would treat
            # ":name" as a bind parameter); no_parameters keeps "%" literal for pyformat drivers.
            result = conn.execution_options(
                stream_results=True, no_parameters=True
            ).exec_driver_sql(spec.query)
            if not result.returns_rows:
                raise InputError(
                    f"{where}: the query returned no result set; it must be a SELECT returning "
                    "conversation_id and wrapup_code columns."
                )
            headers = [str(k) for k in result.keys()]  # noqa: SIM118 (a Result is not a dict)
            resolved = _resolve_columns(headers, spec, where, "the query's result")
            if isinstance(resolved, str):
                raise InputError(
                    resolved.replace("Columns found", "Columns returned")
                    + " In SQL, rename a column with AS: SELECT ConvId AS conversation_id, ..."
                )
            stage = "read the query's rows"
            number = 1
            for partition in result.partitions(spec.chunk_size):
                rows = _rows_from_records(partition, resolved, number)
                number += len(partition)
                if rows:
                    yield rows
            # The connection closes without a commit: anything the query changed is rolled back.
    except InputError:
        raise
    except Exception as exc:  # DBAPI errors and SQLAlchemy's own, with the driver's line only
        raise InputError(
            f"{where}: cannot {stage}: {_driver_message(exc, password)}. Check the SQL (try it "
            "in the database's own client) and the URL."
        ) from None


def _make_read_only(conn: sa.engine.Connection) -> None:
    """Make the session read-only where the dialect allows it (issue 5: the SQL source runs
    exactly the query given, read-only where the driver allows it).

    SQLite: `PRAGMA query_only` makes every write fail. PostgreSQL: `SET TRANSACTION READ ONLY`
    as the first statement of the transaction. Other databases: not enforced here (the
    transaction is still never committed); give the tool a read-only database user.
    """
    dialect = conn.dialect.name
    if dialect == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")
    elif dialect == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
