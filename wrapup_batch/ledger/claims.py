"""Claims and leases: how several runs, and several workers of one run, share a ledger.

A process working on a run registers as a worker (`workers`: run, pid, host, OAuth client,
heartbeat, lease) and claims the items it works on a batch at a time, in one short write
transaction (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the candidate items read `FOR UPDATE
SKIP LOCKED`, so that workers claiming at once take different items instead of queueing).

The unit of a claim is the conversation (`conversation_claims`, keyed by conversation id):
whoever holds it is the only one changing that conversation, whichever item asked for it. A
claim has a lease (`lease_until`, epoch seconds) that the worker's heartbeat extends; a
worker that dies stops extending it, and once it has passed any worker may take the claim
over. An item left `in_flight` by the dead worker is then read back before anything is sent,
as after any crash. Before an `in_flight` mark is written the claim is checked (and
extended): a worker that lost its claim never POSTs.

A row whose conversation a live worker of another run holds is left to a later run: the row
records which run held it (`run_rows.held_by`) and why (`run_rows.message`), and this run
goes on with the rest. Workers of the same run skip each other's claims, and wait for them
before they finish (taking them over when they expire).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, exists, func, insert, select, update

from wrapup_batch.errors import LedgerBusyError
from wrapup_batch.ledger.budget import SharedBudget
from wrapup_batch.ledger.locking import (
    PROCESS_STARTED,
    Locking,
    busy_message,
    lock_is_stale,
    pid_alive,
)
from wrapup_batch.ledger.records import DECIDED_BEFORE_WORK, ItemUpdate, WorkItem, now_iso
from wrapup_batch.ledger.schema import (
    conversation_claims,
    items,
    lock_table,
    run_rows,
    runs,
    workers,
)
from wrapup_batch.ledger.work import WORK_ITEM_COLUMNS, Work, work_item
from wrapup_batch.models import Status

#: How long a claim lasts without a heartbeat (seconds); `--lease` changes it.
DEFAULT_LEASE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Claimed:
    """One claim attempt: the items now this worker's (input order), how many rows were left
    to a later run because another run holds their conversation, and the last row looked at
    (0 when there was nothing to look at past the cursor)."""

    items: list[WorkItem]
    held: int
    last_row: int


@dataclass(frozen=True, slots=True)
class LiveWorker:
    worker_id: int
    run_id: int
    role: str
    pid: int
    host: str
    client_id: str
    started: str
    heartbeat: str
    claims: int


@dataclass(frozen=True, slots=True)
class RunState:
    finished: str | None
    work_ready: str | None


class Claims(Work, Locking):
    def check_legacy_lock(self) -> None:
        """Refuse to share the ledger with a live run of an older wrapup-batch: it owns the
        whole ledger and claims nothing (LedgerBusyError, exit 5)."""
        holder = self._lock_holder()
        if holder is None:
            return
        if not lock_is_stale(holder):
            raise LedgerBusyError(
                busy_message(self.display, holder).replace(
                    "; wait", ", a wrapup-batch that cannot share a ledger; wait", 1
                )
            )
        with self._begin() as conn:  # left by a run that died: cleared
            conn.execute(
                delete(lock_table)
                .where(lock_table.c.pid == holder["pid"])
                .where(lock_table.c.acquired == holder["acquired"])
            )

    def budget(self, client_id: str) -> SharedBudget:
        """The rate budget of an OAuth client, shared by every process using this ledger."""
        return SharedBudget(self.engine, self.display, client_id)

    def run_state(self, run_id: int) -> RunState:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(runs.c.finished, runs.c.work_ready).where(runs.c.id == run_id)
            ).first()
        return RunState(row[0], row[1]) if row else RunState(None, None)

    def run_row_count(self, run_id: int) -> int:
        query = select(func.count()).select_from(run_rows).where(run_rows.c.run_id == run_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    # -- workers ----------------------------------------------------------------------------

    def register_worker(
        self, run_id: int, *, role: str, client_id: str, lease_seconds: float
    ) -> int:
        stamp = now_iso()
        with self._begin() as conn:
            result = conn.execute(
                insert(workers).values(
                    run_id=run_id,
                    role=role,
                    pid=os.getpid(),
                    host=socket.gethostname(),
                    client_id=client_id,
                    started=stamp,
                    heartbeat=stamp,
                    lease_until=time.time() + lease_seconds,
                )
            )
            key = result.inserted_primary_key
        return int(key[0]) if key else 0

    def reap_dead_workers(self) -> int:
        """End the leases of this host's workers whose process is gone (a run killed, then
        run again: its rows are taken over at once, not after the lease). Workers on other
        hosts cannot be looked at: their claims expire with their lease."""
        host = socket.gethostname()
        query = (
            select(workers.c.id, workers.c.pid, workers.c.started)
            .where(workers.c.host == host)
            .where(workers.c.finished.is_(None))
            .where(workers.c.lease_until > time.time())
        )
        with self.engine.connect() as conn:
            candidates: list[Any] = list(conn.execute(query).all())
        dead = [
            int(worker)
            for worker, pid, started in candidates
            if not pid_alive(int(pid))
            or (int(pid) == os.getpid() and str(started) < PROCESS_STARTED)
        ]
        if dead:
            with self._begin() as conn:
                conn.execute(update(workers).where(workers.c.id.in_(dead)).values(lease_until=0.0))
                conn.execute(
                    update(conversation_claims)
                    .where(conversation_claims.c.worker_id.in_(dead))
                    .values(lease_until=0.0)
                )
        return len(dead)

    def heartbeat_worker(self, worker_id: int, lease_seconds: float) -> None:
        """Extend the worker's lease and every claim it holds (one transaction)."""
        until = time.time() + lease_seconds
        with self._begin() as conn:
            conn.execute(
                update(workers)
                .where(workers.c.id == worker_id)
                .values(heartbeat=now_iso(), lease_until=until)
            )
            conn.execute(
                update(conversation_claims)
                .where(conversation_claims.c.worker_id == worker_id)
                .values(lease_until=until)
            )

    def finish_worker(self, worker_id: int) -> None:
        """The worker stops: its claims are released at once (not left to expire)."""
        with self._begin() as conn:
            conn.execute(
                delete(conversation_claims).where(conversation_claims.c.worker_id == worker_id)
            )
            conn.execute(
                update(workers).where(workers.c.id == worker_id).values(finished=now_iso())
            )

    def live_workers(self) -> list[LiveWorker]:
        """Workers not finished whose lease has not passed, with the claims each holds."""
        now = time.time()
        held = (
            select(func.count())
            .where(conversation_claims.c.worker_id == workers.c.id)
            .where(conversation_claims.c.lease_until > now)
            .scalar_subquery()
        )
        query = (
            select(
                workers.c.id,
                workers.c.run_id,
                workers.c.role,
                workers.c.pid,
                workers.c.host,
                workers.c.client_id,
                workers.c.started,
                workers.c.heartbeat,
                held,
            )
            .where(workers.c.finished.is_(None))
            .where(workers.c.lease_until > now)
            .order_by(workers.c.run_id, workers.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            LiveWorker(
                int(r[0]),
                int(r[1]),
                str(r[2]),
                int(r[3]),
                str(r[4]),
                str(r[5]),
                str(r[6]),
                str(r[7]),
                int(r[8] or 0),
            )
            for r in rows
        ]

    def others_claims(self, run_id: int, worker_id: int) -> int:
        """Live claims that other workers of the run hold (work this worker must wait for)."""
        query = (
            select(func.count())
            .select_from(conversation_claims)
            .where(conversation_claims.c.run_id == run_id)
            .where(conversation_claims.c.worker_id != worker_id)
            .where(conversation_claims.c.lease_until > time.time())
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def expired_claims(self, run_id: int) -> int:
        """Claims of the run's workers whose lease has passed (after ending those of this
        host's dead processes): rows to take over."""
        self.reap_dead_workers()
        query = (
            select(func.count())
            .select_from(conversation_claims)
            .where(conversation_claims.c.run_id == run_id)
            .where(conversation_claims.c.lease_until <= time.time())
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    # -- claiming -----------------------------------------------------------------------------

    def claim(
        self,
        run_id: int,
        worker_id: int,
        done: Sequence[str],
        *,
        after_row: int,
        limit: int,
        lease_seconds: float,
    ) -> Claimed:
        """Claim the run's next items to do past `after_row` (at most `limit` rows looked at).

        Skipped without a word: rows whose conversation a live worker of this run holds (this
        one included: its items are on their way). Rows held by another run's live worker are
        marked `held_by` that run and left.
        """
        if after_row == 0:  # a pass from the start: first free what dead processes held
            self.reap_dead_workers()
        now = time.time()
        until = now + lease_seconds
        skip = [*done, *DECIDED_BEFORE_WORK]
        ours = (
            select(conversation_claims.c.conversation_id)
            .where(conversation_claims.c.conversation_id == items.c.conversation_id)
            .where(conversation_claims.c.run_id == run_id)
            .where(conversation_claims.c.lease_until > now)
        )
        query = (
            select(*WORK_ITEM_COLUMNS)
            .select_from(run_rows.join(items, items.c.id == run_rows.c.item_id))
            .where(run_rows.c.run_id == run_id)
            .where(run_rows.c.row > after_row)
            .where(run_rows.c.status.is_(None))
            .where(run_rows.c.held_by.is_(None))
            .where(items.c.status.not_in(skip))
            .where(~exists(ours))
            .where(  # once per run: not what this run has already recorded an outcome for
                (items.c.last_run_id != run_id)
                | items.c.status.in_([Status.PENDING.value, Status.IN_FLIGHT.value])
            )
            .order_by(run_rows.c.row)
            .limit(limit)
        )
        if not self.is_sqlite:
            query = query.with_for_update(of=items, skip_locked=True)
        with self._begin() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            rows = conn.execute(query).all()
            if not rows:
                return Claimed([], 0, 0)
            wanted = sorted({r[2] for r in rows})
            self._upsert_claims(conn, wanted, worker_id, run_id, until, now)
            holders = {
                conversation: (int(worker), int(run))
                for conversation, worker, run in conn.execute(
                    select(
                        conversation_claims.c.conversation_id,
                        conversation_claims.c.worker_id,
                        conversation_claims.c.run_id,
                    ).where(conversation_claims.c.conversation_id.in_(wanted))
                ).all()
            }
            mine: list[WorkItem] = []
            held: dict[int, list[int]] = {}
            for r in rows:
                worker, run = holders.get(r[2], (0, 0))
                if worker == worker_id:
                    mine.append(work_item(r))
                elif run != run_id and worker:
                    held.setdefault(run, []).append(int(r[0]))
            for run, held_rows in held.items():
                conn.execute(
                    update(run_rows)
                    .where(run_rows.c.run_id == run_id)
                    .where(run_rows.c.row.in_(held_rows))
                    .values(
                        held_by=run,
                        message=(
                            f"left for a later run: run {run} was changing this conversation; "
                            "run the same input again once it has finished"
                        ),
                    )
                )
        return Claimed(mine, sum(len(v) for v in held.values()), int(rows[-1][0]))

    def _upsert_claims(
        self,
        conn: Any,
        conversations: list[str],
        worker_id: int,
        run_id: int,
        until: float,
        now: float,
    ) -> None:
        """Take each conversation's claim unless a live claim of another worker holds it."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
        statement = dialect_insert(conversation_claims).values(
            [
                {
                    "conversation_id": c,
                    "worker_id": worker_id,
                    "run_id": run_id,
                    "lease_until": until,
                }
                for c in conversations
            ]
        )
        statement = statement.on_conflict_do_update(
            index_elements=[conversation_claims.c.conversation_id],
            set_={
                "worker_id": statement.excluded.worker_id,
                "run_id": statement.excluded.run_id,
                "lease_until": statement.excluded.lease_until,
            },
            where=(conversation_claims.c.lease_until <= now)
            | (conversation_claims.c.worker_id == worker_id),
        )
        conn.execute(statement)

    def record_claimed(
        self,
        run_id: int,
        worker_id: int,
        updates: Sequence[tuple[ItemUpdate, str]],
        *,
        release: Callable[[Sequence[ItemUpdate]], Sequence[str]],
        lease_seconds: float,
    ) -> list[ItemUpdate]:
        """`record` for a worker holding claims, in one transaction: an `in_flight` mark is
        written only while the worker still holds its conversation (the claims it marks are
        extended); the outcomes are written; `release(outcomes written)` names the
        conversations whose claims are then given up. Returns the in_flight marks refused
        (their claim was taken over: the POST must not be sent). `updates`: (update, its
        conversation id)."""
        in_flight = Status.IN_FLIGHT.value
        marks = sorted({c for u, c in updates if u.status == in_flight})

        def outcome(kept: set[str]) -> tuple[list[ItemUpdate], list[ItemUpdate]]:
            refused = [u for u, c in updates if u.status == in_flight and c not in kept]
            written = [u for u, c in updates if u.status != in_flight or c in kept]
            return refused, written

        def settled(written: list[ItemUpdate]) -> list[str]:
            return sorted(release([u for u in written if u.status != in_flight]))

        if self.is_sqlite:  # one transaction: one writer at a time, and each one costs CPU
            with self._begin() as conn:
                refused, written = outcome(self._confirm(conn, worker_id, marks, lease_seconds))
                self._write_outcomes(conn, run_id, written)
                self._release(conn, worker_id, settled(written))
            return refused
        # PostgreSQL: three, so that no transaction holds claim locks while it waits for item
        # locks (`claim` takes items, then claims: the other order deadlocked)
        with self._begin() as conn:
            kept = self._confirm(conn, worker_id, marks, lease_seconds)
        refused, written = outcome(kept)
        with self._begin() as conn:
            self._write_outcomes(conn, run_id, written)
        released = settled(written)
        if released:
            with self._begin() as conn:
                self._release(conn, worker_id, released)
        return refused

    def _confirm(
        self, conn: Any, worker_id: int, conversations: list[str], lease_seconds: float
    ) -> set[str]:
        """Extend this worker's claims on `conversations`; those it still holds."""
        if not conversations:
            return set()
        conn.execute(
            update(conversation_claims)
            .where(conversation_claims.c.worker_id == worker_id)
            .where(conversation_claims.c.conversation_id.in_(conversations))
            .values(lease_until=time.time() + lease_seconds)
        )
        return {
            str(c)
            for c in conn.execute(
                select(conversation_claims.c.conversation_id)
                .where(conversation_claims.c.worker_id == worker_id)
                .where(conversation_claims.c.conversation_id.in_(conversations))
            ).scalars()
        }

    @staticmethod
    def _release(conn: Any, worker_id: int, conversations: list[str]) -> None:
        if conversations:
            conn.execute(
                delete(conversation_claims)
                .where(conversation_claims.c.worker_id == worker_id)
                .where(conversation_claims.c.conversation_id.in_(conversations))
            )

    # -- a run's readiness for workers that join it ---------------------------------------------

    def mark_work_ready(self, run_id: int) -> None:
        with self._begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(work_ready=now_iso()))
