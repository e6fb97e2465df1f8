"""One rate budget per OAuth client, shared through the ledger database by every process that
uses the client (`throttle.RateBudget`).

A row of `rate_budgets` per client id holds a virtual send schedule: `next_slot`, the first
send time (epoch seconds) no process has reserved yet. A process reserves a block of slots in
one short transaction: from `max(next_slot, now, paused_until)`, spaced at the client's current
rate, and moves `next_slot` past them; so the processes' sends interleave and together keep to
the rate, at one round trip per block (about a second of sending). A 429 writes
`paused_until` (its `Retry-After`) and halves `rate` (at most once a second); the rate climbs
back linearly to the limit over `RECOVERY_SECONDS` of time after the pause, as a lone
throttle's does. Times are wall-clock: processes on several hosts need clocks in step (NTP).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from wrapup_batch.errors import LedgerError
from wrapup_batch.ledger.base import db_failure
from wrapup_batch.ledger.schema import rate_budgets
from wrapup_batch.throttle import Grant

#: After a pause, seconds for the lowered rate to climb back to the limit.
RECOVERY_SECONDS = 5.0
#: How much wider than `60 / rate` the slots are spaced: Genesys counts a request when it
#: arrives, and arrivals jitter by network and server delays; 0.4 % is 240 ms a minute, so that
#: the request a minute after another does not arrive inside its window (measured: at exactly
#: the rate, one 429 in 450 requests at 300/min with 250 ms latency; none with the margin).
GRID_MARGIN = 0.004
#: The lowest rate a 429 brings a client to, as a fraction of its limit.
MIN_FRACTION = 0.2


_Change = Callable[[dict[str, Any], float], tuple[dict[str, Any], Any]]


class SharedBudget:
    """The budget of one client id in one ledger database (safe to share between threads)."""

    def __init__(
        self,
        engine: Engine,
        display: str,
        client_id: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.display = display
        self.client_id = client_id
        self._clock = clock
        self._is_sqlite = engine.dialect.name == "sqlite"

    def reserve(self, count: int, limit_per_minute: float) -> Grant:
        def change(row: dict[str, Any], now: float) -> tuple[dict[str, Any], Grant]:
            rate = _climbed(row, now, limit_per_minute)
            start = max(row["next_slot"], now, row["paused_until"])
            interval = 60.0 / rate * (1.0 + GRID_MARGIN)
            values = {
                "limit_per_minute": limit_per_minute,
                "next_slot": start + count * interval,
                "rate": rate,
                "rate_at": max(now, row["paused_until"]),
            }
            return values, Grant(start=start, interval=interval, count=count)

        grant: Grant = self._change(limit_per_minute, change)
        return grant

    def rate_limited(self, retry_after: float, limit_per_minute: float) -> None:
        def change(row: dict[str, Any], now: float) -> tuple[dict[str, Any], None]:
            until = max(row["paused_until"], now + retry_after)
            values: dict[str, Any] = {
                "paused_until": until,
                "next_slot": max(row["next_slot"], until),
            }
            if now - row["lowered_at"] >= 1.0:
                floor = limit_per_minute * MIN_FRACTION
                values.update(
                    rate=max(floor, _climbed(row, now, limit_per_minute) / 2.0),
                    rate_at=until,
                    lowered_at=now,
                )
            return values, None

        self._change(limit_per_minute, change)

    def state(self) -> dict[str, Any] | None:
        """The budget's row (for `status` and tests), or None before its first use."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(rate_budgets).where(rate_budgets.c.client_id == self.client_id))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def _change(
        self, limit: float, change: Callable[[dict[str, Any], float], tuple[dict[str, Any], Any]]
    ) -> Any:
        try:
            with self.engine.begin() as conn:
                if self._is_sqlite:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock before reading
                row = self._locked_row(conn, limit)
                values, result = change(row, self._clock())
                conn.execute(
                    update(rate_budgets)
                    .where(rate_budgets.c.client_id == self.client_id)
                    .values(**values)
                )
            return result
        except DBAPIError as exc:
            raise LedgerError(db_failure(self.display, exc)) from None

    def _locked_row(self, conn: Any, limit: float) -> dict[str, Any]:
        query = select(rate_budgets).where(rate_budgets.c.client_id == self.client_id)
        if not self._is_sqlite:
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is not None:
            return dict(row)
        now = self._clock()
        fresh = {
            "client_id": self.client_id,
            "limit_per_minute": limit,
            "next_slot": now,
            "paused_until": 0.0,
            "rate": limit,
            "rate_at": now,
            "lowered_at": 0.0,
        }
        if self._is_sqlite:
            conn.execute(insert(rate_budgets).values(**fresh))
            return fresh
        try:
            with conn.begin_nested():
                conn.execute(insert(rate_budgets).values(**fresh))
        except IntegrityError:
            pass  # another process created it meanwhile: take its row
        return dict(conn.execute(query).mappings().one())


def _climbed(row: dict[str, Any], now: float, limit: float) -> float:
    """The client's rate at `now`: the rate stored, climbed back since `rate_at`."""
    floor = limit * MIN_FRACTION
    per_second = (limit - floor) / RECOVERY_SECONDS
    elapsed = max(0.0, now - max(float(row["rate_at"]), float(row["paused_until"])))
    return max(floor, min(limit, float(row["rate"]) + elapsed * per_second))
