"""What every part of the ledger shares: the engine, the name it is shown by, transactions
whose database failures become a LedgerError for a person, and paging through a run's rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, bindparam
from sqlalchemy.exc import DBAPIError

from wrapup_batch.errors import LedgerError
from wrapup_batch.ledger import dialect
from wrapup_batch.ledger.schema import run_rows


class LedgerBase:
    def __init__(self, engine: Engine, display: str) -> None:
        self.engine = engine
        self.display = display
        self.is_sqlite = engine.dialect.name == "sqlite"

    def _begin(self) -> Any:
        return _Transaction(self)

    def _run_row_pages(self, base: Any, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """`base` (a query whose first column is `run_rows.row`) a page at a time, in order."""
        query = (
            base.where(run_rows.c.row > bindparam("after_row", value=0))
            .order_by(run_rows.c.row)
            .limit(batch)
        )
        yield from dialect.pages(self.engine, query, "after_row")


class _Transaction:
    """`engine.begin()` that turns database failures into a LedgerError for a person."""

    def __init__(self, ledger: LedgerBase) -> None:
        self._ledger = ledger
        self._ctx: Any = None

    def __enter__(self) -> Any:
        try:
            self._ctx = self._ledger.engine.begin()
            return self._ctx.__enter__()
        except DBAPIError as exc:
            raise LedgerError(db_failure(self._ledger.display, exc)) from None

    def __exit__(self, *exc_info: Any) -> bool:
        try:
            return bool(self._ctx.__exit__(*exc_info))
        except DBAPIError as exc:
            raise LedgerError(db_failure(self._ledger.display, exc)) from None


def db_failure(display: str, exc: DBAPIError) -> str:
    detail = first_line(exc.orig) if exc.orig is not None else first_line(exc)
    lowered = detail.lower()
    if "readonly" in lowered or "read-only" in lowered:
        hint = "the file or its folder is read-only: give --ledger a writable path"
    elif "locked" in lowered:
        hint = "another program holds the database locked: close it and try again"
    elif "not a database" in lowered or "malformed" in lowered:
        hint = "the file is damaged or not a ledger (nothing was changed); use another --ledger"
    else:
        hint = "check the --ledger path or URL"
    return f"ledger {display}: {detail}; {hint}"


def first_line(exc: object) -> str:
    text_ = str(exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__
