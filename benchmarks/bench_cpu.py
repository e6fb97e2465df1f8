"""Client overhead (issue 6, target 5): CPU time per applied row in the tool's own process.

The emulator runs in its own process with no rate limit and no latency, so that the tool is
never waiting on the budget; `wrapup-batch run --rate-limit 1000000` (another process) applies
ROWS rows for each lookup mode. The tool's CPU time (user + system) comes from the kernel's
rusage of that process (`os.wait4`); two sizes (SMALL and ROWS) give the CPU per row without
the fixed cost (interpreter, imports, ledger set-up): (cpu(ROWS) - cpu(SMALL)) / (ROWS - SMALL).
Each size runs REPEAT times and the least CPU counts (other programs share the machine).

Where the time goes: the same run of ROWS rows sampled by py-spy with `--gil` (at each
sample, the thread holding the GIL: Python-level CPU; C work that releases the GIL, such as
SQLite's own, is not in these shares; samples when no thread held it are counted apart). Each
sample goes to one category (the first in CATEGORIES that any of its frames matches, else the
module of its innermost frame), so the shares add up to 1.
Without py-spy (or without ptrace permission) the breakdown is skipped.

    .venv/bin/python benchmarks/bench_cpu.py [--rows 3000] [--small 500]
        [--repeat 2] [--modes conversations analytics] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import OUT, emit, emulator, machine, run_tool, scratch, tool_command, write_input

#: Where a sample's time goes, exclusively: the first category (in this order) that any frame
#: of the sample matches; then, for what is left, the module of the innermost frame.
CATEGORIES = (
    ("imports (interpreter start-up, modules)", r"^_find_and_load "),
    ("SDK: JSON into models (ApiClient.deserialize)", r"^ApiClient\.deserialize "),
    ("SDK: models back to JSON (sanitize_for_serialization)", r"^ApiClient\.sanitize_for_"),
    ("ledger (SQLAlchemy + sqlite3 calls)", r"^Ledger\."),
    ("input (read_rows)", r"^read_rows "),
    ("planner", r"^(conversation_from_json|conversation_from_analytics|plan) "),
    ("throttle", r"^Throttle\."),
    ("HTTP: urllib3 + http.client (Transport._send)", r"^Transport\._send "),
)
LEAF_MODULES = (
    ("retry policy (tenacity's own code)", "(tenacity/"),
    ("SDK: request building, auth headers, logging", "(PureCloudPlatformClientV2/"),
    ("runner and genesys glue", "(wrapup_batch/"),
    ("threads, queues, locks", "(threading.py"),
    ("threads, queues, locks", "(queue.py"),
    ("threads, queues, locks", "(concurrent/"),
)


def profile(command: list[str], env: dict[str, str], out: Path) -> dict[str, Any] | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return None
    record = [py_spy, "record", "--gil", "--rate", "250", "--format", "raw", "--output"]
    record += [str(out), "--", *command]
    done = subprocess.run(record, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        return {"skipped": f"py-spy failed: {done.stderr.strip()[-500:]}"}
    return breakdown(out)


def breakdown(raw: Path) -> dict[str, Any]:
    """Shares of the samples by category (exclusive, summing to 1), all and after imports."""
    idle = 0
    total = 0
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        n = int(n_text)
        if not stack.strip():  # no thread held the GIL: every thread waiting (I/O, locks)
            idle += n
            continue
        total += n
        frames = [re.sub(r"\s*\(([^()]*):\d+\)$", r" (\1)", f) for f in stack.split(";")]
        counts[_category(frames)] += n
    imports = counts["imports (interpreter start-up, modules)"]
    rest = total - imports
    return {
        "samples_holding_the_gil": total,
        "samples_no_thread_holding_the_gil": idle,
        "share_of_samples": {k: round(v / total, 3) for k, v in counts.most_common()},
        "share_of_samples_after_imports": {
            k: round(v / rest, 3)
            for k, v in counts.most_common()
            if rest and not k.startswith("imports")
        },
    }


def _category(frames: list[str]) -> str:
    for name, pattern in CATEGORIES:
        if any(re.search(pattern, f) for f in frames):
            return name
    leaf = frames[-1]
    for name, module in LEAF_MODULES:
        if module in leaf:
            return name
    return "other: " + leaf.split(" (", 1)[-1].rstrip(")")


def measure(folder: Path, mode: str, rows: int, small: int, repeat: int) -> dict[str, Any]:
    result: dict[str, Any] = {"lookup": mode}
    extra = ["--lookup", mode]
    with emulator(generate=rows, rate_limit=0, latency_ms=0) as emu:
        cpu: dict[int, float] = {}
        for n in (small, rows):
            input_csv = write_input(folder / f"{mode}-{n}.csv", n)
            seen: list[float] = []
            for k in range(repeat):  # the least CPU of the repeats: the machine is shared
                emu.reset(wrapups=True, rate_windows=True)
                name = f"{mode}-{n}-{k}"
                run = run_tool(folder, emu.env, input_csv, limit=1_000_000, extra=extra, name=name)
                applied = run.summary["counts"].get("applied", 0)
                if applied != n:
                    raise RuntimeError(f"{mode}: {applied} of {n} applied: {run.stderr[-2000:]}")
                seen.append(run.cpu_seconds)
            cpu[n] = min(seen)
            result[f"run_{n}_rows"] = {
                "cpu_seconds": cpu[n],
                "cpu_seconds_each_repeat": seen,
                "cpu_ms_per_applied_row_including_fixed_costs": round(1000 * cpu[n] / n, 2),
                "requests": run.summary["requests"],
                "peak_rss_mb": run.max_rss_mb,
            }
        result["cpu_ms_per_applied_row_marginal"] = round(
            1000 * (cpu[rows] - cpu[small]) / (rows - small), 2
        )
        result["fixed_cpu_seconds_estimate"] = round(
            cpu[small] - small * (cpu[rows] - cpu[small]) / (rows - small), 2
        )
        emu.reset(wrapups=True, rate_windows=True)
        input_csv = folder / f"{mode}-{rows}.csv"
        ledger, summary = folder / f"{mode}-profiled.db", folder / f"{mode}-profiled.json"
        command = tool_command(
            input_csv, ledger, summary, limit=1_000_000, concurrency=4, extra=extra
        )
        result["py_spy"] = profile(command, {**os.environ, **emu.env}, folder / f"{mode}.raw")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=2, help="runs per size; the least CPU")
    parser.add_argument("--modes", nargs="+", default=["conversations", "analytics"])
    parser.add_argument("--json", type=Path, default=OUT / "cpu.json")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "cpu", "machine": machine(), "rows": args.rows}
    with scratch("wrapup-bench-cpu-") as folder:
        result["modes"] = [
            measure(folder, mode, args.rows, args.small, args.repeat) for mode in args.modes
        ]
    emit(result, args.json)


if __name__ == "__main__":
    main()
