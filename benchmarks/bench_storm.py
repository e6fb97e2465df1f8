"""Recovery after a 429 storm (issue 6, target 1): how soon the applied rate is back.

The emulator runs with `--rate-limit LIMIT --latency-ms L`; `wrapup-batch run` applies ROWS
rows at `--rate-limit LIMIT`. While it runs, storms are started through the emulator's
`POST /__emulator__/config` (`storm_seconds`, `storm_retry_after`): during a storm every
/api/v2 request is answered 429, with `Retry-After` = the seconds left in the storm (0, the
default) or a fixed number of seconds (a storm that outlasts its own Retry-After).

From the ledger's timestamps (items' `updated`, when each applied row was recorded) and the
storm's end (the time of the config call + its length): the recovery time is the first moment
t after the storm's end from which the next WINDOW seconds hold at least 95 % of the ideal
rows (limit / requests per row), and so do the next 2 s (so that a slow ramp is not averaged
away). Also: the rate in the minute before the storm, the first row
applied after it, the 429s the storm caused, and rows per second around it.

    .venv/bin/python benchmarks/bench_storm.py [--limit 1200] [--latency-ms 40] [--rows 1500]
        [--lookup conversations] [--storm 40:10:0 --storm 100:10:1] [--window 10]
        [--plot benchmarks/storm_recovery.png] [--json OUT]

`--storm AT:SECONDS:RETRY_AFTER`: AT seconds after the tool started.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchlib import (
    OUT,
    applied_times,
    count_between,
    emit,
    emulator,
    finish_tool,
    ideal_rows_per_minute,
    machine,
    requests_seen,
    scratch,
    start_tool,
    write_input,
)


def recovery(
    times: list[float], end: float, ideal_per_s: float, window: float, horizon: float = 60.0
) -> float | None:
    """Seconds after `end` until the rate is back: from that moment the next 2 s and the next
    `window` s each hold at least 95 % of the ideal rows (0.1 s steps)."""
    t = 0.0
    while t <= horizon:
        short = count_between(times, end + t, end + t + 2.0) >= 0.95 * ideal_per_s * 2.0
        if short and count_between(times, end + t, end + t + window) >= 0.95 * ideal_per_s * window:
            return round(t, 2)
        t += 0.1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=1200)
    parser.add_argument("--latency-ms", type=int, default=40)
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--lookup", default="conversations")
    parser.add_argument("--storm", action="append", default=None, help="AT:SECONDS:RETRY_AFTER")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path, default=OUT / "storm.json")
    args = parser.parse_args()
    storms = [
        tuple(float(x) for x in s.split(":")) for s in (args.storm or ["40:10:0", "100:10:1"])
    ]
    ideal = ideal_rows_per_minute(args.limit, args.lookup)
    result: dict[str, Any] = {
        "benchmark": "storm",
        "machine": machine(),
        "limit_per_minute": args.limit,
        "latency_ms": args.latency_ms,
        "lookup": args.lookup,
        "rows": args.rows,
        "ideal_rows_per_minute": round(ideal, 1),
        "window_seconds": args.window,
    }
    with (
        scratch("wrapup-bench-storm-") as folder,
        emulator(generate=args.rows, rate_limit=args.limit, latency_ms=args.latency_ms) as emu,
    ):
        input_csv = write_input(folder / "rows.csv", args.rows)
        pending = start_tool(
            folder, emu.env, input_csv, limit=args.limit, extra=["--lookup", args.lookup]
        )
        marks: list[dict[str, Any]] = []
        for at, seconds, retry_after in storms:
            delay = pending.started + at - time.time()
            if delay > 0:
                time.sleep(delay)
            if pending.process.poll() is not None:
                break
            throttled_before = emu.stats()["throttled"]
            emu.configure(storm_seconds=seconds, storm_retry_after=int(retry_after))
            began = time.time()
            time.sleep(seconds + 5)
            marks.append(
                {
                    "start": began,
                    "end": began + seconds,
                    "seconds": seconds,
                    "retry_after": retry_after or "seconds left in the storm",
                    "answered_429": emu.stats()["throttled"] - throttled_before,
                }
            )
        run = finish_tool(pending)
        stats = emu.stats()
        times = applied_times(run.ledger)
    summary = run.summary
    per_s = ideal / 60.0
    result["run"] = {
        "applied": summary["counts"].get("applied", 0),
        "applied_per_minute_whole_run": summary["applied_per_minute"],
        "requests_seen_by_emulator": requests_seen(stats),
        "answered_429": stats["throttled"],
        "throttle_summary": {
            k: summary[k]
            for k in ("requests_per_minute", "throttled_429", "retry_after_wait_seconds")
        },
        "wall_seconds": run.wall_seconds,
    }
    result["storms"] = []
    previous_end = 0.0
    for mark in marks:
        start, end = mark["start"], mark["end"]
        # the rate before: up to a minute, after the first row and 15 s after an earlier storm
        since = max(times[0] if times else start, start - 62, previous_end + 15)
        previous_end = end
        span = start - 2 - since
        before = count_between(times, since, start - 2) * 60.0 / span if span > 0 else 0.0
        after = [t for t in times if t >= end]
        rows_around = [count_between(times, end + k, end + k + 1) for k in range(-3, 16)]
        result["storms"].append(
            {
                "started_s_after_tool_start": round(start - run.started, 1),
                "seconds": mark["seconds"],
                "retry_after": mark["retry_after"],
                "answered_429_during_storm": mark["answered_429"],
                "applied_per_minute_before_the_storm": round(before, 1),
                "share_of_ideal_before": round(before / ideal, 3),
                "first_row_after_storm_end_s": round(after[0] - end, 2) if after else None,
                "recovery_seconds_to_95pct_of_ideal": recovery(times, end, per_s, args.window),
                "rows_per_second_from_3s_before_end_to_15s_after": rows_around,
                "rows_applied_during_storm": count_between(times, start, end),
            }
        )
    if args.plot:
        plot(args.plot, times, marks, run.started, ideal, args)
        result["plot"] = str(args.plot)
    emit(result, args.json)


def plot(
    path: Path,
    times: list[float],
    marks: list[dict[str, Any]],
    started: float,
    ideal: float,
    args: argparse.Namespace,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = times[0] if times else started
    span = int((times[-1] - origin) + 1) if times else 1
    per_second = [count_between(times, origin + k, origin + k + 1) for k in range(span)]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    ax.bar(
        range(span),
        per_second,
        width=1.0,
        align="edge",
        color="tab:blue",
        label="rows applied per second",
    )
    ax.axhline(ideal / 60.0, color="black", linestyle="--", label=f"limit line ({ideal:.0f}/min)")
    ax.axhline(0.95 * ideal / 60.0, color="grey", linestyle=":", label="95 % of it")
    for k, mark in enumerate(marks):
        label = "429 storm" if k == 0 else None
        ax.axvspan(
            mark["start"] - origin, mark["end"] - origin, color="red", alpha=0.2, label=label
        )
    ax.set_xlabel("seconds since the first row applied")
    ax.set_ylabel("rows applied per second")
    ax.set_title(
        f"Recovery after 429 storms: {args.limit}/min, {args.latency_ms} ms, lookup {args.lookup}"
    )
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
