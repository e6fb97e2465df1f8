"""Every benchmark of issue 6 (`make bench`), then a summary of the figures against the targets.

The API benchmarks are bound by the emulator's rate limit, not by the CPU, so they share the
machine, each with its own emulators, started a few seconds apart so that their start-ups do
not meet: first the 3,000-row budget run (5 minutes) and the seed-flow comparison (which is
CPU-sensitive, so nothing else starts until it ends), then the storm, default-limit,
concurrency and 600-row runs. The CPU-bound ones (emulator throughput, scale, client CPU) run
after all of them, one at a time. Each writes its JSON to benchmarks/out/ and its output to
benchmarks/out/NAME.log.

    .venv/bin/python benchmarks/bench_all.py [--only budget storm ...] [--large]

`--large` adds the 1,000,000-row scale case, on SQLite and on PostgreSQL (`make bench-large`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from benchlib import BENCH, OUT, machine

PY = sys.executable

#: name -> (command, phase). Phase 1 jobs start together; phase 2 ones when every phase-1 job
#: but `budget` (the longest, 5 minutes) has ended; phase 3 ones (CPU-bound) one at a time
#: after all others. The seed flow is CPU-sensitive (one thread, the SDK's models), so it
#: shares the machine only with the budget run.
JOBS: dict[str, tuple[list[str], int]] = {
    "budget": (
        [
            "bench_budget.py",
            *("--limit", "1200", "--latency-ms", "40", "--rows", "3000"),
            *("--plot", str(BENCH / "rows_over_time.png"), "--json", str(OUT / "budget.json")),
        ],
        1,
    ),
    "default_limit": (
        [
            "bench_budget.py",
            *("--limit", "300", "--latency-ms", "250", "--duration", "120"),
            *("--plot", str(BENCH / "rows_over_time_300.png")),
            *("--json", str(OUT / "budget_300.json")),
        ],
        2,
    ),
    "storm": (
        [
            "bench_storm.py",
            *("--limit", "1200", "--latency-ms", "40", "--rows", "1500"),
            *("--storm", "40:10:0", "--storm", "100:10:1"),
            *("--plot", str(BENCH / "storm_recovery.png"), "--json", str(OUT / "storm.json")),
        ],
        2,
    ),
    "seed_flow": (
        [
            "seed_flow.py",
            # 300:300 beside the two settings: where the seed flow is latency-bound
            # enough for two requests per row to reach 2x (see RESULTS.md, target 2)
            *("--settings", "1200:40", "300:250", "300:300", "--duration", "120"),
            *("--json", str(OUT / "seed_flow.json")),
        ],
        1,
    ),
    "concurrency": (
        [
            "bench_concurrency.py",
            *("--settings", "300:250", "1200:40", "1200:250", "--levels", "1", "2", "4", "8"),
            *("--seconds", "30", "--json", str(OUT / "concurrency.json")),
        ],
        2,
    ),
    "run_600": (
        [
            "bench_run.py",
            *("--rows", "600", "--limit", "1200", "--latency-ms", "40"),
            *("--json", str(OUT / "run_1200.json")),
        ],
        2,
    ),
    # issue 11: several workers and runs on one ledger (about 7 minutes; needs PostgreSQL)
    "workers": (
        [
            "bench_workers.py",
            "--duration",
            "90",
            "--rows",
            "100",
            "--json",
            str(OUT / "workers.json"),
        ],
        2,
    ),
    "emulator": (
        ["bench_emulator.py", "--duration", "10", "--json", str(OUT / "emulator.json")],
        3,
    ),
    "scale": (
        ["bench_scale.py", "--rows", "100000", "--json", str(OUT / "scale.json")],
        3,
    ),
    "cpu": (
        ["bench_cpu.py", "--rows", "3000", "--small", "500", "--json", str(OUT / "cpu.json")],
        3,
    ),
    "resolve": (
        [
            "bench_resolve.py",
            *("--rows", "200000", "--distinct", "1", "50", "500"),
            *("--json", str(OUT / "resolve.json")),
        ],
        3,
    ),
}
LARGE = (
    [
        "bench_scale.py",
        *("--rows", "100000", "1000000", "--cli-first-run"),
        *("--databases", "sqlite", "postgresql"),
        *("--json", str(OUT / "scale_large.json")),
    ],
    3,
)


def launch(name: str, command: list[str]) -> tuple[subprocess.Popen[bytes], Any]:
    log = (OUT / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [PY, str(BENCH / command[0]), *command[1:]], stdout=log, stderr=subprocess.STDOUT
    )
    return process, log


def run_jobs(names: list[str], jobs: dict[str, tuple[list[str], int]]) -> dict[str, int]:
    codes: dict[str, int] = {}
    started = time.monotonic()
    running: dict[str, tuple[subprocess.Popen[bytes], Any]] = {}

    def note(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    def start(name: str) -> None:
        if running:
            time.sleep(4)  # spread the start-ups (importing the SDK takes seconds of CPU)
        note(f"start {name}")
        running[name] = launch(name, jobs[name][0])

    def wait(name: str) -> None:
        process, log = running.pop(name)
        codes[name] = process.wait()
        log.close()
        note(f"done {name}: exit {codes[name]}")

    for name in (n for n in names if jobs[n][1] == 1):
        start(name)
    for name in [n for n in running if n != "budget"]:
        wait(name)
    for name in (n for n in names if jobs[n][1] == 2):
        start(name)
    for name in list(running):
        wait(name)
    for name in (n for n in names if jobs[n][1] == 3):
        start(name)
        wait(name)
    return codes


def load(name: str) -> dict[str, Any] | None:
    path = OUT / name
    return json.loads(path.read_text()) if path.exists() else None


def summary() -> list[str]:
    """One line per figure the issue asks for, with the target and whether it is met."""
    lines: list[str] = []

    def line(what: str, value: Any, target: str, met: bool | None) -> None:
        mark = "n/a" if met is None else ("MET" if met else "NOT MET")
        lines.append(f"{mark:8} {what}: {value}  (target {target})")

    budget = load("budget.json")
    if budget:
        for mode in budget["modes"]:
            share = mode["share_of_ideal"]
            line(
                f"T1 {mode['lookup']} 3000 rows @1200/40: rows/min",
                f"{mode['applied_per_minute']} = {share:.1%} of {mode['ideal_rows_per_minute']}",
                ">= 95 %",
                share >= 0.95,
            )
            line(
                f"T1 {mode['lookup']}: share of 429s (tool CPU {mode['tool_cpu_seconds']} s)",
                mode["share_429"],
                "< 1 %",
                mode["share_429"] < 0.01,
            )
        by = {m["lookup"]: m for m in budget["modes"]}
        if "analytics" in by:
            ana = by["analytics"]
            rpr = ana["requests_per_applied_row"]
            line("T3 analytics requests per row", rpr, "<= 1.05", rpr is not None and rpr <= 1.05)
            ratio = budget.get("analytics_over_conversations_rows_per_minute")
            line(
                "T3 analytics / conversations rows/min",
                ratio,
                ">= 1.8",
                ratio is not None and ratio >= 1.8,
            )
    storm = load("storm.json")
    if storm:
        for s in storm["storms"]:
            rec = s["recovery_seconds_to_95pct_of_ideal"]
            line(
                f"T1 recovery after a {s['seconds']:g} s storm (Retry-After {s['retry_after']})",
                f"{rec} s",
                "<= 10 s",
                rec is not None and rec <= 10,
            )
    default = load("budget_300.json")
    if default:
        for mode in default["modes"]:
            line(
                f"T1 default 300/250 {mode['lookup']} ~2 min: rows/min",
                f"{mode['applied_per_minute']} = {mode['share_of_ideal']:.1%} of ideal, "
                f"429s {mode['answered_429']}",
                "recorded",
                None,
            )
    seed = load("seed_flow.json")
    if seed:
        for s in seed["settings"]:
            conv, ana = s["tool_conversations"], s["tool_analytics"]
            setting = f"{s['limit_per_minute']}/{s['latency_ms']}"
            line(
                f"T2 tool (default lookup) / seed flow @{setting}",
                f"{conv['rows_per_minute']} / {s['seed_flow']['rows_per_minute']} = "
                f"{conv['ratio_to_seed']}",
                ">= 2",
                conv["ratio_to_seed"] is not None and conv["ratio_to_seed"] >= 2,
            )
            line(f"   (analytics lookup / seed @{setting})", ana["ratio_to_seed"], "info", None)
    scale = load("scale_large.json") or load("scale.json")
    if scale:
        sqlite_figures: dict[int, dict[str, tuple[float, float]]] = {}
        for size in scale["sizes"]:
            n, database = size["rows"], size.get("database", "sqlite")
            ing = size["ingest_library"]
            rerun = size["rerun_cli"]
            lib, cli = size["results_csv_library"], size["results_csv_cli"]
            figures = {  # wall seconds, and CPU seconds with the server's (PostgreSQL)
                "ingest": (ing["wall_seconds"], ing.get("cpu_seconds_with_server", 0.0)),
                "rerun": (rerun["wall_seconds"], rerun.get("cpu_seconds_with_server", 0.0)),
                "results": (cli["wall_seconds"], cli.get("cpu_seconds_with_server", 0.0)),
            }
            if database == "sqlite":
                sqlite_figures[n] = figures
                line(
                    f"T4 {n:,} rows: ingest (read + ledger + duplicates)",
                    f"{ing['seconds']['ingest_total']} s, peak RSS {ing['peak_rss_mb']} MB",
                    "<= 20 s, <= 400 MB (1M)",
                    ing["seconds"]["ingest_total"] <= 20 and ing["peak_rss_mb"] <= 400,
                )
                line(
                    f"T4 {n:,} rows: CLI rerun, all applied",
                    f"{rerun['wall_seconds']} s, {rerun['requests_seen_by_emulator']} requests, "
                    f"peak RSS {rerun['peak_rss_mb']} MB",
                    "0 requests, <= 30 s",
                    rerun["requests_seen_by_emulator"] == 0 and rerun["wall_seconds"] <= 30,
                )
                line(
                    f"T4 {n:,} rows: results CSV",
                    f"library {lib['seconds']} s; CLI `report` {cli['wall_seconds']} s",
                    "<= 10 s",
                    cli["wall_seconds"] <= 10,
                )
                continue
            base = sqlite_figures.get(n)
            for phase, (wall, cpu) in figures.items():
                if base is None:
                    line(f"I11 {n:,} rows on PostgreSQL: {phase}", f"{wall} s", "info", None)
                    continue
                ratio, cpu_ratio = wall / base[phase][0], cpu / max(base[phase][1], 0.01)
                line(
                    f"I11 {n:,} rows on PostgreSQL: {phase} (process wall)",
                    f"{wall} s = {ratio:.2f} x SQLite's {base[phase][0]} s; CPU with the "
                    f"server {cpu} s = {cpu_ratio:.2f} x SQLite's {base[phase][1]} s",
                    "<= 2 x SQLite (1M)",
                    ratio <= 2,
                )
    resolve = load("resolve.json")
    if resolve:
        for db in resolve["databases"]:
            cases = {case["distinct_values"]: case for case in db["cases"]}
            for distinct, case in cases.items():
                line(
                    f"I11 resolve {db['rows']:,} rows, {distinct} code values ({db['database']})",
                    f"{case['wall_seconds']} s ({case['cpu_seconds']} s CPU"
                    + (
                        f" + {case['server_cpu_seconds']} s server"
                        if db["database"] != "sqlite"
                        else ""
                    )
                    + "), "
                    f"peak RSS {case['peak_rss_mb']} MB",
                    "<= 15 s, <= 400 MB (50 values, SQLite)",
                    case["wall_seconds"] <= 15 and case["peak_rss_mb"] <= 400
                    if distinct == 50 and db["database"] == "sqlite"
                    else None,
                )
            line(
                f"I11 resolve ({db['database']}): slowest / fastest - 1",
                f"{db['spread']:.1%}",
                "<= 20 %",
                db["spread"] <= 0.2,
            )
    cpu = load("cpu.json")
    if cpu:
        for mode in cpu["modes"]:
            ms = mode["cpu_ms_per_applied_row_marginal"]
            whole = mode[f"run_{cpu['rows']}_rows"]["cpu_ms_per_applied_row_including_fixed_costs"]
            line(
                f"T5 CPU per applied row, {mode['lookup']}",
                f"{ms} ms marginal ({whole} ms with start-up, {cpu['rows']} rows)",
                "<= 3 ms",
                ms <= 3,
            )
    workers = load("workers.json")
    if workers:
        for name in ("workers", "kill"):
            w = workers.get(name)
            if not w:
                continue
            if name == "workers":
                line(
                    "I11 3 workers x 3 clients @300/250, PostgreSQL: rows/min",
                    f"{w['rows_per_minute_10_90']} = {w['fraction_of_ideal']:.1%} of "
                    f"{w['ideal_rows_per_minute']}",
                    ">= 95 %",
                    w["fraction_of_ideal"] >= 0.95,
                )
            else:
                line(
                    "I11 a SIGKILLed worker's claims taken over",
                    f"{w['seconds_from_kill_to_takeover']} s (lease {w['lease_seconds']} s), "
                    f"all applied {w['every_row_applied']}, "
                    f"twice-POSTed {w['communications_posted_twice']}",
                    "within the lease, every row fine, 0 duplicates",
                    w["taken_over_within_the_lease"]
                    and w["every_row_applied"]
                    and w["communications_posted_twice"] == 0,
                )
        for name in ("shared_sqlite", "shared_postgresql"):
            w = workers.get(name)
            if not w:
                continue
            shares = [r["share_of_client_budget"] for r in w["runs"]]
            line(
                f"I11 two runs on one client @300/250, {w['database']}",
                f"429s {w['fraction_429']:.2%}, shares {shares}",
                "429s < 1 %, each >= 1/3",
                w["fraction_429"] < 0.01 and min(shares) >= 1 / 3,
            )
    conc = load("concurrency.json")
    if conc:
        for s in conc["settings"]:
            figures = ", ".join(
                f"c={lv['concurrency']}: {lv['applied_per_minute']} ({lv['share_of_ideal']:.0%})"
                for lv in s["levels"]
            )
            line(f"concurrency @{s['limit_per_minute']}/{s['latency_ms']}", figures, "info", None)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[*JOBS, "large"])
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    jobs = {**JOBS, "large": LARGE}
    names = list(args.only or JOBS)
    if args.large and "large" not in names:
        names.append("large")
    started = time.monotonic()
    print(json.dumps(machine()), flush=True)
    codes = {} if args.summary_only else run_jobs(names, jobs)
    print(f"\nall done in {time.monotonic() - started:.0f} s; exit codes {codes}\n")
    print("\n".join(summary()))
    if any(codes.values()):
        failed = [name for name, code in codes.items() if code]
        sys.exit(f"benchmarks failed: {failed} (see benchmarks/out/NAME.log)")


if __name__ == "__main__":
    main()
