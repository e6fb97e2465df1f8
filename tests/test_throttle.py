"""The shared throttle: pacing, the 60-second window, 429 pauses, recovery, stopping."""

from __future__ import annotations

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
