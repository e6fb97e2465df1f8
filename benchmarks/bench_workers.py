"""Many workers and many runs on one ledger (issue 11).

Scenarios, each against its own emulator process with per-client rate limits
(`--rate-limit-scope client`) and `--worker-clients 3`, latency L ms:

- `workers`: one PostgreSQL ledger; `wrapup-batch run` (OAuth client 1) and two `wrapup-batch
  work --run 1` (clients 2 and 3), started together, each at `--rate-limit LIMIT`. Reported:
  rows applied per minute by the three together between 10 % and 90 % of the rows (the ledger's
  `items.updated`), against 3 x LIMIT/2; POSTs per communication.
- `kill`: the same, and once a third of the rows are applied the client-3 worker is SIGKILLed.
  Just before, its row in `workers` is marked as being on another host, so that its claims can
  only be taken over when their lease passes (`--kill-host same`: left on its own host, where
  the others see its dead pid within a second). Reported:
  seconds from the kill to the moment none of its claims is its own any more (lease `--lease`),
  whether every row ends `applied`, and the communications POSTed more than once.
- `shared_sqlite`, `shared_postgresql`: two `wrapup-batch run` on the SAME OAuth client at
  `--rate-limit LIMIT`, on one ledger, each with its own ROWS conversations. Reported: 429s
  over requests (the emulator's counts), each run's rows per minute while both ran (the
  ledger's timestamps) and its share of the client's budget (2 requests per row), and the two
  together in requests per minute against LIMIT.

PostgreSQL comes from tests/postgres_server.py (Debian's `postgresql` package: a throwaway
server on loopback).

    .venv/bin/python benchmarks/bench_workers.py [--only workers kill shared_sqlite ...]
        [--limit 300] [--latency-ms 250] [--duration 90] [--rows 100] [--lease 15]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import OUT, REPO, emit, emulator, machine, requests_seen, scratch, write_input
from sqlalchemy import create_engine, text

sys.path.insert(0, str(REPO / "tests"))

from wrapup_batch.emulator.seed import worker_client_id, worker_client_secret
from wrapup_batch.ledger import ledger_url

SCENARIOS = ("workers", "kill", "shared_sqlite", "shared_postgresql")


@contextmanager
def postgres() -> Iterator[Any]:
    from postgres_server import start

    server = start()
    try:
        yield server
    finally:
        server.stop()


def client_env(env: dict[str, str], n: int) -> dict[str, str]:
    out = {**os.environ, **env}
    if n:
        out["GENESYSCLOUD_OAUTHCLIENT_ID"] = worker_client_id(n)
        out["GENESYSCLOUD_OAUTHCLIENT_SECRET"] = worker_client_secret(n)
    return out


def launch(args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "wrapup_batch", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def rows_of(ledger: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(ledger_url(ledger))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    except Exception:  # the ledger not created yet
        return []
    finally:
        engine.dispose()


def applied_times(ledger: str, run_first: int | None = None) -> list[float]:
    sql = "SELECT updated FROM items WHERE status = 'applied'"
    if run_first is not None:
        sql += f" AND first_run_id = {int(run_first)}"
    return sorted(datetime.fromisoformat(r[0]).timestamp() for r in rows_of(ledger, sql))


def steady_rate(times: list[float], low: float = 0.1, high: float = 0.9) -> float:
    """Rows per minute between the low and high fractions of the rows."""
    if len(times) < 10:
        return 0.0
    a, b = times[int(len(times) * low)], times[int(len(times) * high) - 1]
    count = int(len(times) * high) - int(len(times) * low) - 1
    return round(count * 60.0 / (b - a), 1) if b > a else 0.0


def wait_all(processes: list[subprocess.Popen[bytes]], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in processes:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


def duplicates(stats: dict[str, Any]) -> int:
    return sum(1 for n in stats["posts_per_communication"].values() if n > 1)


def scenario_workers(folder: Path, args: argparse.Namespace, *, kill: bool) -> dict[str, Any]:
    ideal = 3 * args.limit / 2
    rows = int(ideal * args.duration / 60)
    extra = ["--rate-limit-scope", "client", "--worker-clients", "3"]
    with (
        postgres() as server,
        emulator(
            generate=rows, rate_limit=args.limit, latency_ms=args.latency_ms, extra=extra
        ) as emu,
    ):
        ledger = server.create_database()
        source = write_input(folder / "in.csv", rows)
        common = ["--ledger", ledger, "--rate-limit", str(args.limit), "--quiet"]
        common += ["--lease", str(args.lease)]
        started = time.time()
        procs = [launch(["run", str(source), *common], client_env(emu.env, 1), folder / "run.log")]
        while not rows_of(ledger, "SELECT id FROM runs"):  # `work` joins a run that exists
            time.sleep(0.05)
        for n in (2, 3):
            command = ["work", "--run", "1", *common]
            procs.append(launch(command, client_env(emu.env, n), folder / f"w{n}.log"))
        result: dict[str, Any] = {"rows": rows, "ideal_rows_per_minute": ideal}
        if kill:
            same = args.kill_host == "same"
            result.update(kill_one(ledger, procs[2], rows, args.lease, same_host=same))
        codes = wait_all(procs, timeout=args.duration * 6 + 120)
        stats = emu.http.request("GET", emu.base_url + "/__emulator__/stats?detail=1").json()
        times = applied_times(ledger)
        statuses = dict(rows_of(ledger, "SELECT status, COUNT(*) FROM items GROUP BY status"))
        rate = steady_rate(times)
        result.update(
            exit_codes=codes,
            wall_seconds=round(time.time() - started, 1),
            items_by_status=statuses,
            every_row_applied=statuses == {"applied": rows},
            communications_posted=len(stats["posts_per_communication"]),
            communications_posted_twice=duplicates(stats),
            requests=requests_seen(stats),
            throttled_429=stats["throttled"],
            by_client=stats["by_client"],
            rows_per_minute_10_90=rate,
            fraction_of_ideal=round(rate / ideal, 4),
        )
        return result


def kill_one(
    ledger: str, victim: subprocess.Popen[bytes], rows: int, lease: float, *, same_host: bool
) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while len(applied_times(ledger)) < rows // 3:
        if time.monotonic() > deadline:
            raise RuntimeError("the run did not reach a third of its rows")
        time.sleep(0.2)
    found = rows_of(ledger, "SELECT id FROM workers WHERE pid = :pid", pid=victim.pid)
    worker_id = int(found[0][0])
    if not same_host:  # as if it ran on another host: only the lease can tell it is dead
        engine = create_engine(ledger_url(ledger))
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE workers SET host = 'another-host' WHERE id = :id"), {"id": worker_id}
            )
        engine.dispose()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.time()
    held = [
        r[0]
        for r in rows_of(
            ledger,
            "SELECT conversation_id FROM conversation_claims WHERE worker_id = :id",
            id=worker_id,
        )
    ]
    in_flight = rows_of(ledger, "SELECT COUNT(*) FROM items WHERE status = 'in_flight'")[0][0]
    expiry = rows_of(
        ledger,
        "SELECT MAX(lease_until) FROM conversation_claims WHERE worker_id = :id",
        id=worker_id,
    )[0][0]
    while rows_of(ledger, "SELECT 1 FROM conversation_claims WHERE worker_id = :id", id=worker_id):
        time.sleep(0.1)
    taken_over = time.time() - killed_at
    return {
        "killed_worker": worker_id,
        "killed_worker_seen_on": "its own host" if same_host else "another host",
        "claims_held_when_killed": len(held),
        "items_in_flight_when_killed": in_flight,
        "lease_seconds": lease,
        "seconds_from_kill_to_takeover": round(taken_over, 2),
        # its claims' leases ended this long after the kill (its last heartbeat + the lease)
        "seconds_from_kill_to_lease_end": round(float(expiry) - killed_at, 2) if expiry else None,
        "taken_over_within_the_lease": taken_over <= lease,
    }


def scenario_shared(folder: Path, args: argparse.Namespace, *, database: str) -> dict[str, Any]:
    rows = args.rows
    extra = ["--rate-limit-scope", "client"]
    with (
        contextlib_postgres(database) as server,
        emulator(
            generate=2 * rows, rate_limit=args.limit, latency_ms=args.latency_ms, extra=extra
        ) as emu,
    ):
        ledger = server.create_database() if server else str(folder / "ledger.db")
        inputs = [
            write_input(folder / "a.csv", rows),
            write_input(folder / "b.csv", rows, first=rows),
        ]
        env = client_env(emu.env, 0)
        common = ["--ledger", ledger, "--rate-limit", str(args.limit), "--quiet"]
        started = time.time()
        procs = []
        for n, source in enumerate(inputs, start=1):
            summary = folder / f"summary{n}.json"
            command = ["run", str(source), *common, "--summary-json", str(summary)]
            procs.append(launch(command, env, folder / f"run{n}.log"))
            time.sleep(0.5)  # two distinct run ids in a known order
        codes = wait_all(procs, timeout=rows * 4 + 300)
        stats = emu.stats()
        # run n's items are the conversations of its input: first_run_id tells them apart
        ids = [int(r[0]) for r in rows_of(ledger, "SELECT id FROM runs ORDER BY id")]
        per_run = [applied_times(ledger, run) for run in ids]
        both_from = max(t[0] for t in per_run)
        both_to = min(t[-1] for t in per_run)
        window = both_to - both_from
        shares = []
        for times in per_run:
            inside = [t for t in times if both_from <= t <= both_to]
            # intervals between the rows inside the window (its edges are rows of one run)
            per_minute = (len(inside) - 1) * 60.0 / window if window > 0 else 0.0
            shares.append(
                {
                    "rows_per_minute_while_both_ran": round(per_minute, 1),
                    "share_of_client_budget": round(2 * per_minute / args.limit, 3),
                }
            )
        together = sum(s["rows_per_minute_while_both_ran"] for s in shares) * 2
        requests = requests_seen(stats)
        return {
            "database": database,
            "rows_per_run": rows,
            "exit_codes": codes,
            "wall_seconds": round(time.time() - started, 1),
            "both_ran_seconds": round(window, 1),
            "runs": shares,
            "requests_per_minute_together_while_both_ran": round(together, 1),
            "limit_per_minute": args.limit,
            "requests": requests,
            "throttled_429": stats["throttled"],
            "fraction_429": round(stats["throttled"] / requests, 4) if requests else 0.0,
        }


@contextmanager
def contextlib_postgres(database: str) -> Iterator[Any]:
    if database != "postgresql":
        yield None
        return
    with postgres() as server:
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--latency-ms", type=int, default=250)
    parser.add_argument("--duration", type=float, default=90.0, help="workers: seconds of work")
    parser.add_argument("--rows", type=int, default=100, help="shared: rows per run")
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument(
        "--kill-host",
        choices=("other", "same"),
        default="other",
        help="kill: the killed worker's row says another host (only its lease can pass; the "
        "default) or its own (its dead pid is seen at once)",
    )
    parser.add_argument("--json", type=Path, default=OUT / "workers.json")
    parser.add_argument("--keep", type=Path, help="keep the scratch folder here")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "machine": machine(),
        "settings": vars(args) | {"json": str(args.json)},
    }
    for name in args.only:
        with scratch(f"bench-{name}-", args.keep / name if args.keep else None) as folder:
            print(f"-- {name}", file=sys.stderr, flush=True)
            if name in ("workers", "kill"):
                result[name] = scenario_workers(folder, args, kill=name == "kill")
            else:
                database = name.split("_", 1)[1]
                result[name] = scenario_shared(folder, args, database=database)
            print(result[name], file=sys.stderr, flush=True)
    emit(result, args.json)


if __name__ == "__main__":
    main()
