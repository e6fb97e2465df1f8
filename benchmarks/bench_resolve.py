"""Code resolution does not grow with the number of distinct code values (issue 11, point 5).

For each count of distinct code values (default 1, 50 and 500), a CSV of N generated
conversations (default 200,000) whose `wrapup_code` cycles through that many values, none of
which the org has (as in the issue's report: 50 unknown codes, 52 s end to end); then
`wrapup-batch run CSV --ledger NEW --results OUT` through the CLI against the emulator, in its
own process: ingest, sign-in and code listing, resolution (every row `unknown_code`),
conflicts, and the results file. No conversation is read and nothing is written to the API.

Each case runs `--repeat` times (default 2), the cases taking turns, and the fastest run of
each counts (a shared machine slows some runs down). Measured per case: wall time, CPU and
peak RSS of the tool's process (`/usr/bin/time -v`, as bench_scale.py), the ledger's size,
and the API requests the emulator saw (the code listing). The targets: the 50-value case
<= 15 s and <= 400 MB; the three cases within 20 % of each other. `--databases sqlite
postgresql` adds the same on a PostgreSQL ledger (a throwaway server: tests/postgres_server.py).

    .venv/bin/python benchmarks/bench_resolve.py [--rows 200000] [--distinct 1 50 500]
        [--databases sqlite postgresql] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench_scale import ledgers, measured_alone
from benchlib import OUT, emit, emulator, machine, requests_seen, scratch


def write_codes_input(path: Path, rows: int, distinct: int) -> Path:
    from wrapup_batch.emulator.seed import generated_conversation_id

    codes = [f"Retired code {k:03d}" for k in range(distinct)]
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("conversation_id,wrapup_code\n")
        for i in range(rows):
            handle.write(f"{generated_conversation_id(i)},{codes[i % distinct]}\n")
    return path


def ledger_mb(target: str) -> float | None:
    path = Path(target)
    if "://" in target or not path.exists():
        return None
    return round(path.stat().st_size / 2**20, 1)


def measure(
    database: str, rows: int, counts: list[int], repeat: int, folder: Path
) -> dict[str, Any]:
    """Each case `repeat` times, the cases taking turns; per case, the fastest run."""
    runs: dict[int, list[dict[str, Any]]] = {distinct: [] for distinct in counts}
    sources = {d: write_codes_input(folder / f"in-{d}.csv", rows, d) for d in counts}
    with (
        ledgers(database, folder) as (new_ledger, server_cpu),
        emulator(generate=0, rate_limit=300, latency_ms=0) as emu,
    ):
        for attempt in range(repeat):
            for distinct in counts:
                target = new_ledger(f"ledger-{distinct}-{attempt}")
                results = folder / f"results-{distinct}.csv"
                summary_path = folder / f"summary-{distinct}.json"
                before = requests_seen(emu.stats())
                command = [sys.executable, "-m", "wrapup_batch", "run", str(sources[distinct])]
                command += ["--ledger", target, "--results", str(results), "--quiet"]
                command += ["--summary-json", str(summary_path)]
                server_before = server_cpu()
                run = measured_alone(command, env=emu.env, ok=(1,))
                run.pop("stdout")
                run["server_cpu_seconds"] = round(server_cpu() - server_before, 2)
                summary = json.loads(summary_path.read_text())
                run.update(
                    distinct_values=distinct,
                    counts=summary["counts"],
                    requests_seen_by_emulator=requests_seen(emu.stats()) - before,
                    results_rows=sum(1 for _ in results.open(encoding="utf-8-sig")) - 1,
                    ledger_mb=ledger_mb(target),
                )
                if run["counts"] != {"unknown_code": rows} or run["results_rows"] != rows:
                    raise RuntimeError(f"unexpected outcome: {run}")
                print(json.dumps(run), file=sys.stderr)
                runs[distinct].append(run)
                results.unlink()
                if "://" not in target:
                    Path(target).unlink()
    cases = [min(runs[d], key=lambda r: r["wall_seconds"]) for d in counts]
    for case in cases:
        case["wall_seconds_all_runs"] = [r["wall_seconds"] for r in runs[case["distinct_values"]]]
    walls = [case["wall_seconds"] for case in cases]
    return {
        "database": database,
        "rows": rows,
        "repeat": repeat,
        "cases": cases,
        "spread": round(max(walls) / min(walls) - 1, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--distinct", type=int, nargs="+", default=[1, 50, 500])
    parser.add_argument("--databases", nargs="+", default=["sqlite"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, default=OUT / "resolve.json")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "resolve", "machine": machine(), "databases": []}
    for database in args.databases:
        with scratch("wrapup-bench-resolve-") as folder:
            measured_ = measure(database, args.rows, args.distinct, args.repeat, folder)
            result["databases"].append(measured_)
    emit(result, args.json)


if __name__ == "__main__":
    main()
