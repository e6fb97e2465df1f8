"""The console while a batch works: a tqdm bar on a terminal (a line every 10 seconds
otherwise), and Ctrl-C/SIGTERM as a stop request (a second Ctrl-C abandons what is in flight).
The library hears neither: it gets the reporter as its progress callback and a stop event."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click
from tqdm import tqdm

from wrapup_batch.runner import Progress


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM: stop taking new items; a second SIGINT abandons those in flight."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        click.echo(
            "\nstopping: finishing the requests in flight (Ctrl-C again to abandon them)",
            err=True,
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def while_working(reporter: ProgressReporter, stop: threading.Event) -> Iterator[None]:
    """Around the work: Ctrl-C as a stop request, and the bar closed as soon as the work ends
    (before the summary and the last log lines)."""
    try:
        with stop_on_signals(stop):
            yield
    finally:
        reporter.close()


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h01m."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class ProgressReporter:
    """A tqdm bar on a terminal; otherwise a log line every 10 seconds."""

    def __init__(self, enabled: bool, interactive: bool) -> None:
        self.enabled = enabled
        self.interactive = interactive
        self.bar: tqdm[Any] | None = None
        self.last_line = 0.0
        self.apply_started: float | None = None
        self.lock = threading.Lock()

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        with self.lock:
            if progress.phase == "apply":
                self._apply(progress)
            elif progress.phase == "done":
                self.close()
            elif progress.phase == "ingest" and progress.done and not self.interactive:
                self._line(f"read {progress.done} row{'' if progress.done == 1 else 's'}")

    def _apply(self, progress: Progress) -> None:
        counts = progress.counts
        failed = sum(n for s, n in counts.items() if s in ("failed", "rejected", "forbidden"))
        if self.interactive:
            if self.bar is None:
                self.bar = tqdm(total=progress.total, unit="row", file=sys.stderr, leave=True)
            self.bar.n = progress.done
            self.bar.set_postfix(applied=counts.get("applied", 0), failed=failed, refresh=False)
            self.bar.refresh()
        else:
            now = time.monotonic()
            first = self.apply_started is None
            if self.apply_started is None:
                self.apply_started = now
            elapsed = now - self.apply_started
            per_minute = progress.done * 60.0 / elapsed if elapsed > 0 else 0.0
            left = progress.total - progress.done
            eta = duration(left * 60.0 / per_minute) if per_minute > 0 else "unknown"
            self._line(
                f"{progress.done}/{progress.total} rows, applied {counts.get('applied', 0)}, "
                f"failed {failed}, {per_minute:.1f} rows/min, ETA {eta}, "
                f"elapsed {duration(elapsed)}",
                force=first,  # the work starts: its size, then a line every 10 s
            )

    def _line(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_line >= 10.0:
            self.last_line = now
            click.echo(text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
