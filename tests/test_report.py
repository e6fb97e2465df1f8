"""The results CSV's formula neutraliser, which runs inside SQLite (issue 5 and 6).

End-to-end checks of the results and `report` files are in test_run_cli, test_security and
test_bad_input_cli; here the SQL expression is held to its definition on any text.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, String, create_engine, literal, select

from wrapup_batch.ledger import ResultRow
from wrapup_batch.report import RESULT_COLUMNS, neutralise_sql

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str | None) -> str | None:
    """The definition: text that a spreadsheet would run as a formula gets an apostrophe."""
    if value is None:
        return None
    return "'" + value if value.startswith(FORMULA_STARTS) else value


@pytest.fixture(scope="module")
def sqlite() -> Iterator[Connection]:
    with create_engine("sqlite://").connect() as conn:
        yield conn


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.none(), st.text()))
@example(value='=HYPERLINK("http://x")')
@example(value="-1")
@example(value="\tcmd")
@example(value="\r=1")
@example(value="é=1")
@example(value="")
@example(value="'=1")
def test_sql_neutraliser_matches_its_definition(sqlite: Connection, value: str | None) -> None:
    got = sqlite.execute(select(neutralise_sql(literal(value, String())))).scalar_one()
    assert got == spreadsheet_safe(value)


def test_results_columns_are_the_ledgers_result_fields_in_order() -> None:
    assert ResultRow._fields == RESULT_COLUMNS
