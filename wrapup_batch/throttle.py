"""One rate limiter shared by every worker of a run.

Genesys Cloud counts requests per OAuth token in a rolling 60-second window (300/min by
default) and answers 429 with `Retry-After` past it. The throttle keeps the run just under that:

- a token bucket refilled at the current rate, with a burst of one request, paces the requests;
- a log of the send times of the last `limit` requests guarantees that no 60-second window ever
  holds more than the configured limit, whatever the bucket allows;
- a 429 pauses every worker until its `Retry-After` has passed and halves the rate (at most once
  a second, so that a burst of 429s from requests already in flight counts as one);
- the rate climbs back linearly while requests succeed, to the full limit in `recovery_seconds`.

Every wait is interruptible: `stop()` wakes all waiters, which then raise `ThrottleStopped`.

With a `RateBudget` (one per OAuth client, kept in the ledger database: `ledger.budget`), the
pacing is shared by every process on that client: the throttle reserves the send slots of the
next second from the budget in one transaction (a block of `limit/60` slots, spaced at the
client's current rate, after the slots other processes reserved), then sends at those times;
a slot missed by more than one interval is dropped, not sent late, so that processes never
burst. A 429 is written to the budget (a pause until `Retry-After` and a halved rate, climbing
back as above), so every other process's next reservation starts after it, at the lower rate.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

WINDOW_SECONDS = 60.0
#: How many seconds of sending one reservation from a shared budget covers.
BLOCK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Grant:
    """Send slots reserved from a shared budget: `count` slots from `start` (wall-clock epoch
    seconds), `interval` seconds apart."""

    start: float
    interval: float
    count: int


class RateBudget(Protocol):
    """One OAuth client's rate budget, shared by every process using the client."""

    def reserve(self, count: int, limit_per_minute: float) -> Grant:
        """Reserve the next `count` send slots at the client's current rate."""
        ...

    def rate_limited(self, retry_after: float, limit_per_minute: float) -> None:
        """Tell every process on the client that a 429 asked to wait `retry_after` seconds."""
        ...


class ThrottleStopped(Exception):
    """Raised by `acquire` when the run is stopping."""


class WriteNotSent(ThrottleStopped):
    """The run stopped before a write was sent (no attempt of it can have landed)."""


@dataclass(frozen=True, slots=True)
class ThrottleStats:
    requests: int
    throttled: int
    retry_after_wait_seconds: float
    current_rate_per_minute: float
    limit_per_minute: float
    requests_per_minute: float  # achieved, from the first request sent to the last


class Throttle:
    def __init__(
        self,
        limit_per_minute: float,
        *,
        min_fraction: float = 0.2,
        recovery_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        budget: RateBudget | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` and `sleep` replace time for tests: with `sleep` given, `acquire` calls it
        with the seconds to wait (a fake clock's sleep moves the clock) instead of waiting on
        the condition, so that a minute of pacing takes no time."""
        if limit_per_minute <= 0:
            raise ValueError("limit_per_minute must be positive")
        self.limit = float(limit_per_minute)
        self._window_cap = max(1, int(limit_per_minute))
        self._rate = self.limit  # requests per minute, adapted on 429
        self._min_rate = self.limit * min_fraction
        self._recovery_per_second = (self.limit - self._min_rate) / recovery_seconds
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._stopped = False
        self._tokens = 1.0
        self._last_refill = clock()
        self._last_raise = clock()
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._last_lowered = float("-inf")
        self._requests = 0
        self._first_sent = 0.0
        self._last_sent = 0.0
        self._throttled = 0
        self._retry_after_wait = 0.0
        self.budget = budget
        self._wall_clock = wall_clock
        self._slots: deque[float] = deque()  # reserved send times, on `clock`
        self._slot_interval = 60.0 / self.limit
        self._block = max(1, round(self.limit / 60.0 * BLOCK_SECONDS))
        self.reservations = 0

    # -- waiting for a slot ---------------------------------------------------------------

    def acquire(self) -> None:
        """Block until one request may be sent; raise ThrottleStopped when stopping."""
        with self._cond:
            while True:
                if self._stopped:
                    raise ThrottleStopped
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._take_slot()
                    self._sent.append(now)
                    self._requests += 1
                    self._first_sent = self._first_sent or now
                    self._last_sent = now
                    return
                if self._sleep is not None:
                    self._sleep(wait)
                else:
                    self._cond.wait(timeout=wait)

    def _wait_needed(self, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        if self.budget is not None:
            return self._shared_wait(now)
        self._refill(now)
        waits = [0.0]
        if self._tokens < 1.0:
            waits.append((1.0 - self._tokens) * 60.0 / self._rate)
        while self._sent and now - self._sent[0] >= WINDOW_SECONDS:
            self._sent.popleft()
        if len(self._sent) >= self._window_cap:
            waits.append(self._sent[0] + WINDOW_SECONDS - now)
        return max(waits)

    def _shared_wait(self, now: float) -> float:
        """The wait for the next reserved slot (reserving a block when none is left)."""
        while self._slots and now - self._slots[0] > self._slot_interval:
            self._slots.popleft()  # missed: sending it late could burst with other processes
        if not self._slots:
            assert self.budget is not None
            grant = self.budget.reserve(self._block, self.limit)
            self.reservations += 1
            offset = self._clock() - self._wall_clock()
            self._slot_interval = grant.interval
            self._rate = 60.0 / grant.interval
            self._slots.extend(
                grant.start + offset + i * grant.interval for i in range(grant.count)
            )
        waits = [self._slots[0] - now]
        while self._sent and now - self._sent[0] >= WINDOW_SECONDS:
            self._sent.popleft()
        if len(self._sent) >= self._window_cap:
            waits.append(self._sent[0] + WINDOW_SECONDS - now)
        return max(waits)

    def _take_slot(self) -> None:
        if self.budget is not None:
            self._slots.popleft()
        else:
            self._tokens -= 1.0

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last_refill)
        self._last_refill = now
        self._tokens = min(1.0, self._tokens + elapsed * self._rate / 60.0)

    # -- what the responses say -----------------------------------------------------------

    def on_response(self, status: int, retry_after: float | None) -> None:
        """Tell the throttle how a request ended (status 0: no response)."""
        with self._cond:
            now = self._clock()
            if status == 429:
                self._on_rate_limited(now, retry_after)
                self._slots.clear()  # reserved before the 429: the budget reschedules
            elif 200 <= status < 300:
                self._climb(now)
            self._cond.notify_all()
        if status == 429 and self.budget is not None:
            wait = retry_after if retry_after is not None and retry_after > 0 else 1.0
            self.budget.rate_limited(wait, self.limit)

    def _on_rate_limited(self, now: float, retry_after: float | None) -> None:
        self._throttled += 1
        wait = retry_after if retry_after is not None and retry_after > 0 else 1.0
        until = now + wait
        if until > self._paused_until:
            self._retry_after_wait += until - max(now, self._paused_until)
            self._paused_until = until
        if now - self._last_lowered >= 1.0:
            self._last_lowered = now
            self._rate = max(self._min_rate, self._rate / 2.0)
            self._tokens = min(self._tokens, 0.0)
        self._last_raise = until

    def _climb(self, now: float) -> None:
        if self._rate < self.limit:
            elapsed = max(0.0, now - self._last_raise)
            self._rate = min(self.limit, self._rate + elapsed * self._recovery_per_second)
        self._last_raise = now

    # -- control ----------------------------------------------------------------------------

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stats(self) -> ThrottleStats:
        with self._cond:
            span = self._last_sent - self._first_sent
            achieved = (self._requests - 1) * 60.0 / span if span > 0 else 0.0
            return ThrottleStats(
                requests=self._requests,
                throttled=self._throttled,
                retry_after_wait_seconds=round(self._retry_after_wait, 3),
                current_rate_per_minute=round(self._rate, 1),
                limit_per_minute=self.limit,
                requests_per_minute=round(achieved, 1),
            )
