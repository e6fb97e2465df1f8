"""Ingest: a run's input rows, a pending item for each new request, and the rows that repeat
an earlier row of the same run (`duplicate`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, text, update

from wrapup_batch.ledger.base import LedgerBase
from wrapup_batch.ledger.dialect import bulk_insert, copy_ingest, refresh_statistics
from wrapup_batch.ledger.records import now_iso
from wrapup_batch.ledger.schema import items, run_rows
from wrapup_batch.models import InputRow, Status

#: What `Ledger.ingest` binds per item, in the order of its value tuples (the rest of a new
#: item is the same for every row).
_ITEM_COLUMNS = (
    "item_key",
    "conversation_id",
    "requested_code",
    "agent_id",
    "notes",
    "communication_target",
    "expected_code",
)


#: `Ledger.ingest`: each new run row gets its item's id.
_LINK_ITEMS = (
    update(run_rows)
    .where(run_rows.c.run_id == bindparam("b_run_id"))
    .where(run_rows.c.row.between(bindparam("b_first"), bindparam("b_last")))
    .where(run_rows.c.item_key.is_not(None))
    .values(
        item_id=select(items.c.id).where(items.c.item_key == run_rows.c.item_key).scalar_subquery()
    )
)


def item_key(row: InputRow) -> str:
    parts: tuple[str, ...] = (
        row.conversation_id,
        row.wrapup_code,
        row.agent_id or "",
        row.notes or "",
    )
    if row.communication_id or row.expected_code:
        parts += (row.communication_id or "", row.expected_code or "")
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).hexdigest()


class Ingest(LedgerBase):
    def ingest(self, run_id: int, chunk: Sequence[InputRow]) -> None:
        """Record one chunk of input rows, and a pending item for each new valid request.

        One transaction per chunk. Values go to the database as tuples through the driver's
        `executemany` on SQLite (SQLAlchemy's per-row parameter processing costs more than
        SQLite's own work for a million rows), through one COPY on PostgreSQL; other
        databases take the Core statement.
        """
        stamp = now_iso()
        item_values: list[tuple[Any, ...]] = []
        row_values: list[tuple[Any, ...]] = []
        invalid_values: list[tuple[Any, ...]] = []
        for row in chunk:
            if row.problem is not None:
                status = (row.status or Status.INVALID).value
                invalid_values.append(
                    (row.row, row.conversation_id, row.wrapup_code, status, row.problem)
                )
                continue
            key = item_key(row)
            row_values.append((row.row, key, row.conversation_id, row.wrapup_code))
            item_values.append(
                (
                    key,
                    row.conversation_id,
                    row.wrapup_code,
                    row.agent_id or "",
                    row.notes or "",
                    row.communication_id or "",
                    row.expected_code or "",
                )
            )
        new_item: dict[str, int | str] = {
            "status": Status.PENDING.value,
            "message": "",
            "attempts": 0,
            "first_run_id": run_id,
            "last_run_id": run_id,
            "created": stamp,
            "updated": stamp,
        }
        with self._begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # one COPY, then items and rows (with their item ids) from it
                rows = [r + i[3:] for r, i in zip(row_values, item_values, strict=True)]
                copy_ingest(conn, run_id, rows, new_item)
            else:
                self._insert_rows(conn, run_id, item_values, row_values, new_item)
            bulk_insert(
                self.engine,
                conn,
                run_rows,
                ("row", "conversation_id", "wrapup_code", "status", "message"),
                invalid_values,
                {"run_id": run_id},
            )

    def _insert_rows(
        self,
        conn: Any,
        run_id: int,
        item_values: list[tuple[Any, ...]],
        row_values: list[tuple[Any, ...]],
        new_item: dict[str, int | str],
    ) -> None:
        bulk_insert(
            self.engine, conn, items, _ITEM_COLUMNS, item_values, new_item, ignore_conflicts=True
        )
        bulk_insert(
            self.engine,
            conn,
            run_rows,
            ("row", "item_key", "conversation_id", "wrapup_code"),
            row_values,
            {"run_id": run_id},
        )
        if row_values:  # the rows' item ids: one statement, while the pages are in cache
            conn.execute(
                _LINK_ITEMS,
                {"b_run_id": run_id, "b_first": row_values[0][0], "b_last": row_values[-1][0]},
            )

    def mark_duplicates(self, run_id: int) -> int:
        """Rows repeating an earlier row of the same run, to the letter, are `duplicate`.

        Linear in the run's rows: the repeated keys are grouped once into a temporary table,
        the run's rows are walked once against it (CROSS JOIN: SQLite keeps the run's rows as
        the outer loop), and only the repeats are updated, through the primary key. (A
        correlated MIN per row made SQLite scan the whole run for every row: quadratic.)
        """
        group = text(
            """
            INSERT INTO wrapup_repeated (item_key, first_row)
            SELECT item_key, MIN("row") FROM run_rows
            WHERE run_id = :run_id AND item_key IS NOT NULL
            GROUP BY item_key HAVING COUNT(*) > 1
            """
        )
        find = text(
            """
            INSERT INTO wrapup_duplicates ("row", first_row)
            SELECT r."row", g.first_row
            FROM run_rows r CROSS JOIN wrapup_repeated g
            WHERE r.run_id = :run_id AND g.item_key = r.item_key AND r."row" > g.first_row
            """
        )
        mark = text(
            """
            UPDATE run_rows SET status = :status, message = 'same as row ' || (
                SELECT d.first_row FROM wrapup_duplicates d WHERE d."row" = run_rows."row")
            WHERE run_id = :run_id AND "row" IN (SELECT "row" FROM wrapup_duplicates)
            """
        )
        temporary = {
            "wrapup_repeated": "(item_key VARCHAR PRIMARY KEY, first_row INTEGER NOT NULL)",
            "wrapup_duplicates": '("row" INTEGER PRIMARY KEY, first_row INTEGER NOT NULL)',
        }
        found = 0
        with self._begin() as conn:
            refresh_statistics(conn)  # the run's rows are all in
            for name, columns in temporary.items():
                conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
                conn.execute(text(f"CREATE TEMPORARY TABLE {name} {columns}"))
            try:
                if conn.execute(group, {"run_id": run_id}).rowcount:
                    conn.execute(find, {"run_id": run_id})
                    count = text("SELECT COUNT(*) FROM wrapup_duplicates")
                    found = int(conn.execute(count).scalar() or 0)
                    conn.execute(mark, {"status": Status.DUPLICATE.value, "run_id": run_id})
            finally:
                for name in temporary:
                    conn.execute(text(f"DROP TABLE {name}"))
        return found
