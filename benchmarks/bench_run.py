"""The tool at the org's rate limit: rows applied per minute and 429s, against the emulator.

Starts the emulator as a subprocess with `--generate ROWS --rate-limit LIMIT --latency-ms L`,
writes a CSV of ROWS generated conversations to wrap up, and runs `wrapup-batch run` on it as
another subprocess at the same `--rate-limit`. Reports rows applied per minute (from the
run's summary JSON) against the ideal for two requests per row (one lookup, one POST), the
share of requests answered 429 (from the emulator's stats), and the wall time.

    .venv/bin/python benchmarks/bench_run.py [--rows 600] [--limit 1200] [--latency-ms 40]
        [--concurrency 4] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import urllib3

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wrapup_batch.emulator import generated_conversation_id  # noqa: E402

REQUESTS_PER_ROW = 2  # GET the conversation, POST the wrap-up


def start_emulator(
    rows: int, limit: int, latency_ms: int
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    command = [sys.executable, "-m", "wrapup_batch.emulator", "--port", "0"]
    command += [
        "--generate",
        str(rows),
        "--rate-limit",
        str(limit),
        "--latency-ms",
        str(latency_ms),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert process.stdout is not None
    env = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
    return process, env


def write_input(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conversation_id", "wrapup_code"])
        for i in range(rows):
            writer.writerow([generated_conversation_id(i), "Sales"])


def emulator_stats(base_url: str) -> dict[str, Any]:
    response = urllib3.request("GET", base_url + "/__emulator__/stats")
    data: dict[str, Any] = response.json()
    return data


def run_tool(
    folder: Path, env: dict[str, str], limit: int, concurrency: int, extra: list[str]
) -> tuple[dict[str, Any], float, int]:
    summary_path = folder / "summary.json"
    command = [sys.executable, "-m", "wrapup_batch", "run", str(folder / "rows.csv")]
    command += ["--ledger", str(folder / "ledger.db"), "--summary-json", str(summary_path)]
    command += ["--rate-limit", str(limit), "--concurrency", str(concurrency), "--quiet", *extra]
    started = time.perf_counter()
    completed = subprocess.run(
        command, env={**os.environ, **env}, cwd=folder, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if completed.returncode not in (0, 1):
        sys.exit(f"the run failed ({completed.returncode}): {completed.stderr}")
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    return summary, wall, completed.returncode


def measure(rows: int, limit: int, latency_ms: int, concurrency: int) -> dict[str, Any]:
    process, env = start_emulator(rows, limit, latency_ms)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_input(folder / "rows.csv", rows)
            summary, wall, code = run_tool(folder, env, limit, concurrency, [])
            stats = emulator_stats(env["GENESYSCLOUD_API_HOST"])
    finally:
        process.terminate()
        process.wait()
    total = sum(sum(by_status.values()) for by_status in stats["requests"].values())
    ideal = limit / REQUESTS_PER_ROW
    applied = summary["counts"].get("applied", 0)
    return {
        "rows": rows,
        "limit_per_minute": limit,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "exit_code": code,
        "applied": applied,
        "applied_per_minute": summary["applied_per_minute"],
        "ideal_rows_per_minute": ideal,
        "share_of_ideal": round(summary["applied_per_minute"] / ideal, 3),
        "requests_seen_by_emulator": total,
        "answered_429": stats["throttled"],
        "share_429": round(stats["throttled"] / total, 4) if total else 0.0,
        "requests_per_minute": summary["requests_per_minute"],
        "wall_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--limit", type=int, default=1200)
    parser.add_argument("--latency-ms", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.rows, args.limit, args.latency_ms, args.concurrency)
    result["machine"] = f"nproc={os.cpu_count()}, Python {platform.python_version()}"
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
