"""Before the work: each requested code value resolved to a wrap-up code (or found unknown or
ambiguous), and conversations that one input asks different wrap-ups for (`conflict`).

Each is one pass over the run, whatever the number of code values or conflicts: the outcomes
go into a temporary table, and one UPDATE joins the run's rows, their items and that table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import bindparam, text

from wrapup_batch.ledger import dialect
from wrapup_batch.ledger.base import LedgerBase
from wrapup_batch.ledger.records import DECIDED_BEFORE_WORK, ResolvedCode, now_iso
from wrapup_batch.models import Status

#: The run's items still to do, joined to a temporary table `t` on `joined` (items' column).
_RUN_ITEMS = """
    FROM {table} t, run_rows rr
    WHERE rr.run_id = :run_id AND rr.status IS NULL AND rr.item_id = items.id
      AND t.{key} = items.{key}
      AND items.status NOT IN :done
"""

_RESOLVE = text(
    """
    UPDATE items SET
        code_id = CASE WHEN t.status IS NULL THEN t.code_id ELSE items.code_id END,
        code_name = CASE WHEN t.status IS NULL THEN t.code_name ELSE items.code_name END,
        -- resolved: rows decided before the work by an earlier run are to do again;
        -- not resolved: the row is decided (unknown or ambiguous code) for this run
        status = CASE WHEN t.status IS NOT NULL THEN t.status
            WHEN items.status IN :decided THEN :pending ELSE items.status END,
        message = CASE WHEN t.status IS NOT NULL THEN t.message
            WHEN items.status IN :decided THEN '' ELSE items.message END,
        last_run_id = CASE WHEN t.status IS NOT NULL THEN :run_id ELSE items.last_run_id END,
        updated = CASE WHEN t.status IS NOT NULL OR items.status IN :decided THEN :now
            ELSE items.updated END
    """
    + _RUN_ITEMS.format(table="wrapup_resolved", key="requested_code")
    + "  AND (t.status IS NULL OR items.status <> :in_flight)"
).bindparams(
    bindparam("done", expanding=True),
    bindparam("decided", expanding=True, value=list(DECIDED_BEFORE_WORK)),
    bindparam("pending", value=Status.PENDING.value),
    bindparam("in_flight", value=Status.IN_FLIGHT.value),
)

_MARK_CONFLICTS = text(
    "UPDATE items SET status = :conflict, message = t.message, last_run_id = :run_id, "
    "updated = :now"
    + _RUN_ITEMS.format(table="wrapup_conflicts", key="conversation_id")
    + "  AND items.status <> :in_flight"
).bindparams(
    bindparam("done", expanding=True),
    bindparam("conflict", value=Status.CONFLICT.value),
    bindparam("in_flight", value=Status.IN_FLIGHT.value),
)


class Resolving(LedgerBase):
    def requested_codes(self, run_id: int, done: Sequence[str]) -> list[str]:
        """The distinct wrap-up code values of the run's items still to do."""
        # First the codes of any item not done, in one sequential pass over items: when
        # there is none (a rerun of finished work), the join of every run row with its item
        # is skipped.
        candidates = text(
            "SELECT requested_code FROM items WHERE status NOT IN :done LIMIT 1"
        ).bindparams(bindparam("done", expanding=True))
        query = text(
            "SELECT DISTINCT items.requested_code FROM run_rows rr "
            "JOIN items ON items.id = rr.item_id "
            "WHERE rr.run_id = :run_id AND rr.status IS NULL AND items.status NOT IN :done"
        ).bindparams(bindparam("done", expanding=True))
        with self.engine.connect() as conn:
            if conn.execute(candidates, {"done": list(done)}).first() is None:
                return []
            values: list[Any] = list(
                conn.execute(query, {"run_id": run_id, "done": list(done)}).scalars()
            )
        return [str(value) for value in values]

    def apply_resolutions(
        self, run_id: int, done: Sequence[str], resolved: Sequence[ResolvedCode]
    ) -> None:
        """Record how every requested code value resolved, on every item of the run asking it:
        one UPDATE for all of them (an item being applied keeps its status: a code that no
        longer resolves does not stop a POST that may have been sent)."""
        if not resolved:
            return
        rows = [
            {
                "requested_code": r.requested,
                "code_id": r.code_id,
                "code_name": r.code_name,
                "status": r.status.value if r.status is not None else None,
                "message": r.message,
            }
            for r in resolved
        ]
        columns = (
            "(requested_code TEXT PRIMARY KEY, code_id TEXT, code_name TEXT, status TEXT, "
            "message TEXT NOT NULL)"
        )
        with self._begin() as conn, _temporary(conn, "wrapup_resolved", columns):
            conn.execute(
                text(
                    "INSERT INTO wrapup_resolved (requested_code, code_id, code_name, status, "
                    "message) VALUES (:requested_code, :code_id, :code_name, :status, :message)"
                ),
                rows,
            )
            conn.execute(_RESOLVE, {"run_id": run_id, "done": list(done), "now": now_iso()})

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
        """`apply_resolutions` for one value."""
        outcome = ResolvedCode(requested, code_id, code_name, status, message)
        self.apply_resolutions(run_id, done, [outcome])

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
        columns = "(conversation_id TEXT PRIMARY KEY, message TEXT NOT NULL)"
        with self._begin() as conn:
            conflicts = conn.execute(find, {"run_id": run_id}).all()
            if not conflicts:
                return 0
            messages = [
                {
                    "conversation_id": conversation_id,
                    "message": (
                        "this input asks for different wrap-ups on this conversation (rows "
                        + ", ".join(sorted(str(rows_).split(", "), key=int))
                        + "); none was applied: keep one row per conversation"
                    ),
                }
                for conversation_id, rows_ in conflicts
            ]
            with _temporary(conn, "wrapup_conflicts", columns):
                conn.execute(
                    text(
                        "INSERT INTO wrapup_conflicts (conversation_id, message) "
                        "VALUES (:conversation_id, :message)"
                    ),
                    messages,
                )
                conn.execute(
                    _MARK_CONFLICTS, {"run_id": run_id, "done": list(done), "now": now_iso()}
                )
        return len(conflicts)


@contextmanager
def _temporary(conn: Any, name: str, columns: str) -> Iterator[None]:
    """A temporary table for the length of the block, in the caller's transaction."""
    conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    conn.execute(text(f"CREATE TEMPORARY TABLE {name} {columns}"))
    try:
        yield
    finally:
        conn.execute(text(f"DROP TABLE {name}"))
