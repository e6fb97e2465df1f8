"""Benchmarks of the analysts' page (`wrapup-batch serve`), against its targets:

1. a 100,000-row CSV from upload to preview page: at most 10 s;
2. the page's progress (server-sent events) at most 2 s behind the ledger;
3. page loads p95 at most 300 ms while a run applies at 1,200 rows a minute;
4. the server's peak RSS at most 400 MB for a 1,000,000-row upload (to its preview).

A large upload's preview is computed in a child process of the page while the page polls:
"upload to preview" runs from the first byte sent to the ready preview page (the redirect and
the first, "reading", page are timed on the way), and the child's own peak RSS is sampled from
`/proc` beside the server's.

    .venv/bin/python benchmarks/bench_web.py [--rows 100000] [--large-rows 1000000]
        [--apply-rows 1500] [--json benchmarks/out/web.json]

The emulator and the page run as subprocesses (`serve --no-auth` on loopback); this script
uploads with httpx, reads the SSE stream and the ledger side by side, and times page loads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
from benchlib import OUT, emit, emulator, machine, scratch, write_input


@contextmanager
def page(env: dict[str, str], folder: Path, *args: str) -> Iterator[tuple[str, int]]:
    command = [sys.executable, "-c", "from wrapup_batch.cli import main; main()", "serve"]
    command += ["--no-auth", "--port", "0", "--ledger", str(folder / "ledger.db"), *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
        cwd=folder,
    )
    try:
        assert process.stdout is not None
        found = re.search(r"(http://127\.0\.0\.1:\d+)", process.stdout.readline())
        assert found, "the page did not start"
        url = found.group(1)
        for _ in range(600):  # up, and done reading the org's codes (as long after a start)
            try:
                if httpx.get(url + "/healthz").json().get("codes_ready"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def csrf(client: httpx.Client) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)
    assert found
    return found.group(1)


def children_peak_rss_mb(pid: int) -> dict[int, float]:
    """The peak RSS of each child process of `pid` now (a large preview's job)."""
    found: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            with suppress(OSError, ValueError):
                found[int(child)] = peak_rss_mb(int(child))
    return found


def upload_to_preview(
    client: httpx.Client, path: Path, pid: int | None = None
) -> tuple[str, dict[str, Any]]:
    """Upload `path`, load its preview page, and follow it (as the page's polling does) until
    the preview is ready; the seconds from the first byte sent to the redirect, to the first
    page, and to the ready preview page; the peak RSS of the server's children meanwhile."""
    token = csrf(client)
    started = time.perf_counter()
    with path.open("rb") as handle:
        answer = client.post("/uploads", data={"csrf_token": token}, files={"file": handle})
    assert answer.status_code == 303, answer.text[:300]
    redirected = time.perf_counter() - started
    preview_url = answer.headers["location"]
    upload_id = preview_url.split("/")[2]
    first = client.get(preview_url)
    assert first.status_code == 200
    first_page = time.perf_counter() - started
    reading_first = "Reading" in first.text and 'id="reading"' in first.text
    children: dict[int, float] = {}
    polls = 0
    poll_ms: list[float] = []
    while True:
        t0 = time.perf_counter()
        state: dict[str, Any] = client.get(f"/api/runs/{upload_id}").json()
        poll_ms.append((time.perf_counter() - t0) * 1000)
        if pid is not None:
            children.update(children_peak_rss_mb(pid))
        if state.get("preview") != "reading":
            break
        polls += 1
        time.sleep(0.1)
    preview = client.get(preview_url)
    seconds = time.perf_counter() - started
    assert preview.status_code == 200 and "rows read" in preview.text, preview.text[-500:]
    return upload_id, {
        "state": state,
        "seconds": seconds,
        "redirect_seconds": redirected,
        "first_page_seconds": first_page,
        "first_page_was_reading": reading_first,
        "polls": polls,
        "poll_p95_ms": round(_p95(poll_ms), 1) if poll_ms else None,
        "children_peak_rss_mb": max(children.values()) if children else None,
    }


def bench_preview(
    env: dict[str, str], rows: int, folder: Path, max_upload_mb: int
) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    path = write_input(folder / f"input-{rows}.csv", rows)
    with page(env, folder, "--max-upload", str(max_upload_mb)) as (url, pid):
        client = httpx.Client(base_url=url, timeout=600, follow_redirects=False)
        before = peak_rss_mb(pid)
        _upload_id, seen = upload_to_preview(client, path, pid)
        peak = peak_rss_mb(pid)
    state = seen["state"]
    assert state["total"] == rows, state
    return {
        "rows": rows,
        "file_mb": round(path.stat().st_size / 1024 / 1024, 1),
        "upload_to_preview_seconds": round(seen["seconds"], 2),
        "upload_to_redirect_seconds": round(seen["redirect_seconds"], 2),
        "upload_to_first_page_seconds": round(seen["first_page_seconds"], 2),
        "first_page_was_reading": seen["first_page_was_reading"],
        "server_peak_rss_mb_before_upload": before,
        "server_peak_rss_mb": peak,
        "preview_child_peak_rss_mb": seen["children_peak_rss_mb"],
        "api_polls_while_reading": seen["polls"],
        "api_poll_p95_ms_while_reading": seen["poll_p95_ms"],
    }


def bench_apply(env: dict[str, str], rows: int, folder: Path) -> dict[str, Any]:
    """Apply at 1,200 rows a minute (2,400 requests a minute); meanwhile read the SSE stream
    and the ledger side by side, and time page loads."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_input(folder / "apply.csv", rows)
    ledger = folder / "ledger.db"
    with page(env, folder, "--rate-limit", "2400", "--concurrency", "4") as (url, _pid):
        client = httpx.Client(base_url=url, timeout=60, follow_redirects=False)
        upload_id, _seen = upload_to_preview(client, path)
        answer = client.post(
            f"/runs/{upload_id}/apply",
            data={
                "csrf_token": csrf(client),
                "on_existing": "skip",
                "participant": "last-agent",
                "confirm_count": str(rows),  # above 1,000 rows the count is typed
            },
        )
        assert answer.status_code == 303, answer.text[:300]
        run_path = answer.headers["location"]
        run_id = int(run_path.rsplit("/", 1)[1])
        stop = threading.Event()
        ledger_samples: list[tuple[float, int]] = []
        sse_samples: list[tuple[float, int]] = []

        def watch_ledger() -> None:
            conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
            while not stop.is_set():
                (done,) = conn.execute(
                    "SELECT count(*) FROM items WHERE last_run_id = ? AND status NOT IN "
                    "('pending', 'in_flight')",
                    (run_id,),
                ).fetchone()
                ledger_samples.append((time.monotonic(), int(done)))
                time.sleep(0.05)
            conn.close()

        def watch_events() -> None:
            with (
                httpx.Client(base_url=url, timeout=None) as sse,
                sse.stream("GET", f"/runs/{run_id}/events") as stream,
            ):
                event = ""
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "state":
                        sse_samples.append((time.monotonic(), int(json.loads(line[6:])["done"])))
                    elif event == "end":
                        return

        threads = [threading.Thread(target=watch_ledger), threading.Thread(target=watch_events)]
        for thread in threads:
            thread.start()
        timings: dict[str, list[float]] = {}
        pages = {
            "run": run_path,
            "history": "/runs",
            "api": f"/api/runs/{run_id}",
            "preview": f"/runs/{upload_id}/preview",
            "upload form": "/",
        }
        started = time.monotonic()
        while client.get(f"/api/runs/{run_id}").json()["state"] == "applying":
            for name, target in pages.items():
                t0 = time.perf_counter()
                assert client.get(target).status_code == 200
                timings.setdefault(name, []).append(time.perf_counter() - t0)
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        final = client.get(f"/api/runs/{run_id}").json()
        summary = client.get(f"/runs/{run_id}").text
    lags = _lags(sse_samples, ledger_samples)
    every = [t for values in timings.values() for t in values]
    applied = final["counts"].get("applied", 0)
    return {
        "rows": rows,
        "state": final["state"],
        "applied": applied,
        "apply_seconds_seen": round(elapsed, 1),
        "rows_per_minute_seen": round(applied * 60 / elapsed, 1) if elapsed else 0,
        "page_loads": len(every),
        "page_p95_ms": round(_p95(every) * 1000, 1),
        "page_p95_ms_by_page": {k: round(_p95(v) * 1000, 1) for k, v in timings.items()},
        "page_max_ms": round(max(every) * 1000, 1),
        "sse_events": len(sse_samples),
        "progress_lag_seconds_max": round(max(lags), 2) if lags else None,
        "progress_lag_seconds_median": round(statistics.median(lags), 2) if lags else None,
        "run_page_mentions_done": "done" in summary,
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def _lags(sse: list[tuple[float, int]], ledger: list[tuple[float, int]]) -> list[float]:
    """For each SSE figure: how long ago the ledger first showed at least as many rows done
    as the page still showed (0 when the page was up to date at that moment)."""
    lags: list[float] = []
    for when, done in sse:
        newer = [t for t, n in ledger if n > done and t <= when]
        lags.append(when - newer[0] if newer else 0.0)
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--large-rows", type=int, default=1_000_000)
    parser.add_argument("--apply-rows", type=int, default=1_500)
    parser.add_argument("--json", type=Path, default=OUT / "web.json")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-apply", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine()}
    generate = max(args.rows, args.large_rows, args.apply_rows)
    with emulator(generate=generate, rate_limit=0, latency_ms=5) as emu, scratch("web-") as tmp:
        env = emu.env
        result["preview_100k"] = bench_preview(env, args.rows, tmp / "a", 50)
        if not args.skip_apply:
            result["apply_1200_per_minute"] = bench_apply(env, args.apply_rows, tmp / "b")
        if not args.skip_large:
            result["preview_1m"] = bench_preview(env, args.large_rows, tmp / "c", 200)
    targets = {
        "upload_to_preview_100k_s<=10": result["preview_100k"]["upload_to_preview_seconds"] <= 10,
    }
    if "apply_1200_per_minute" in result:
        applying = result["apply_1200_per_minute"]
        targets["progress_lag_s<=2"] = (applying["progress_lag_seconds_max"] or 0) <= 2
        targets["page_p95_ms<=300"] = applying["page_p95_ms"] <= 300
    if "preview_1m" in result:
        targets["peak_rss_1m_mb<=400"] = result["preview_1m"]["server_peak_rss_mb"] <= 400
    result["targets_met"] = targets
    emit(result, args.json)


if __name__ == "__main__":
    main()
