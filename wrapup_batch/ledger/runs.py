"""The runs table: a run is recorded when it starts and when it finishes (or, refused before
it sent anything, forgotten)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import DBAPIError

from wrapup_batch.errors import LedgerError
from wrapup_batch.ledger.base import db_failure
from wrapup_batch.ledger.claims import Claims
from wrapup_batch.ledger.records import RunInfo, StartedBy, local_account, now_iso, run_info
from wrapup_batch.ledger.schema import items, run_rows, runs


class Runs(Claims):
    def start_run(
        self,
        *,
        source: str,
        options: Mapping[str, Any],
        dry_run: bool,
        kind: str = "run",
        started_by: StartedBy | None = None,
    ) -> int:
        who = started_by or local_account()
        try:
            with self._begin() as conn:
                result = conn.execute(
                    insert(runs).values(
                        kind=kind,
                        started=now_iso(),
                        source=source,
                        options=json.dumps(dict(options), sort_keys=True, default=str),
                        dry_run=dry_run,
                        pid=os.getpid(),
                        host=socket.gethostname(),
                        started_by_id=who.id,
                        started_by_name=who.name,
                    )
                )
                run_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        except DBAPIError as exc:  # the first write of a run: a read-only ledger fails here
            raise LedgerError(db_failure(self.display, exc)) from None
        if run_id is None:
            raise LedgerError(f"{self.display}: could not record the run")
        self.set_lock_run(int(run_id))
        return int(run_id)

    def finish_run(
        self, run_id: int, *, counts: Mapping[str, int], summary: Mapping[str, Any], exit_code: int
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    finished=now_iso(),
                    counts=json.dumps(dict(counts), sort_keys=True),
                    summary=json.dumps(dict(summary), sort_keys=True, default=str),
                    exit_code=exit_code,
                )
            )

    def discard_run(self, run_id: int) -> None:
        """Forget a run refused before it sent anything: its rows, the items it created (still
        pending) and the run itself, as if it had never started."""
        with self._begin() as conn:
            conn.execute(delete(run_rows).where(run_rows.c.run_id == run_id))
            conn.execute(delete(items).where(items.c.first_run_id == run_id))
            conn.execute(delete(runs).where(runs.c.id == run_id))

    def list_runs(self) -> list[RunInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.id)).mappings().all()
        return [run_info(row) for row in rows]

    def get_run(self, run_id: int | None = None) -> RunInfo | None:
        query = select(runs)
        query = (
            query.where(runs.c.id == run_id)
            if run_id is not None
            else query.order_by(runs.c.id.desc()).limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return run_info(row) if row else None
