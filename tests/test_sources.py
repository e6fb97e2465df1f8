"""wrapup_batch.sources: CSV/XLSX/SQL in, chunks of normalised rows out, bad input refused.

The bad-input corpus of issue 5 is in tests/data/bad_inputs/; the big inputs (a 10 MB field,
100k rows) are generated in tmp_path.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import string
import tempfile
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapup_batch.errors import InputError, UsageError
from wrapup_batch.models import InputRow
from wrapup_batch.sources import (
    CANONICAL_COLUMNS,
    SourceSpec,
    describe_source,
    match_columns,
    normalise_conversation_id,
    normalise_header,
    read_rows,
)

BAD = Path(__file__).parent / "data" / "bad_inputs"
GOOD = Path(__file__).parent / "data" / "inputs"

A = "6f0d5c38-2b6e-4a55-9c3e-0f5b8a1d2e01"
B = "a3c1e7f2-9d4b-4c8a-8e6f-1b2c3d4e5f60"
C = "0e9b7a6c-5d4f-4e3a-b2c1-d0e9f8a7b6c5"


def rows_of(spec: SourceSpec) -> list[InputRow]:
    return [row for chunk in read_rows(spec) for row in chunk]


def read_file(path: Path, **kwargs: object) -> list[InputRow]:
    return rows_of(SourceSpec(path=path, **kwargs))  # type: ignore[arg-type]


def input_error(spec: SourceSpec) -> str:
    with pytest.raises(InputError) as info:
        rows_of(spec)
    message = str(info.value)
    assert "Traceback" not in message
    assert "\n" not in message  # one message, one line
    return message


def write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- the corpus: files


def test_empty_file() -> None:
    message = input_error(SourceSpec(path=BAD / "empty.csv"))
    assert str(BAD / "empty.csv") in message
    assert "is empty" in message
    assert "conversation_id" in message


def test_blank_file_has_no_header(tmp_path: Path) -> None:
    path = write(tmp_path / "blank.csv", "\n\n  \n")
    message = input_error(SourceSpec(path=path))
    assert message.startswith(f"{path} has no header")


def test_header_only_yields_no_chunks() -> None:
    assert list(read_rows(SourceSpec(path=BAD / "header_only.csv"))) == []


def test_required_column_missing_lists_columns_found_and_the_flag() -> None:
    message = input_error(SourceSpec(path=BAD / "missing_column.csv"))
    assert str(BAD / "missing_column.csv") in message
    assert "no wrapup_code column in the header (line 1)" in message
    assert "Columns found: 'conversation_id', 'notes'" in message
    assert "--column wrapup_code=YourHeader" in message  # the one missing


def test_no_header_line_says_the_first_line_looks_like_data() -> None:
    message = input_error(SourceSpec(path=BAD / "no_header.csv"))
    assert "no conversation_id and no wrapup_code column" in message
    assert "looks like data, not a header" in message


def test_unknown_delimiter_is_named() -> None:
    message = input_error(SourceSpec(path=BAD / "pipe_delimited.csv"))
    assert str(BAD / "pipe_delimited.csv") in message
    assert "line 1 seems to use '|' as its delimiter" in message
    assert "commas, semicolons or tabs" in message


def test_single_column_header_hints_at_the_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path / "spaces.csv", f"conversation_id wrapup_code\n{A} Billing\n")
    message = input_error(SourceSpec(path=path))
    assert "Only one column was found" in message


def test_utf16_with_bom_is_detected() -> None:
    rows = read_file(BAD / "utf16_bom.csv")
    assert rows == [InputRow(1, A, "Facturación", "Résumé envoyé")]


def test_utf16_without_bom_suggests_the_encoding(tmp_path: Path) -> None:
    path = write(tmp_path / "u16.csv", f"conversation_id,wrapup_code\n{A},x\n".encode("utf-16-le"))
    message = input_error(SourceSpec(path=path))
    assert "--encoding utf-16-le" in message
    assert read_file(path, encoding="utf-16-le") == [InputRow(1, A, "x")]


def test_latin1_read_as_utf8_names_the_line_and_the_fix() -> None:
    path = BAD / "latin1.csv"
    message = input_error(SourceSpec(path=path))
    assert message.startswith(f"{path} cannot be decoded as UTF-8: line 3 has the byte(s) 0xF3")
    assert "--encoding latin-1" in message
    assert "--encoding utf-16" in message


def test_damaged_utf16_says_so(tmp_path: Path) -> None:
    data = f"conversation_id,wrapup_code\n{A},x\n".encode("utf-16") + b"\x00"
    message = input_error(SourceSpec(path=write(tmp_path / "cut.csv", data)))
    assert "cannot be decoded as utf-16: line 3 has the byte(s) 0x00" in message
    assert "cut short or damaged" in message


def test_latin1_with_its_encoding_reads() -> None:
    rows = read_file(BAD / "latin1.csv", encoding="latin-1")
    assert [r.wrapup_code for r in rows] == ["Billing", "Facturación"]
    assert rows[1].notes == "café"


def test_unknown_encoding_name(tmp_path: Path) -> None:
    message = input_error(SourceSpec(path=BAD / "header_only.csv", encoding="latin-99"))
    assert "unknown encoding 'latin-99'" in message


def test_binary_junk_is_not_a_csv() -> None:
    message = input_error(SourceSpec(path=BAD / "binary_junk.csv"))
    assert str(BAD / "binary_junk.csv") in message
    assert "does not look like a CSV or XLSX file" in message


def test_nul_bytes_after_a_good_header_are_binary(tmp_path: Path) -> None:
    path = write(tmp_path / "nul.csv", f"conversation_id,wrapup_code\n{A},x\x00\x00y\n")
    assert "does not look like a CSV" in input_error(SourceSpec(path=path))


def test_ten_megabyte_field(tmp_path: Path) -> None:
    big = "n" * 10_000_000
    path = write(
        tmp_path / "big.csv", f'conversation_id,wrapup_code,notes\n{A},x,"{big}"\n{B},y,\n'
    )
    rows = read_file(path)
    assert [r.row for r in rows] == [1, 2]
    assert rows[0].notes == big
    assert rows[1] == InputRow(2, B, "y")


def test_ten_megabyte_id_is_an_invalid_row_with_truncated_values(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bigid.csv", "conversation_id,wrapup_code\n" + "z" * 10_000_000 + ",x\n"
    )
    (row,) = read_file(path)
    assert row.problem is not None
    assert len(row.problem) < 200
    assert "conversation_id 'zzzz" in row.problem
    assert len(row.conversation_id) == 200


def test_quoted_newlines_delimiters_and_quotes() -> None:
    assert read_file(BAD / "quoted_newlines.csv") == [
        InputRow(1, A, "Billing, refunds", "line one\nline two, with a comma"),
        InputRow(2, B, "Sales", 'say "hi"'),
    ]


def test_blank_lines_are_skipped_but_counted() -> None:
    rows = read_file(BAD / "trailing_blank_lines.csv")
    # line 3 is blank, so B (line 4) is row 3; the trailing blank lines and the bare "," vanish
    assert rows == [InputRow(1, A, "Billing"), InputRow(3, B, "Sales")]


def test_bom_and_genesys_style_headers() -> None:
    assert read_file(BAD / "bom.csv") == [InputRow(1, A, "Billing")]


def test_bom_with_explicit_utf8(tmp_path: Path) -> None:
    assert read_file(BAD / "bom.csv", encoding="utf-8") == [InputRow(1, A, "Billing")]


def test_excel_formulas_are_plain_text() -> None:
    rows = read_file(BAD / "formulas.csv")
    assert rows[0].problem is not None
    assert rows[0].problem.startswith("conversation_id '=HYPERLINK(")
    assert rows[0].conversation_id.startswith("=HYPERLINK(")
    assert rows[1] == InputRow(2, A, "=1+1", "@SUM(A1)")
    assert rows[2] == InputRow(3, B, "Sales", "=cmd|' /C calc'!A0")


def test_ids_with_braces_upper_case_and_spaces() -> None:
    assert read_file(BAD / "ids_braces_upper.csv") == [
        InputRow(1, A, "Billing"),
        InputRow(2, B, "Sales", agent_id=C),
    ]


def test_unclosed_quote_names_the_row() -> None:
    message = input_error(SourceSpec(path=BAD / "unclosed_quote.csv"))
    assert str(BAD / "unclosed_quote.csv") in message
    assert "starts in row 2 is never closed" in message


def test_unquoted_delimiter_in_a_value_names_the_row() -> None:
    message = input_error(SourceSpec(path=BAD / "too_many_fields.csv"))
    assert "row 2 has 4 values but the header has 3 columns" in message
    assert "must be quoted" in message


def test_an_extra_value_in_the_first_row_is_not_dropped(tmp_path: Path) -> None:
    # pandas, given the header, would silently drop "refund" (or turn column 1 into an index)
    path = write(tmp_path / "x.csv", f"conversation_id,wrapup_code\n{A},Billing,refund\n")
    assert "row 1 has 3 values but the header has 2 columns" in input_error(SourceSpec(path=path))


def test_blank_first_line(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", f"\nconversation_id,wrapup_code\n{A},Billing\n")
    assert input_error(SourceSpec(path=path)).startswith(f"{path}: line 1 is blank")


def test_multi_line_header_cell_keeps_row_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", f'"Conversation\nID",wrapup_code\n{A},x\n{B},"y\nz",w\n')
    assert "row 2 has 3 values" in input_error(SourceSpec(path=path))


def test_100k_rows_stream_in_chunks(tmp_path: Path) -> None:
    path = write(
        tmp_path / "many.csv", "conversation_id,wrapup_code\n" + f"{A},Billing\n" * 100_000
    )
    sizes = []
    next_row = 1
    for chunk in read_rows(SourceSpec(path=path, chunk_size=10_000)):
        sizes.append(len(chunk))
        assert chunk[0].row == next_row and chunk[-1].row == next_row + len(chunk) - 1
        assert chunk[-1] == InputRow(chunk[-1].row, A, "Billing")
        next_row += len(chunk)
    assert sizes == [10_000] * 10


def test_a_bad_byte_deep_in_the_file_is_raised_when_reached(tmp_path: Path) -> None:
    body = f"{A},Billing\n" * 50_000 + f"{B},caf\xe9\n"
    path = write(tmp_path / "late.csv", b"conversation_id,wrapup_code\n" + body.encode("latin-1"))
    chunks = read_rows(SourceSpec(path=path, chunk_size=1000))
    assert len(next(chunks)) == 1000  # streamed: the first rows arrive before the bad byte
    with pytest.raises(InputError, match=r"cannot be decoded as UTF-8: line 50002 has .* 0xE9"):
        list(chunks)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    message = input_error(SourceSpec(path=path))
    assert message.startswith(f"{path}: no such file")


def test_directory(tmp_path: Path) -> None:
    message = input_error(SourceSpec(path=tmp_path))
    assert message.startswith(f"{tmp_path} is a directory")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 000 does not stop root (the CI user), so the refusal is simulated at Path.open.
    path = write(tmp_path / "secret.csv", f"conversation_id,wrapup_code\n{A},x\n")
    real_open = Path.open

    def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    message = input_error(SourceSpec(path=path))
    assert message.startswith(f"{path} cannot be read: permission denied")


# --------------------------------------------------------------------------- delimiters, columns


def test_semicolon_and_tab_delimiters() -> None:
    assert read_file(GOOD / "semicolon.csv") == [
        InputRow(1, A, "Billing", "a, b"),
        InputRow(2, B, "Sales"),
    ]
    assert read_file(GOOD / "tab.tsv") == [
        InputRow(1, A, "Billing", "a, b; c"),
        InputRow(2, B, "Sales"),
    ]


def test_delimiter_inside_quoted_header_is_not_counted(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", f'"Notes; free text";conversation_id;wrapup_code\nx;{A};y\n')
    assert read_file(path) == [InputRow(1, A, "y")]


def test_column_mapping_and_ignored_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", f"Extra, ConvId ,Code,conversation_id\nq,{A},Billing,junk\n")
    rows = read_file(path, columns={"conversation_id": "convid", "wrapup_code": "CODE"})
    assert rows == [InputRow(1, A, "Billing")]


def test_column_mapping_to_an_absent_header(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", f"ConvId,wrapup_code\n{A},Billing\n")
    message = input_error(SourceSpec(path=path, columns={"conversation_id": "Conversation"}))
    assert f"{path}: --column conversation_id=Conversation names a column that is not" in message
    assert "Columns found: 'ConvId', 'wrapup_code'" in message


def test_column_mapping_with_an_unknown_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="'convid' is not an input column"):
        rows_of(SourceSpec(path=BAD / "header_only.csv", columns={"convid": "x"}))


def test_two_headers_matching_one_column(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", f"Conversation ID,conversation_id,wrapup_code\n{A},{B},x\n")
    message = input_error(SourceSpec(path=path))
    assert "'Conversation ID' (column 1) and 'conversation_id' (column 2)" in message
    assert "--column conversation_id=HEADER" in message


# --------------------------------------------------------------------------- row-level problems


def test_row_problems_do_not_raise_and_name_the_column(tmp_path: Path) -> None:
    long_id = "x" * 300
    path = write(
        tmp_path / "rows.csv",
        "conversation_id,wrapup_code,notes,agent_id\n"
        f"{A},  ,  ,\n"
        f"{long_id},Billing,,\n"
        f"{B},Sales,,not-a-user\n"
        f"{C}, Billing ,  keep  spaces  ,\n"
        f",Billing,,\n",
    )
    rows = read_file(path)
    assert rows[0] == InputRow(1, A, "", None, None, "wrapup_code is empty")
    assert rows[1].problem == (
        f"conversation_id '{'x' * 59}…' is not a conversation id "
        "(expected a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6)"
    )
    assert rows[1].conversation_id == "x" * 199 + "…"
    assert rows[2].problem is not None
    assert rows[2].problem.startswith("agent_id 'not-a-user' is not a user id")
    assert rows[2].conversation_id == B and rows[2].agent_id == "not-a-user"
    assert rows[3] == InputRow(4, C, "Billing", "  keep  spaces  ")
    assert rows[4].problem == "conversation_id is empty"


# --------------------------------------------------------------------------- XLSX


def make_workbook(path: Path, sheets: Mapping[str, Sequence[Sequence[object]]]) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    workbook.save(path)
    return path


def test_xlsx_with_no_rows() -> None:
    message = input_error(SourceSpec(path=BAD / "no_rows.xlsx"))
    assert message.startswith(f"{BAD / 'no_rows.xlsx'}, sheet 'Sheet1' has no rows")


def test_xlsx_first_sheet_by_default_with_cell_types(tmp_path: Path) -> None:
    when = dt.datetime(2024, 3, 1, 9, 30)
    path = make_workbook(
        tmp_path / "book.xlsx",
        {
            "Data": [
                ["Conversation ID", "Wrap-up Code", "Notes"],
                [A.upper(), 42, when],
                [None, None, None],
                [B, "Sales", 1.5],
                [C, True, None],
            ],
            "Other": [["conversation_id", "wrapup_code"], [C, "Other"]],
        },
    )
    assert read_file(path) == [
        InputRow(1, A, "42", "2024-03-01 09:30:00"),
        InputRow(3, B, "Sales", "1.5"),
        InputRow(4, C, "TRUE"),
    ]


def test_xlsx_named_and_numbered_sheet(tmp_path: Path) -> None:
    path = make_workbook(
        tmp_path / "book.xlsx",
        {"Empty": [], "Q3 Fixes": [[], ["conversation_id", "wrapup_code"], [C, "Other"]]},
    )
    assert read_file(path, sheet="Q3 Fixes") == [InputRow(1, C, "Other")]
    assert read_file(path, sheet="q3 fixes") == [InputRow(1, C, "Other")]
    assert read_file(path, sheet=1) == [InputRow(1, C, "Other")]
    assert read_file(path, sheet="1") == [InputRow(1, C, "Other")]
    message = input_error(SourceSpec(path=path, sheet="Q4"))
    assert message == f"{path} has no sheet named 'Q4'; its sheets are 'Empty', 'Q3 Fixes'."
    assert "has no sheet number 5" in input_error(SourceSpec(path=path, sheet=5))
    assert "sheet 'Empty' has no rows" in input_error(SourceSpec(path=path))


def test_xlsx_missing_column_names_the_sheet(tmp_path: Path) -> None:
    path = make_workbook(tmp_path / "b.xlsx", {"S": [["ConvId", "wrapup_code"], [A, "x"]]})
    message = input_error(SourceSpec(path=path))
    assert message.startswith(f"{path}, sheet 'S': no conversation_id column in the header (row 1)")
    assert read_file(path, columns={"conversation_id": "ConvId"}) == [InputRow(1, A, "x")]


def test_xlsx_streams_in_chunks(tmp_path: Path) -> None:
    path = make_workbook(
        tmp_path / "b.xlsx", {"S": [["conversation_id", "wrapup_code"]] + [[A, "x"]] * 25}
    )
    chunks = list(read_rows(SourceSpec(path=path, chunk_size=10)))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert chunks[2][-1].row == 25


def test_xlsx_with_a_wrong_recorded_size_is_read_in_full(tmp_path: Path) -> None:
    # Some exporters record a sheet size smaller than the data; read-only openpyxl trusts it.
    made = make_workbook(tmp_path / "m.xlsx", {"S": [["conversation_id", "wrapup_code"], [A, "x"]]})
    path = tmp_path / "wrong_size.xlsx"
    with zipfile.ZipFile(made) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                assert b'<dimension ref="A1:B2" />' in data
                data = data.replace(b'<dimension ref="A1:B2" />', b'<dimension ref="A1:A1" />')
            target.writestr(item, data)
    assert read_file(path) == [InputRow(1, A, "x")]


def test_a_workbook_named_csv_is_read_as_a_workbook(tmp_path: Path) -> None:
    path = make_workbook(
        tmp_path / "export.csv", {"S": [["conversation_id", "wrapup_code"], [A, "x"]]}
    )
    assert read_file(path) == [InputRow(1, A, "x")]


def test_xlsx_that_is_not_a_workbook() -> None:
    message = input_error(SourceSpec(path=BAD / "not_a_workbook.xlsx"))
    assert "is not a valid .xlsx workbook" in message
    assert "rename it to .csv" in message


def test_zip_that_is_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    message = input_error(SourceSpec(path=path))
    assert message.startswith(f"{path} is not a valid XLSX workbook")


def test_old_xls_workbook(tmp_path: Path) -> None:
    path = write(tmp_path / "old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512)
    assert "old-style Excel .xls workbook" in input_error(SourceSpec(path=path))


# --------------------------------------------------------------------------- SQL


@pytest.fixture
def crm(tmp_path: Path) -> Path:
    path = tmp_path / "crm.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE fixes (conv TEXT, code TEXT, note TEXT, n INTEGER)")
        db.executemany(
            "INSERT INTO fixes VALUES (?, ?, ?, ?)",
            [(A, "Billing", None, 1), (B.upper(), "Sales", "call back", 2), ("bad", "", None, 3)],
        )
    db.close()
    return path


def sql(crm: Path, query: str, **kwargs: object) -> SourceSpec:
    return SourceSpec(source_url=f"sqlite:///{crm}", query=query, **kwargs)  # type: ignore[arg-type]


def test_sql_query_with_aliases_nulls_and_chunks(crm: Path) -> None:
    spec = sql(
        crm,
        "SELECT conv AS Conversation_ID, code AS \"Wrap-up Code\", note AS notes, n, ':x' AS lit "
        "FROM fixes ORDER BY n",
        chunk_size=2,
    )
    chunks = list(read_rows(spec))
    assert [len(c) for c in chunks] == [2, 1]
    rows = chunks[0] + chunks[1]
    assert rows[:2] == [InputRow(1, A, "Billing"), InputRow(2, B, "Sales", "call back")]
    assert rows[2].problem is not None and "conversation_id 'bad'" in rows[2].problem
    assert describe_source(spec) == f"query on sqlite:///{crm}"


def test_sql_query_with_column_mapping(crm: Path) -> None:
    spec = sql(crm, "SELECT conv, code FROM fixes WHERE n = 1", columns={"conversation_id": "conv"})
    message = input_error(spec)
    assert "no wrapup_code column in the query's result" in message
    spec = sql(
        crm,
        "SELECT conv, code FROM fixes WHERE n = 1",
        columns={"conversation_id": "conv", "wrapup_code": "code"},
    )
    assert rows_of(spec) == [InputRow(1, A, "Billing")]


def test_sql_query_without_conversation_id_lists_the_columns(crm: Path) -> None:
    message = input_error(sql(crm, "SELECT code AS wrapup_code, n FROM fixes"))
    assert message.startswith(f"query on sqlite:///{crm}: no conversation_id column")
    assert "Columns returned: 'wrapup_code', 'n'" in message
    assert "AS conversation_id" in message


def test_failing_query_gives_the_driver_line(crm: Path) -> None:
    message = input_error(sql(crm, "SELECT * FROM no_such_table"))
    assert message.startswith(f"query on sqlite:///{crm}: cannot run the query:")
    assert "sqlite3.OperationalError: no such table: no_such_table" in message
    assert "sqlalche.me" not in message


def test_query_runs_read_only(crm: Path) -> None:
    message = input_error(sql(crm, "DELETE FROM fixes RETURNING conv AS conversation_id, code"))
    assert "readonly" in message
    message = input_error(sql(crm, "SELECT 1; DROP TABLE fixes"))
    assert "one statement at a time" in message
    with sqlite3.connect(crm) as db:
        assert db.execute("SELECT count(*) FROM fixes").fetchone() == (3,)
    db.close()


def test_query_on_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.sqlite"
    message = input_error(sql(path, "SELECT 1"))
    assert f"the SQLite database file {path} does not exist" in message
    assert not path.exists()


def test_query_with_no_rows_yields_nothing(crm: Path) -> None:
    spec = sql(crm, "SELECT conv AS conversation_id, code AS wrapup_code FROM fixes WHERE 0")
    assert list(read_rows(spec)) == []


def test_url_passwords_never_appear() -> None:
    url = "postgresql://crm_reader:s3cret-pw@127.0.0.1:1/crm"
    spec = SourceSpec(source_url=url, query="SELECT 1")
    assert describe_source(spec) == "query on postgresql://crm_reader:***@127.0.0.1:1/crm"
    message = input_error(spec)  # no driver installed, or nothing listening on port 1
    assert "s3cret" not in message
    assert "crm_reader:***@127.0.0.1:1/crm" in message


def test_unparseable_and_unknown_urls() -> None:
    message = input_error(SourceSpec(source_url="not a url:pw@x", query="SELECT 1"))
    assert message.startswith("--source-url not a url:***@x is not a database URL SQLAlchemy")
    message = input_error(SourceSpec(source_url="nosuchdb://u:pw@h/d", query="SELECT 1"))
    assert message.startswith("--source-url nosuchdb://u:***@h/d cannot be used")
    assert "pw" not in message.replace("password", "")


def test_inconsistent_specs_are_usage_errors() -> None:
    for spec in (
        SourceSpec(),
        SourceSpec(path=BAD / "bom.csv", source_url="sqlite://", query="SELECT 1"),
        SourceSpec(query="SELECT 1"),
        SourceSpec(source_url="sqlite://"),
        SourceSpec(path=BAD / "bom.csv", chunk_size=0),
    ):
        with pytest.raises(UsageError):
            rows_of(spec)


def test_describe_source() -> None:
    assert describe_source(SourceSpec(path=Path("reclassify.csv"))) == "reclassify.csv"
    assert describe_source(SourceSpec(path=Path("b.xlsx"), sheet="Q3")) == "b.xlsx (sheet 'Q3')"


# --------------------------------------------------------------------------- properties


def casing(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


spaces = st.text(alphabet=" \t\u00a0", max_size=3)
separators = st.text(alphabet=" -_", min_size=1, max_size=3)


@st.composite
def header_variants(draw: st.DrawFn) -> tuple[str, str]:
    canonical = draw(st.sampled_from(CANONICAL_COLUMNS))
    words = canonical.split("_")
    joined = words[0]
    for word in words[1:]:
        joined += draw(separators) + word
    return canonical, draw(spaces) + casing(draw, joined) + draw(spaces)


@given(st.text())
def test_normalise_header_is_idempotent(name: str) -> None:
    once = normalise_header(name)
    assert normalise_header(once) == once


def test_normalise_header_examples() -> None:
    assert normalise_header(" Conversation ID ") == "conversation_id"
    assert normalise_header("\ufeffWrap-up  Code") == "wrap_up_code"
    assert normalise_header("AGENT - ID") == "agent_id"


@given(header_variants())
def test_normalise_header_maps_variants_to_the_canonical_name(variant: tuple[str, str]) -> None:
    canonical, header = variant
    assert normalise_header(header) == canonical


@settings(max_examples=25, deadline=None)
@given(st.lists(header_variants(), min_size=2, max_size=2, unique_by=lambda v: v[0]))
def test_variant_headers_are_matched_in_a_file(variants: list[tuple[str, str]]) -> None:
    names = {canonical: header for canonical, header in variants}
    names.setdefault("conversation_id", "conversation_id")
    names.setdefault("wrapup_code", "wrapup_code")
    header = ";".join(f'"{h}"' for h in names.values())
    values = {"conversation_id": A, "wrapup_code": "Billing", "notes": "n", "agent_id": C}
    line = ";".join(values[c] for c in names)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "v.csv", f"{header}\n{line}\n")
        (row,) = read_file(path)
    assert (row.conversation_id, row.wrapup_code) == (A, "Billing")
    assert row.notes == ("n" if "notes" in names else None)
    assert row.agent_id == (C if "agent_id" in names else None)


@st.composite
def uuid_spellings(draw: st.DrawFn) -> tuple[uuid.UUID, str]:
    value = draw(st.uuids())
    text = draw(st.sampled_from([str(value), value.hex]))
    text = casing(draw, text)
    if draw(st.booleans()):
        text = "{" + text + "}"
    return value, draw(spaces) + text + draw(spaces)


@given(uuid_spellings())
def test_normalise_conversation_id_accepts_any_spelling(spelling: tuple[uuid.UUID, str]) -> None:
    value, text = spelling
    assert normalise_conversation_id(text) == str(value)


@given(st.text())
def test_normalise_conversation_id_rejects_non_uuids(text: str) -> None:
    result = normalise_conversation_id(text)
    hex_digits = [c for c in text.lower() if c in string.hexdigits]
    if len(hex_digits) != 32:
        assert result is None
    if result is not None:
        assert result == str(uuid.UUID("".join(hex_digits)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not-a-uuid",
        A[:-1],
        A + "0",
        "{" + A,
        A + "}",
        A.replace("-", "", 1),
        "urn:uuid:" + A,
        A.replace("a", "g", 1),
        '=HYPERLINK("' + A + '")',
    ],
)
def test_normalise_conversation_id_examples_of_non_uuids(text: str) -> None:
    assert normalise_conversation_id(text) is None


def test_a_file_with_cr_line_ends_is_read(tmp_path: Path) -> None:
    """Old Mac spreadsheets end lines with a lone CR: the header is found, rows are numbered."""
    path = write(tmp_path / "mac.csv", f"conversation_id,wrapup_code\r{A},Sales\r\r{B},Billing\r")
    assert [(r.row, r.conversation_id, r.wrapup_code) for r in read_file(path)] == [
        (1, A, "Sales"),
        (3, B, "Billing"),
    ]


@pytest.mark.parametrize(
    "headers",
    [["Conversation Id", "Wrap-up"], ["Conversation", "Wrap-up Name", "Notes"]],
)
def test_match_columns_knows_the_aliases_read_rows_knows(headers: list[str]) -> None:
    """The page's column step is skipped exactly when read_rows would read the file."""
    matched = match_columns(headers, {})
    assert matched["conversation_id"] == 0 and matched["wrapup_code"] == 1
    # a mapping names the header itself: an alias no longer stands in for it
    assert "wrapup_code" not in match_columns(headers, {"wrapup_code": "Disposition"})
