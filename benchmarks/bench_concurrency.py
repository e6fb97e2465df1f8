"""Rows per minute against `--concurrency` (issue 6: the default chosen from measurement).

For each setting `LIMIT:LATENCY_MS` and each concurrency N, an emulator with that limit and
latency and `wrapup-batch run --concurrency N` (default lookup) applying the ideal rows for
SECONDS seconds (stopped by `--max-runtime` at 1.5 x SECONDS when latency-bound). The
settings run at the same time (each its own emulators); the levels of one
setting one after another. A worker needs about 2 x latency (+ client time) per row, so
with too few workers the run is latency-bound below the limit.

    .venv/bin/python benchmarks/bench_concurrency.py [--settings 300:250 1200:40 1200:250]
        [--levels 1 2 4 8] [--seconds 30] [--json OUT]

1200:250 is not in the issue: it shows where 4 workers stop being enough (20 requests/s
x 0.25 s = 5 requests in flight).
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchlib import (
    OUT,
    emit,
    emulator,
    ideal_rows_per_minute,
    machine,
    requests_seen,
    run_tool,
    scratch,
    write_input,
)


def sweep(
    folder: Path, limit: int, latency_ms: int, levels: list[int], seconds: float
) -> dict[str, Any]:
    ideal = ideal_rows_per_minute(limit, "conversations")
    rows = math.ceil(ideal * seconds / 60.0)
    folder.mkdir(parents=True, exist_ok=True)
    input_csv = write_input(folder / "rows.csv", rows)
    out: dict[str, Any] = {
        "limit_per_minute": limit,
        "latency_ms": latency_ms,
        "rows": rows,
        "ideal_rows_per_minute": round(ideal, 1),
        "latency_bound_rows_per_minute_one_worker": round(60.0 / (2 * latency_ms / 1000.0), 1),
        "levels": [],
    }
    for level in levels:
        with emulator(generate=rows, rate_limit=limit, latency_ms=latency_ms) as emu:
            # Latency-bound levels would take much longer than SECONDS to apply the rows:
            # --max-runtime stops them (exit 4) and the rate is over what they applied.
            cap = ["--max-runtime", f"{int(seconds * 1.5)}s"]
            run = run_tool(
                folder,
                emu.env,
                input_csv,
                limit=limit,
                concurrency=level,
                extra=cap,
                name=f"c{level}",
            )
            stats = emu.stats()
        rate = run.summary["applied_per_minute"]
        out["levels"].append(
            {
                "concurrency": level,
                "applied": run.summary["counts"].get("applied", 0),
                "applied_per_minute": rate,
                "share_of_ideal": round(rate / ideal, 4),
                "requests_per_minute": run.summary["requests_per_minute"],
                "answered_429": stats["throttled"],
                "requests_seen_by_emulator": requests_seen(stats),
                "wall_seconds": run.wall_seconds,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=["300:250", "1200:40", "1200:250"])
    parser.add_argument("--levels", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=OUT / "concurrency.json")
    args = parser.parse_args()
    settings = [tuple(int(x) for x in s.split(":")) for s in args.settings]
    result: dict[str, Any] = {
        "benchmark": "concurrency",
        "machine": machine(),
        "seconds_per_level": args.seconds,
    }
    with scratch("wrapup-bench-concurrency-") as folder, ThreadPoolExecutor(len(settings)) as pool:
        futures = [
            pool.submit(
                sweep, folder / f"{limit}-{latency}", limit, latency, args.levels, args.seconds
            )
            for limit, latency in settings
        ]
        result["settings"] = [f.result() for f in futures]
    emit(result, args.json)


if __name__ == "__main__":
    main()
