"""The shared throttle: pacing, the 60-second window, 429 pauses, recovery, stopping."""

from __future__ import annotations

import math
import threading
import time

import pytest

from wrapup_batch.throttle import Throttle, ThrottleStopped


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_paces_requests_at_the_limit() -> None:
    throttle = Throttle(1200)  # 20 per second: one every 50 ms after the first
    started = time.monotonic()
    for _ in range(11):
        throttle.acquire()
    assert time.monotonic() - started >= 0.45
    assert throttle.stats().requests == 11


class FakeTime(FakeClock):
    """A clock and a sleep that moves it: `acquire` waits without taking any time."""

    def __init__(self) -> None:
        super().__init__()
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        # at least one step of the float: a wait shorter than the clock's resolution passes
        self.now = max(self.now + seconds, math.nextafter(self.now, math.inf))
        self.slept += seconds


def most_in_a_window(times: list[float], window: float = 60.0) -> int:
    """The most send times any half-open window [t, t + 60 s) holds."""
    most, first = 0, 0
    for last, sent in enumerate(times):
        while sent - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.parametrize("limit", [2.5, 30.5, 299.9])
def test_acquire_never_lets_a_rolling_minute_hold_more_than_the_limit(limit: float) -> None:
    """Through `acquire` itself, for five minutes of fake time. At a limit that is not a whole
    number the bucket alone would let ceil(limit) requests into a minute: only the log of send
    times keeps it at the limit, so a throttle that stopped recording them fails here."""
    fake = FakeTime()
    throttle = Throttle(limit, clock=fake, sleep=fake.sleep)
    sent: list[float] = []
    while fake.now < 1000.0 + 300.0:
        throttle.acquire()
        sent.append(fake.now)
        throttle.on_response(200, None)

    assert most_in_a_window(sent) <= limit
    assert most_in_a_window(sent) == int(limit)  # ... and the limit is used, not wasted
    assert len(sent) >= 5 * int(limit)
    assert throttle.stats().requests == len(sent)


def test_acquire_pauses_for_retry_after_then_recovers_to_the_limit_within_the_default_5_s() -> None:
    fake = FakeTime()
    throttle = Throttle(600, clock=fake, sleep=fake.sleep)  # the default recovery_seconds
    for _ in range(3):  # a storm: 429s more than a second apart lower the rate each time
        throttle.on_response(429, 1.0)
        fake.now += 1.0
    throttle.on_response(429, 2.0)
    paused_until = fake.now + 2.0
    assert throttle.stats().current_rate_per_minute == 120  # the floor: 20 % of the limit

    sent: list[float] = []
    rates: list[tuple[float, float]] = []
    while fake.now < paused_until + 8.0:
        throttle.acquire()
        sent.append(fake.now)
        throttle.on_response(200, None)
        rates.append((fake.now - paused_until, throttle.stats().current_rate_per_minute))

    assert sent[0] >= paused_until  # every request waited out the Retry-After
    assert throttle.stats().retry_after_wait_seconds == pytest.approx(5.0)
    # climbing, not jumping: below the limit for the first 4 s, at it from 5 s on
    assert all(rate < 600 for after, rate in rates if after < 4.0)
    assert all(rate == 600 for after, rate in rates if after >= 5.0 + 0.2)
    # and the pace follows the rate: fewer requests in the first second than at the limit
    assert sum(1 for t in sent if t < paused_until + 1.0) <= 4
    assert sum(1 for t in sent if paused_until + 6.0 <= t < paused_until + 7.0) >= 9


def test_never_more_than_the_limit_in_a_rolling_window() -> None:
    clock = FakeClock()
    throttle = Throttle(3, clock=clock)
    sent = []
    for _ in range(3):
        while throttle._wait_needed(clock.now) > 0:
            clock.now += 1.0
        throttle._tokens -= 1.0
        throttle._sent.append(clock.now)
        sent.append(clock.now)
    # the bucket would allow a fourth request 20 s after the third; the window forbids it
    # until the first request is 60 s old
    clock.now = sent[2] + 20.0
    assert throttle._wait_needed(clock.now) == pytest.approx(sent[0] + 60.0 - clock.now)


def test_429_pauses_every_worker_until_retry_after_and_halves_the_rate() -> None:
    throttle = Throttle(6000)
    throttle.on_response(429, 0.3)
    assert throttle.stats().current_rate_per_minute == 3000
    started = time.monotonic()
    throttle.acquire()
    assert time.monotonic() - started >= 0.29
    stats = throttle.stats()
    assert stats.throttled == 1
    assert stats.retry_after_wait_seconds == pytest.approx(0.3, abs=0.01)


def test_a_burst_of_429s_lowers_the_rate_once() -> None:
    throttle = Throttle(600)
    for _ in range(5):
        throttle.on_response(429, 2.0)
    assert throttle.stats().current_rate_per_minute == 300
    assert throttle.stats().throttled == 5


def test_rate_climbs_back_while_requests_succeed() -> None:
    clock = FakeClock()
    throttle = Throttle(600, recovery_seconds=5.0, clock=clock)
    throttle.on_response(429, 1.0)
    assert throttle.stats().current_rate_per_minute == 300
    clock.now += 1.0  # the pause ends
    clock.now += 1.0
    throttle.on_response(200, None)
    rate_after_one_second = throttle.stats().current_rate_per_minute
    assert 300 < rate_after_one_second < 600
    for _ in range(10):
        clock.now += 1.0
        throttle.on_response(200, None)
    assert throttle.stats().current_rate_per_minute == 600


def test_stop_wakes_waiting_workers() -> None:
    throttle = Throttle(60)
    throttle.on_response(429, 30.0)
    outcome: list[str] = []

    def worker() -> None:
        try:
            throttle.acquire()
            outcome.append("sent")
        except ThrottleStopped:
            outcome.append("stopped")

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.1)
    throttle.stop()
    thread.join(timeout=2)
    assert outcome == ["stopped"]
