"""The work of a run: the items still to do, their outcomes as they come, and what a run
applied (for `revert`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, update

from wrapup_batch.ledger.base import LedgerBase
from wrapup_batch.ledger.records import (
    DECIDED_BEFORE_WORK,
    AppliedItem,
    ItemUpdate,
    WorkItem,
    now_iso,
)
from wrapup_batch.ledger.schema import items, run_rows
from wrapup_batch.models import Status

#: The columns a `WorkItem` is built from, in its order (`work_item`).
WORK_ITEM_COLUMNS = (
    run_rows.c.row,
    items.c.id,
    items.c.conversation_id,
    items.c.code_id,
    items.c.code_name,
    items.c.agent_id,
    items.c.notes,
    items.c.status,
    items.c.previous_code,
    items.c.previous_code_name,
    items.c.communication_target,
    items.c.expected_code,
    items.c.attempts,
)


def work_item(r: Any) -> WorkItem:
    """A `WorkItem` from a row of `WORK_ITEM_COLUMNS`."""
    return WorkItem(
        row=r[0],
        item_id=r[1],
        conversation_id=r[2],
        code_id=r[3] or "",
        code_name=r[4] or "",
        agent_id=r[5] or None,
        notes=r[6] or None,
        status=r[7],
        previous_code=r[8],
        previous_code_name=r[9],
        communication_id=r[10] or None,
        expected_code=r[11] or None,
        attempts=int(r[12] or 0),
    )


#: `Ledger.record`: one item's outcome (built once; SQLite gets the plain SQL with tuples).
_RECORD_STATEMENT = (
    update(items)
    .where(items.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        message=bindparam("b_message"),
        participant_id=bindparam("b_participant_id"),
        communication_id=bindparam("b_communication_id"),
        media=bindparam("b_media"),
        previous_code=bindparam("b_previous_code"),
        previous_code_name=bindparam("b_previous_code_name"),
        http_status=bindparam("b_http_status"),
        error_code=bindparam("b_error_code"),
        context_id=bindparam("b_context_id"),
        wrapup_end_time=bindparam("b_wrapup_end_time"),
        attempts=items.c.attempts + bindparam("b_attempts"),
        last_run_id=bindparam("b_run_id"),
        updated=bindparam("b_updated"),
    )
)
_RECORD_SQLITE = (
    "UPDATE items SET status = ?, message = ?, participant_id = ?, communication_id = ?, "
    "media = ?, previous_code = ?, previous_code_name = ?, http_status = ?, error_code = ?, "
    "context_id = ?, wrapup_end_time = ?, attempts = attempts + ?, last_run_id = ?, updated = ? "
    "WHERE id = ?"
)


class Work(LedgerBase):
    def _work_query(self, run_id: int, skip: Sequence[str]) -> Any:
        return (
            select(*WORK_ITEM_COLUMNS)
            .select_from(run_rows.join(items, items.c.id == run_rows.c.item_id))
            .where(run_rows.c.run_id == run_id)
            .where(run_rows.c.status.is_(None))
            .where(items.c.status.not_in(skip))
        )

    def count_work(self, run_id: int, done: Sequence[str]) -> int:
        skip = [*done, *DECIDED_BEFORE_WORK]
        query = select(func.count()).select_from(self._work_query(run_id, skip).subquery())
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def iter_work(
        self, run_id: int, done: Sequence[str], *, batch: int = 1000
    ) -> Iterator[list[WorkItem]]:
        """The run's items still to do, in input order, a page at a time."""
        skip = [*done, *DECIDED_BEFORE_WORK]
        for rows in self._run_row_pages(self._work_query(run_id, skip), batch):
            yield [work_item(r) for r in rows]

    def record(self, run_id: int, updates: Sequence[ItemUpdate]) -> None:
        """Write a batch of item outcomes in one transaction.

        Called twice per applied row (the in_flight mark, then the outcome): on SQLite the
        values go to the driver's `executemany` as tuples, the statement built once.
        """
        if not updates:
            return
        with self._begin() as conn:
            self._write_outcomes(conn, run_id, updates)

    def _write_outcomes(self, conn: Any, run_id: int, updates: Sequence[ItemUpdate]) -> None:
        """`record`'s statements, in the caller's transaction."""
        if not updates:
            return
        stamp = now_iso()
        if self.is_sqlite:
            rows = [
                (
                    u.status,
                    u.message,
                    u.participant_id,
                    u.communication_id,
                    u.media,
                    u.previous_code,
                    u.previous_code_name,
                    u.http_status,
                    u.error_code,
                    u.context_id,
                    u.wrapup_end_time,
                    u.attempts,
                    run_id,
                    stamp,
                    u.item_id,
                )
                for u in updates
            ]
            conn.exec_driver_sql(_RECORD_SQLITE, rows)
            return
        values = [
            {
                "b_id": u.item_id,
                "b_status": u.status,
                "b_message": u.message,
                "b_participant_id": u.participant_id,
                "b_communication_id": u.communication_id,
                "b_media": u.media,
                "b_previous_code": u.previous_code,
                "b_previous_code_name": u.previous_code_name,
                "b_http_status": u.http_status,
                "b_error_code": u.error_code,
                "b_context_id": u.context_id,
                "b_wrapup_end_time": u.wrapup_end_time,
                "b_attempts": u.attempts,
                "b_run_id": run_id,
                "b_updated": stamp,
            }
            for u in updates
        ]
        conn.execute(_RECORD_STATEMENT, values)

    def iter_applied(self, run_id: int, *, batch: int = 1000) -> Iterator[list[AppliedItem]]:
        """The items this run applied (it was the last to write them), in input order."""
        base = (
            select(
                run_rows.c.row,
                items.c.conversation_id,
                items.c.code_id,
                items.c.communication_id,
                items.c.previous_code,
            )
            .select_from(run_rows.join(items, items.c.id == run_rows.c.item_id))
            .where(run_rows.c.run_id == run_id)
            .where(run_rows.c.status.is_(None))
            .where(items.c.status == Status.APPLIED.value)
            .where(items.c.last_run_id == run_id)
        )
        for rows in self._run_row_pages(base, batch):
            yield [
                AppliedItem(
                    conversation_id=r[1],
                    code_id=r[2] or "",
                    communication_ids=tuple((r[3] or "").split(";")),
                    previous_codes=tuple((r[4] or "").split(";")),
                )
                for r in rows
            ]
