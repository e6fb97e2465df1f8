"""Reading a run's outcome: counts per status, and every input row with its result (for
`status`, `report` and the results file)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select

from wrapup_batch.ledger.base import LedgerBase
from wrapup_batch.ledger.records import ResultRow
from wrapup_batch.ledger.schema import items, run_rows


class Reading(LedgerBase):
    def status_counts(self, run_id: int) -> dict[str, int]:
        status = func.coalesce(run_rows.c.status, items.c.status)
        query = (
            select(status, func.count())
            .select_from(run_rows.outerjoin(items, items.c.id == run_rows.c.item_id))
            .where(run_rows.c.run_id == run_id)
            .group_by(status)
        )
        with self.engine.connect() as conn:
            found: list[Any] = list(conn.execute(query).all())
        return {str(s): int(n) for s, n in found}

    def iter_results(
        self, run_id: int, *, statuses: Sequence[str] | None = None, batch: int = 5000
    ) -> Iterator[list[ResultRow]]:
        """Every input row of a run in input order with its outcome, a page at a time."""
        make = ResultRow._make
        for rows in self.iter_result_tuples(run_id, statuses=statuses, batch=batch):
            yield [make(r) for r in rows]

    def iter_result_tuples(
        self,
        run_id: int,
        *,
        statuses: Sequence[str] | None = None,
        cell: Callable[[ColumnElement[Any]], ColumnElement[Any]] | None = None,
        batch: int = 5000,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """`iter_results` as plain tuples (`ResultRow` order), with `cell` (when given) wrapped
        around every text column's SQL expression: that is how the report's formula
        neutraliser runs inside SQLite, so that a million rows reach the CSV writer untouched.
        """
        status = func.coalesce(run_rows.c.status, items.c.status)
        texts: list[ColumnElement[Any]] = [
            run_rows.c.conversation_id,
            run_rows.c.wrapup_code,
            status,
            func.coalesce(run_rows.c.message, items.c.message, ""),
            items.c.participant_id,
            items.c.communication_id,
            items.c.previous_code_name,
            items.c.previous_code,
            items.c.code_id,
            items.c.error_code,
            items.c.context_id,
            items.c.notes,
            items.c.agent_id,
            items.c.wrapup_end_time,
        ]
        if cell is not None:
            texts = [cell(column) for column in texts]
        base = (
            select(run_rows.c.row, *texts[:9], items.c.http_status, *texts[9:])
            .select_from(run_rows.outerjoin(items, items.c.id == run_rows.c.item_id))
            .where(run_rows.c.run_id == run_id)
        )
        if statuses:
            base = base.where(status.in_(list(statuses)))
        yield from self._run_row_pages(base, batch)
