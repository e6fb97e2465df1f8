"""Budget use (issue 6, targets 1 and 3): rows per minute against the ideal, per lookup mode.

For each lookup mode (`conversations`, the default: one GET per row; `analytics`: one multi-get
per 100 rows) an emulator is started with the same `--rate-limit LIMIT --latency-ms L` and
`wrapup-batch run --lookup MODE` (another process) applies "Sales" to ROWS generated
conversations at `--rate-limit LIMIT`. The modes run at the same time, each against its own
emulator (the limit is per client), so they share the machine's conditions.

Reported per mode: rows applied per minute over the apply phase (the run's summary), against
the ideal (limit / requests per row: 2, or 1 + 1/100); requests per applied row and 429s as
the emulator counted them; the throttle's own figures from the summary (requests per minute,
429s, time waited on Retry-After); and the steady rate from the ledger's timestamps (items'
`updated`) between 10 % and 90 % of the rows. Then the ratio analytics / conversations.

With `--duration S`, ROWS is chosen per mode as the ideal rows for S seconds (both modes then
run about S seconds). `--plot PNG` draws rows applied over time against the limit line.

    .venv/bin/python benchmarks/bench_budget.py [--limit 1200] [--latency-ms 40]
        [--rows 3000 | --duration 120] [--modes conversations analytics] [--concurrency 4]
        [--plot benchmarks/rows_over_time.png] [--json OUT]
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchlib import (
    OUT,
    ToolRun,
    applied_times,
    count_between,
    emit,
    emulator,
    ideal_rows_per_minute,
    machine,
    requests_by_route,
    requests_seen,
    run_tool,
    scratch,
    write_input,
)


def run_mode(
    folder: Path, mode: str, rows: int, limit: int, latency_ms: int, concurrency: int
) -> dict[str, Any]:
    with emulator(generate=rows, rate_limit=limit, latency_ms=latency_ms) as emu:
        input_csv = write_input(folder / f"{mode}.csv", rows)
        run = run_tool(
            folder,
            emu.env,
            input_csv,
            limit=limit,
            concurrency=concurrency,
            extra=["--lookup", mode],
            name=mode,
        )
        stats = emu.stats()
    return describe(run, stats, mode, limit)


def describe(run: ToolRun, stats: dict[str, Any], mode: str, limit: int) -> dict[str, Any]:
    summary = run.summary
    applied = summary["counts"].get("applied", 0)
    seen = requests_seen(stats)
    ideal = ideal_rows_per_minute(limit, mode)
    times = applied_times(run.ledger)
    steady = None
    if len(times) >= 20:
        lo, hi = times[len(times) // 10], times[len(times) * 9 // 10]
        steady = round(count_between(times, lo, hi) * 60.0 / (hi - lo), 1) if hi > lo else None
    return {
        "lookup": mode,
        "rows": summary["rows"],
        "applied": applied,
        "exit_code": run.exit_code,
        "applied_per_minute": summary["applied_per_minute"],
        "ideal_rows_per_minute": round(ideal, 1),
        "share_of_ideal": round(summary["applied_per_minute"] / ideal, 4),
        "steady_applied_per_minute_from_ledger": steady,
        "steady_share_of_ideal": round(steady / ideal, 4) if steady else None,
        "requests_seen_by_emulator": seen,
        "requests_per_applied_row": round(seen / applied, 4) if applied else None,
        "requests_by_route": requests_by_route(stats),
        "answered_429": stats["throttled"],
        "share_429": round(stats["throttled"] / seen, 5) if seen else 0.0,
        "throttle_summary": {
            key: summary[key]
            for key in (
                "requests",
                "wrapup_posts",
                "requests_per_minute",
                "rate_limit_per_minute",
                "throttled_429",
                "retry_after_wait_seconds",
            )
        },
        "tool_cpu_seconds": run.cpu_seconds,
        "tool_peak_rss_mb": run.max_rss_mb,
        "wall_seconds": run.wall_seconds,
        "_times": [t - times[0] for t in times] if times else [],
    }


def plot(path: Path, results: list[dict[str, Any]], limit: int, latency_ms: int) -> None:
    """Top: rows applied over time against the limit line; bottom: rows/min per 10 s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 6.5), dpi=110, sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    colours = {"conversations": "tab:blue", "analytics": "tab:orange"}
    for result in results:
        times = result["_times"]
        if not times:
            continue
        mode = result["lookup"]
        colour = colours.get(mode, "tab:green")
        ideal = result["ideal_rows_per_minute"]
        span = times[-1]
        top.step(times, range(1, len(times) + 1), where="post", color=colour, label=mode)
        top.plot(
            [0, span],
            [0, ideal * span / 60.0],
            linestyle="--",
            color="black",
            linewidth=0.8,
            alpha=0.7,
        )
        top.annotate(
            f"limit line: {limit}/min ÷ {limit / ideal:.2f} req/row = {ideal:.0f} rows/min",
            (span, ideal * span / 60.0),
            fontsize=7,
            ha="right",
            va="bottom",
        )
        edges = list(range(0, int(span) + 1, 10))
        rates = [sum(1 for t in times if e <= t < e + 10) * 6.0 for e in edges if e + 10 <= span]
        bottom.step(edges[: len(rates)], rates, where="post", color=colour, label=f"{mode}")
        bottom.axhline(ideal, color=colour, linestyle="--", linewidth=0.8)
    top.set_ylabel("rows applied (ledger timestamps)")
    top.set_title(
        f"wrapup-batch against the emulator: {limit} requests/min, {latency_ms} ms latency"
    )
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="lower right")
    bottom.set_xlabel("seconds since the first row applied")
    bottom.set_ylabel("rows/min per 10 s\n(dashed: ideal)")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=1200)
    parser.add_argument("--latency-ms", type=int, default=40)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--rows", type=int, default=None, help="rows per mode (default 3000)")
    size.add_argument("--duration", type=float, default=None, help="seconds per mode")
    parser.add_argument("--modes", nargs="+", default=["conversations", "analytics"])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path, default=OUT / "budget.json")
    args = parser.parse_args()
    rows = {}
    for mode in args.modes:
        if args.duration is not None:
            ideal = ideal_rows_per_minute(args.limit, mode)
            rows[mode] = math.ceil(ideal * args.duration / 60.0)
        else:
            rows[mode] = args.rows or 3000
    result: dict[str, Any] = {
        "benchmark": "budget",
        "machine": machine(),
        "limit_per_minute": args.limit,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
    }
    with scratch("wrapup-bench-budget-") as folder, ThreadPoolExecutor(len(rows)) as pool:
        futures = [
            pool.submit(run_mode, folder, mode, n, args.limit, args.latency_ms, args.concurrency)
            for mode, n in rows.items()
        ]
        modes = [f.result() for f in futures]
    if args.plot:
        plot(args.plot, modes, args.limit, args.latency_ms)
        result["plot"] = str(args.plot)
    for mode in modes:
        mode.pop("_times")
    result["modes"] = modes
    by_mode = {m["lookup"]: m for m in modes}
    if "conversations" in by_mode and "analytics" in by_mode:
        conv, ana = by_mode["conversations"], by_mode["analytics"]
        result["analytics_over_conversations_rows_per_minute"] = round(
            ana["applied_per_minute"] / conv["applied_per_minute"], 3
        )
    emit(result, args.json)


if __name__ == "__main__":
    main()
