"""Shared helpers of the benchmark scripts: the emulator as a subprocess, input files, tool runs.

Every benchmark talks to the emulator on loopback only. The emulator runs in its own process
(`python -m wrapup_batch.emulator`), `wrapup-batch run` in another, the benchmark script in a
third, so that each one's CPU time and memory are its own.
"""

from __future__ import annotations

import bisect
import csv
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import urllib3

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
OUT = BENCH / "out"
sys.path.insert(0, str(REPO))


def ideal_rows_per_minute(limit: float, lookup: str, lookup_batch: int = 100) -> float:
    """The limit over the requests per row: 2 (GET + POST) for `conversations`; 1 POST plus
    1/`lookup_batch` analytics read for `analytics` (the one code listing per run left out)."""
    per_row = 2.0 if lookup == "conversations" else 1.0 + 1.0 / lookup_batch
    return limit / per_row


def machine() -> dict[str, Any]:
    """Where and when: the figures mean nothing without it."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- the emulator -----------------------------------------------------------------------------


@dataclass
class Emulator:
    """An emulator subprocess: its environment for the tool, its stats and live knobs."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    http: urllib3.PoolManager = field(default_factory=lambda: urllib3.PoolManager(retries=False))

    @property
    def base_url(self) -> str:
        return self.env["GENESYSCLOUD_API_HOST"]

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.http.request(
            "GET", self.base_url + "/__emulator__/stats"
        ).json()
        return data

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """POST /__emulator__/config (e.g. storm_seconds=10, storm_retry_after=1)."""
        response = self.http.request(
            "POST",
            self.base_url + "/__emulator__/config",
            body=json.dumps(knobs),
            headers={"Content-Type": "application/json"},
        )
        if response.status != 200:
            raise RuntimeError(f"emulator config refused: {response.status} {response.data!r}")
        data: dict[str, Any] = response.json()
        return data

    def reset(self, **what: bool) -> None:
        self.http.request(
            "POST",
            self.base_url + "/__emulator__/reset",
            body=json.dumps(what),
            headers={"Content-Type": "application/json"},
        )

    def cpu_seconds(self) -> float:
        """User + system CPU time of the emulator process so far (from /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@contextmanager
def emulator(
    *, generate: int, rate_limit: int, latency_ms: int, extra: Sequence[str] = ()
) -> Iterator[Emulator]:
    command = [sys.executable, "-m", "wrapup_batch.emulator", "--port", "0"]
    command += ["--generate", str(generate), "--rate-limit", str(rate_limit)]
    command += ["--latency-ms", str(latency_ms), *extra]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO
    )
    try:
        assert process.stdout is not None
        env = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
        yield Emulator(process, env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def requests_seen(stats: dict[str, Any]) -> int:
    """Every /api/v2 request the emulator answered (all routes, all statuses)."""
    return sum(
        sum(by_status.values())
        for route, by_status in stats["requests"].items()
        if "/api/v2/" in route
    )


def requests_by_route(stats: dict[str, Any]) -> dict[str, int]:
    return {
        route: sum(by_status.values())
        for route, by_status in stats["requests"].items()
        if "/api/v2/" in route
    }


# -- input ------------------------------------------------------------------------------------


def write_input(
    path: Path, rows: int, *, first: int = 0, codes: Sequence[str] = ("Sales",)
) -> Path:
    """A CSV of `rows` generated conversations (ids `first`...) to wrap up with `codes`."""
    from wrapup_batch.emulator.seed import generated_conversation_id

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conversation_id", "wrapup_code"])
        for i in range(first, first + rows):
            writer.writerow([generated_conversation_id(i), codes[i % len(codes)]])
    return path


# -- the tool ---------------------------------------------------------------------------------


@dataclass
class ToolRun:
    summary: dict[str, Any]
    exit_code: int
    wall_seconds: float
    ledger: Path
    started: float  # time.time() when the process was started
    cpu_seconds: float  # user + system CPU of the tool's process
    max_rss_mb: float  # from getrusage(RUSAGE_CHILDREN): the largest child so far
    stderr: str


def tool_command(
    input_csv: Path,
    ledger: Path,
    summary: Path,
    *,
    limit: float,
    concurrency: int,
    extra: Sequence[str],
) -> list[str]:
    command = [sys.executable, "-m", "wrapup_batch", "run", str(input_csv)]
    command += ["--ledger", str(ledger), "--summary-json", str(summary), "--quiet"]
    command += ["--rate-limit", f"{limit:g}", "--concurrency", str(concurrency), *extra]
    return command


@dataclass
class PendingRun:
    process: subprocess.Popen[str]
    started: float  # time.time() when the process was started
    ledger: Path
    summary_path: Path


def start_tool(
    folder: Path,
    env: dict[str, str],
    input_csv: Path,
    *,
    limit: float,
    concurrency: int = 4,
    extra: Sequence[str] = (),
    name: str = "run",
) -> PendingRun:
    """Start `wrapup-batch run` in its own process against the emulator in `env`."""
    ledger, summary_path = folder / f"{name}.db", folder / f"{name}-summary.json"
    command = tool_command(
        input_csv, ledger, summary_path, limit=limit, concurrency=concurrency, extra=extra
    )
    started = time.time()
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return PendingRun(process, started, ledger, summary_path)


def finish_tool(pending: PendingRun) -> ToolRun:
    """Wait for a started run; CPU time and peak RSS are that child's alone (wait4)."""
    process = pending.process
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - pending.started
    if process.returncode not in (0, 1, 4):
        raise RuntimeError(f"wrapup-batch run failed ({process.returncode}): {stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(pending.summary_path.read_text())
    return ToolRun(
        summary=summary,
        exit_code=process.returncode,
        wall_seconds=round(wall, 2),
        ledger=pending.ledger,
        started=pending.started,
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3),
        max_rss_mb=round(usage.ru_maxrss / 1024, 1),
        stderr=stderr,
    )


def run_tool(
    folder: Path,
    env: dict[str, str],
    input_csv: Path,
    *,
    limit: float,
    concurrency: int = 4,
    extra: Sequence[str] = (),
    name: str = "run",
) -> ToolRun:
    pending = start_tool(
        folder, env, input_csv, limit=limit, concurrency=concurrency, extra=extra, name=name
    )
    return finish_tool(pending)


# -- the ledger's timestamps ------------------------------------------------------------------


def applied_times(ledger: Path) -> list[float]:
    """When each applied item was recorded (`items.updated`, epoch seconds), sorted."""
    with sqlite3.connect(ledger) as conn:
        stamps = [
            row[0] for row in conn.execute("SELECT updated FROM items WHERE status = 'applied'")
        ]
    return sorted(datetime.fromisoformat(s).timestamp() for s in stamps)


def rate_series(times: Sequence[float], start: float, end: float, step: float = 1.0) -> list[int]:
    """Rows applied in each `step`-second bin from `start` to `end`."""
    bins = [0] * max(1, int((end - start) / step + 0.999))
    for t in times:
        k = int((t - start) / step)
        if 0 <= k < len(bins):
            bins[k] += 1
    return bins


def count_between(times: Sequence[float], start: float, end: float) -> int:
    """Rows applied in [start, end) (`times` sorted)."""
    return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)


# -- output -----------------------------------------------------------------------------------


def emit(result: dict[str, Any], json_path: Path | None) -> None:
    if isinstance(result.get("machine"), dict):
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        result["machine"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    text = json.dumps(result, indent=2)
    print(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")


@contextmanager
def scratch(prefix: str, keep: Path | None = None) -> Iterator[Path]:
    """A temporary folder (or `keep`, created and left in place)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
