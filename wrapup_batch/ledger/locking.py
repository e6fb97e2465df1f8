"""The ledger lock: at most one live run owns a ledger; a lock whose run died is taken over."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from wrapup_batch.errors import LedgerBusyError, LedgerError
from wrapup_batch.ledger.base import LedgerBase, db_failure
from wrapup_batch.ledger.records import now_iso
from wrapup_batch.ledger.schema import lock_table

STALE_LOCK_SECONDS = 300

#: When this process started using ledgers (as `now_iso` stamps compare: as strings).
PROCESS_STARTED = now_iso()


class Locking(LedgerBase):
    def acquire_lock(self) -> None:
        """Own the ledger, or raise LedgerBusyError while another live run does."""
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            stamp = now_iso()
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(lock_table).values(id=1, acquired=stamp, heartbeat=stamp, **me)
                    )
                return
            except IntegrityError:
                holder = self._lock_holder()
                if holder is None:
                    continue
                if not lock_is_stale(holder):
                    raise LedgerBusyError(busy_message(self.display, holder)) from None
                with self.engine.begin() as conn:
                    conn.execute(
                        delete(lock_table).where(
                            and_(
                                lock_table.c.id == 1,
                                lock_table.c.pid == holder["pid"],
                                lock_table.c.acquired == holder["acquired"],
                            )
                        )
                    )
            except DBAPIError as exc:
                raise LedgerError(db_failure(self.display, exc)) from None
        raise LedgerBusyError(f"{self.display} is being claimed by another run; try again")

    def _lock_holder(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(lock_table).where(lock_table.c.id == 1)).mappings().first()
        return dict(row) if row else None

    def set_lock_run(self, run_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(lock_table)
                .where(lock_table.c.pid == os.getpid())
                .values(run_id=run_id, heartbeat=now_iso())
            )

    def heartbeat(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(lock_table)
                .where(lock_table.c.pid == os.getpid())
                .values(heartbeat=now_iso())
            )

    def release_lock(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(lock_table).where(lock_table.c.pid == os.getpid()))


def lock_is_stale(holder: Mapping[str, Any]) -> bool:
    if holder["host"] == socket.gethostname():
        pid = int(holder["pid"])
        if pid == os.getpid():
            # Our own pid: a lock this process took (another Ledger object on the file), or
            # one left by a dead process whose pid we now have (a restarted container's run
            # is often pid 1 again): the latter was taken before this process started.
            return str(holder["acquired"]) < PROCESS_STARTED
        return not pid_alive(pid)
    try:
        beat = datetime.fromisoformat(str(holder["heartbeat"]))
    except ValueError:
        return True
    return (datetime.now(UTC) - beat).total_seconds() > STALE_LOCK_SECONDS


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def busy_message(display: str, holder: Mapping[str, Any]) -> str:
    run = f"run {holder['run_id']}" if holder.get("run_id") else "a run"
    return (
        f"ledger {display} is in use by {run} (pid {holder['pid']} on {holder['host']}, "
        f"started {holder['acquired']}); wait for it to finish, or use another --ledger"
    )
