"""Scale on one machine (issue 6, target 4): ingest, a rerun with nothing to do, the results CSV.

For each size N (default 100,000; `make bench-large` adds 1,000,000), with a CSV of N
generated conversations and three wrap-up codes:

1. **ingest** (library, its own process): `read_rows` + `Ledger.ingest` per chunk +
   `mark_duplicates`, then the ledger work a first run does before its first request
   (`requested_codes`, `apply_resolutions`, `mark_conflicts`, `count_work`), each timed;
2. the ledger is made "all applied" with one SQL UPDATE (a 1M-row API run at 1,200/min would
   take days), and run 1 is closed;
3. **rerun** through the CLI: `wrapup-batch run` on the same CSV and ledger with `--results`,
   against an emulator that counts requests (there must be none);
4. **results CSV** of the rerun: `wrapup-batch report --run 2 -o` through the CLI, and
   `report.write_results` alone (library, its own process);
5. optionally (`--cli-first-run`) the CLI's own first run on a fresh ledger, stopped by
   `--max-runtime 1s` right after its pre-work: the real command's ingest + prepare time and
   peak memory.

Wall time and peak RSS of each process come from `/usr/bin/time -v` (GNU time); without it,
from `os.wait4` (the kernel's rusage of that one child: the same figure as
`getrusage(RUSAGE_CHILDREN)` would give for a single child).

`--databases sqlite postgresql` measures each size on both, one after the other, from the same
CSV: a PostgreSQL ledger on a server the benchmark starts (Debian's server programs, default
settings, fsync on; tests/postgres_server.py) and throws away.

    .venv/bin/python benchmarks/bench_scale.py [--rows 100000 1000000] [--json OUT]
        [--cli-first-run] [--keep DIR] [--databases sqlite postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchlib import OUT, REPO, emit, emulator, machine, requests_seen, scratch, write_input

CODES = ("Sales", "Support - Billing", "Complaint")
CODE_IDS = {
    "Sales": "9c000001-0000-4000-8000-000000000000",
    "Support - Billing": "9c000003-0000-4000-8000-000000000000",
    "Complaint": "9c000005-0000-4000-8000-000000000000",
}
GNU_TIME = "/usr/bin/time"


# -- measuring a child process ---------------------------------------------------------------


def measured_alone(
    command: list[str], *, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0, 1)
) -> dict[str, Any]:
    """Run `command`; its wall time, CPU time and peak RSS, and its stdout."""
    full_env = {**os.environ, **(env or {})}
    gnu_time = os.access(GNU_TIME, os.X_OK)
    report = Path(tempfile.gettempdir()) / f"bench-time-{os.getpid()}.txt"
    prefix = [GNU_TIME, "-v", "-o", str(report)] if gnu_time else []
    started = time.perf_counter()
    process = subprocess.Popen(
        [*prefix, *command],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    stdout, stderr = _drain(process)
    # wait4: the kernel's rusage of this one child (what getrusage(RUSAGE_CHILDREN) sums
    # over all children); with GNU time the child is `time`, whose report is the figure.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if gnu_time:
        text = report.read_text()
        report.unlink()
        rss_kb = int(_field(text, r"Maximum resident set size \(kbytes\): (\d+)"))
        cpu = float(_field(text, r"User time \(seconds\): ([\d.]+)")) + float(
            _field(text, r"System time \(seconds\): ([\d.]+)")
        )
        method = "/usr/bin/time -v"
    else:
        rss_kb = usage.ru_maxrss
        cpu = usage.ru_utime + usage.ru_stime
        method = "os.wait4 rusage (no /usr/bin/time)"
    if code not in ok:
        raise RuntimeError(f"{command[:4]} failed ({code}): {stderr[-3000:]}")
    return {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": round(rss_kb / 1024, 1),
        "exit_code": code,
        "measured_with": method,
        "stdout": stdout,
    }


def _drain(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Both pipes to the end without reaping the child (communicate() would wait for it)."""
    assert process.stdout is not None and process.stderr is not None
    with ThreadPoolExecutor(2) as pool:
        out = pool.submit(process.stdout.read)
        err = pool.submit(process.stderr.read)
        return out.result(), err.result()


def _field(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"GNU time output lacks {pattern!r}:\n{text}")
    return match.group(1)


# -- the children (library calls, in their own process) ---------------------------------------


def child_ingest(input_csv: Path, ledger_target: str) -> None:
    """Ingest `input_csv` into a new ledger as run 1 and do the first run's pre-work."""
    sys.path.insert(0, str(REPO))
    from wrapup_batch.ledger import DONE, Ledger, ResolvedCode
    from wrapup_batch.models import Status
    from wrapup_batch.sources import SourceSpec, read_rows

    phases: dict[str, float] = {}
    started = time.perf_counter()
    ledger = Ledger.open(ledger_target)
    run_id = ledger.start_run(source=str(input_csv), options={}, dry_run=False)
    rows = 0
    for chunk in read_rows(SourceSpec(path=input_csv)):
        ledger.ingest(run_id, chunk)
        rows += len(chunk)
    phases["read_and_ingest"] = time.perf_counter() - started
    mark = time.perf_counter()
    duplicates = ledger.mark_duplicates(run_id)
    phases["mark_duplicates"] = time.perf_counter() - mark
    phases["ingest_total"] = time.perf_counter() - started

    done = (*DONE, Status.SKIPPED.value)
    mark = time.perf_counter()
    requested = ledger.requested_codes(run_id, done)
    phases["requested_codes"] = time.perf_counter() - mark
    mark = time.perf_counter()
    resolved = [ResolvedCode(value, CODE_IDS[value], value, None, "") for value in requested]
    ledger.apply_resolutions(run_id, done, resolved)
    phases["apply_resolutions"] = time.perf_counter() - mark
    mark = time.perf_counter()
    ledger.mark_conflicts(run_id, done)
    phases["mark_conflicts"] = time.perf_counter() - mark
    mark = time.perf_counter()
    work = ledger.count_work(run_id, done)
    phases["count_work"] = time.perf_counter() - mark
    phases["first_run_prework_total"] = time.perf_counter() - started
    ledger.close()
    out = {k: round(v, 2) for k, v in phases.items()}
    print(json.dumps({"rows": rows, "duplicates": duplicates, "work": work, "seconds": out}))


def child_results(ledger_target: str, run_id: int, output: Path) -> None:
    sys.path.insert(0, str(REPO))
    from wrapup_batch.ledger import Ledger
    from wrapup_batch.report import write_results

    started = time.perf_counter()
    ledger = Ledger.open(ledger_target, create=False)
    written = write_results(ledger, run_id, output)
    ledger.close()
    print(json.dumps({"written": written, "seconds": round(time.perf_counter() - started, 2)}))


# -- the benchmark ---------------------------------------------------------------------------


def mark_all_applied(ledger_target: str) -> float:
    """Every item `applied` and run 1 finished, as if a (days-long) API run had done it."""
    from sqlalchemy import create_engine

    from wrapup_batch.ledger import ledger_url

    started = time.perf_counter()
    engine = create_engine(ledger_url(ledger_target))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE items SET status = 'applied', http_status = 202, attempts = 1, "
            "participant_id = 'p', communication_id = 'c', media = 'calls'"
        )
        conn.exec_driver_sql(
            "UPDATE runs SET finished = started, exit_code = 0, counts = '{}', summary = '{}' "
            "WHERE id = 1"
        )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum would do after the run
    engine.dispose()
    return round(time.perf_counter() - started, 2)


def ledger_mb(ledger_target: str) -> float:
    """The ledger's size on disk: the SQLite file, or the PostgreSQL database."""
    if "://" not in ledger_target:
        return round(Path(ledger_target).stat().st_size / 2**20, 1)
    from sqlalchemy import create_engine

    engine = create_engine(ledger_target)
    with engine.connect() as conn:
        size = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
    engine.dispose()
    return round(int(size or 0) / 2**20, 1)


def script() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve())]


def measure(
    rows: int, folder: Path, cli_first_run: bool, keep: bool, ledgers_: Any, database: str
) -> dict[str, Any]:
    new_ledger, server_cpu = ledgers_

    def measured(command: list[str], **kwargs: Any) -> dict[str, Any]:
        """`measured`, with the CPU the database server spent meanwhile (PostgreSQL)."""
        before = server_cpu()
        result = measured_alone(command, **kwargs)
        result["server_cpu_seconds"] = round(server_cpu() - before, 2)
        result["cpu_seconds_with_server"] = round(
            result["cpu_seconds"] + result["server_cpu_seconds"], 2
        )
        return result

    input_csv = folder / f"rows-{rows}.csv"
    if not input_csv.exists():
        write_input(input_csv, rows, codes=CODES)
    ledger = new_ledger(f"ledger-{rows}")
    result: dict[str, Any] = {
        "database": database,
        "rows": rows,
        "input_mb": round(input_csv.stat().st_size / 2**20, 1),
    }

    ingest = measured([*script(), "--child-ingest", str(input_csv), ledger])
    ingest.update(json.loads(ingest.pop("stdout")))
    result["ingest_library"] = ingest
    result["prepare_all_applied_seconds"] = mark_all_applied(ledger)
    result["ledger_mb_after_first_run"] = ledger_mb(ledger)

    with emulator(generate=rows, rate_limit=300, latency_ms=0) as emu:
        results_csv = folder / f"rerun-{rows}.csv"
        command = [sys.executable, "-m", "wrapup_batch", "run", str(input_csv)]
        command += ["--ledger", ledger, "--results", str(results_csv), "--quiet"]
        command += ["--summary-json", str(folder / f"rerun-{rows}.json")]
        rerun = measured(command, env=emu.env)
        rerun.pop("stdout")
        summary = json.loads((folder / f"rerun-{rows}.json").read_text())
        stats = emu.stats()
        rerun.update(
            counts=summary["counts"],
            requests_by_tool=summary["requests"],
            requests_seen_by_emulator=requests_seen(stats),
            tokens_issued=stats["tokens_issued"],
            results_rows=sum(1 for _ in results_csv.open(encoding="utf-8-sig")) - 1,
        )
        result["rerun_cli"] = rerun

        report_csv = folder / f"report-{rows}.csv"
        command = [sys.executable, "-m", "wrapup_batch", "report", "--ledger", ledger]
        command += ["--run", "2", "--output", str(report_csv)]
        report = measured(command)
        report.pop("stdout")
        report["rows_written"] = sum(1 for _ in report_csv.open(encoding="utf-8-sig")) - 1
        result["results_csv_cli"] = report

        library = measured([*script(), "--child-results", ledger, "2", str(report_csv)])
        library.update(json.loads(library.pop("stdout")))
        result["results_csv_library"] = library

        if cli_first_run:
            fresh = new_ledger(f"first-{rows}")
            command = [sys.executable, "-m", "wrapup_batch", "run", str(input_csv)]
            command += ["--ledger", fresh, "--quiet", "--max-runtime", "1s"]
            command += ["--summary-json", str(folder / f"first-{rows}.json")]
            before = requests_seen(emu.stats())
            first = measured(command, env=emu.env, ok=(4,))
            first.pop("stdout")
            first["requests_seen_by_emulator"] = requests_seen(emu.stats()) - before
            summary = json.loads((folder / f"first-{rows}.json").read_text())
            first["counts"] = summary["counts"]
            result["first_run_cli_until_stopped"] = first
    if not keep:  # a million rows leave ~1 GB of ledgers and CSVs
        for path in folder.glob(f"*{rows}*"):
            if path.is_file() and path != input_csv:
                path.unlink()
    return result


@contextlib.contextmanager
def ledgers(database: str, folder: Path) -> Iterator[tuple[Any, Any]]:
    """A factory of new ledger targets: SQLite files in `folder`, or new databases on a
    PostgreSQL server started for the benchmark (tests/postgres_server.py: Debian's server
    programs, default settings, durable) and thrown away after it; and the CPU seconds the
    server has used so far (0 for SQLite, which works inside the measured process)."""
    if database == "sqlite":
        yield lambda name: str(folder / f"{name}.db"), lambda: 0.0
        return
    sys.path.insert(0, str(REPO / "tests"))
    import postgres_server

    server = postgres_server.start(durable=True)
    try:
        yield lambda name: server.create_database(), server.cpu_seconds
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--json", type=Path, default=OUT / "scale.json")
    parser.add_argument("--cli-first-run", action="store_true")
    parser.add_argument(
        "--databases", nargs="+", default=["sqlite"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument(
        "--child-ingest", nargs=2, metavar=("CSV", "LEDGER"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--child-results", nargs=3, metavar=("LEDGER", "RUN", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child_ingest:
        child_ingest(Path(args.child_ingest[0]), args.child_ingest[1])
        return
    if args.child_results:
        ledger, run_id, output = args.child_results
        child_results(ledger, int(run_id), Path(output))
        return
    result: dict[str, Any] = {"benchmark": "scale", "machine": machine(), "sizes": []}
    with scratch("wrapup-bench-scale-", args.keep) as folder:
        for rows in args.rows:  # the databases side by side for each size, same input
            for database in args.databases:
                with ledgers(database, folder) as new_ledger:
                    size = measure(
                        rows,
                        folder,
                        args.cli_first_run,
                        args.keep is not None,
                        new_ledger,
                        database,
                    )
                result["sizes"].append(size)
                print(json.dumps(size, indent=2), file=sys.stderr)
    emit(result, args.json)


if __name__ == "__main__":
    main()
