"""Before the work: each requested code value resolved to a wrap-up code (or found unknown or
ambiguous), and conversations that one input asks different wrap-ups for (`conflict`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, case, func, literal_column, select, text, update

from wrapup_batch.ledger import dialect
from wrapup_batch.ledger.base import LedgerBase
from wrapup_batch.ledger.records import DECIDED_BEFORE_WORK, now_iso
from wrapup_batch.ledger.schema import items, run_rows
from wrapup_batch.models import Status


class Resolution(LedgerBase):
    def _todo_keys(self, run_id: int) -> Any:
        return (
            select(run_rows.c.item_key)
            .where(run_rows.c.run_id == run_id)
            .where(run_rows.c.status.is_(None))
        )

    def requested_codes(self, run_id: int, done: Sequence[str]) -> list[str]:
        """The distinct wrap-up code values of the run's items still to do."""
        # First the codes of any item not done, in one sequential pass over items: when
        # there is none (a rerun of finished work), the join of every run row with its item
        # (a random lookup each) is skipped.
        candidates = select(items.c.requested_code).where(items.c.status.not_in(done)).limit(1)
        with self.engine.connect() as conn:
            if conn.execute(candidates).first() is None:
                return []
        query = (
            select(items.c.requested_code)
            .distinct()
            .where(items.c.item_key.in_(self._todo_keys(run_id)))
            .where(items.c.status.not_in(done))
        )
        with self.engine.connect() as conn:
            values: list[Any] = list(conn.execute(query).scalars())
        return [str(value) for value in values]

    def apply_resolution(
        self,
        run_id: int,
        done: Sequence[str],
        requested: str,
        *,
        code_id: str | None,
        code_name: str | None,
        status: Status | None,
        message: str,
    ) -> None:
        """Record how one requested code value resolved, on every item of the run asking it.

        One UPDATE per call. When the run is a large part of the ledger (a first run of a
        million rows), SQLite is made to walk `items` in order and test each against the run's
        keys (`+item_key` keeps it off the key index), instead of looking each of the run's
        keys up in the index: in random order that rewrote the table page by page (measured:
        3 codes x 1M rows, 50 s before, 17 s so).
        """
        with self._begin() as conn:
            key: Any = items.c.item_key
            if self.is_sqlite and self._run_is_large(conn, run_id):
                key = literal_column("+items.item_key")
            where = and_(
                items.c.requested_code == requested,
                key.in_(self._todo_keys(run_id)),
                items.c.status.not_in(done),
            )
            if status is None:
                decided = items.c.status.in_(DECIDED_BEFORE_WORK)
                conn.execute(
                    update(items)
                    .where(where)
                    .values(
                        code_id=code_id,
                        code_name=code_name,
                        # rows decided before the work by an earlier run are to do again
                        status=case((decided, Status.PENDING.value), else_=items.c.status),
                        message=case((decided, ""), else_=items.c.message),
                        updated=case((decided, now_iso()), else_=items.c.updated),
                    )
                )
            else:
                conn.execute(
                    update(items)
                    .where(where)
                    .where(items.c.status != Status.IN_FLIGHT.value)
                    .values(
                        status=status.value,
                        message=message,
                        last_run_id=run_id,
                        updated=now_iso(),
                    )
                )

    def _run_is_large(self, conn: Any, run_id: int) -> bool:
        """Whether the run's rows are at least a quarter of the ledger's items."""
        rows = conn.execute(
            select(func.count()).select_from(run_rows).where(run_rows.c.run_id == run_id)
        ).scalar()
        known = conn.execute(select(func.max(items.c.id))).scalar()
        return int(rows or 0) * 4 >= int(known or 0)

    def mark_conflicts(self, run_id: int, done: Sequence[str]) -> int:
        """A conversation asked for different wrap-ups in one input: none of them is applied.

        Rows for one conversation that each name a different agent (agent_id) are not a conflict.
        """
        rows_list = dialect.joined_numbers(self.engine, 'rr."row"')
        find = text(
            f"""
            SELECT i.conversation_id, {rows_list} AS rows_
            FROM run_rows rr JOIN items i ON i.id = rr.item_id
            WHERE rr.run_id = :run_id AND rr.status IS NULL
            GROUP BY i.conversation_id
            HAVING COUNT(*) > 1 AND (
                SUM(CASE WHEN i.communication_target = '' AND i.agent_id = ''
                    THEN 1 ELSE 0 END) > 0
                OR COUNT(DISTINCT i.communication_target || '/' || i.agent_id) < COUNT(*))
            """
        )
        with self._begin() as conn:
            conflicts = conn.execute(find, {"run_id": run_id}).all()
            for conversation_id, rows_ in conflicts:
                rows_ = ", ".join(sorted(str(rows_).split(", "), key=int))
                conn.execute(
                    update(items)
                    .where(items.c.conversation_id == conversation_id)
                    .where(items.c.item_key.in_(self._todo_keys(run_id)))
                    .where(items.c.status.not_in(done))
                    .where(items.c.status != Status.IN_FLIGHT.value)
                    .values(
                        status=Status.CONFLICT.value,
                        message=(
                            f"this input asks for different wrap-ups on this conversation "
                            f"(rows {rows_}); none was applied: keep one row per conversation"
                        ),
                        last_run_id=run_id,
                        updated=now_iso(),
                    )
                )
        return len(conflicts)
