"""Emulator throughput: GET-conversation requests per second from a client in another process.

Starts `python -m wrapup_batch.emulator --port 0 --rate-limit 0 --generate N` as a subprocess
(recording how long it takes to serve and its resident memory), then drives
`GET /api/v2/conversations/{id}` over random generated and seeded ids from several client
processes x threads (urllib3, keep-alive, no retries) for a fixed time, and prints req/s.

    .venv/bin/python benchmarks/bench_emulator.py [--duration 10] [--processes 1]
        [--threads 4] [--generate 100000] [--post-share 0.0] [--json OUT.json]

`--post-share 0.2` makes a fifth of the requests wrap-up POSTs on generated conversations.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import urllib3

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wrapup_batch.emulator import generated_conversation_id  # noqa: E402

SEEDED = [f"c00000{n:02d}-0000-4000-8000-000000000000" for n in range(1, 20) if n != 11]
SALES_CODE = "9c000001-0000-4000-8000-000000000000"


def start_server(generate: int) -> tuple[subprocess.Popen[str], dict[str, str], float]:
    """Start the emulator; return the process, its env lines and the seconds until it served."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "wrapup_batch.emulator", "--port", "0"]
    command += ["--rate-limit", "0", "--generate", str(generate)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    env = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
    return process, env, time.perf_counter() - start


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def get_token(http: urllib3.PoolManager, env: dict[str, str]) -> str:
    auth = f"{env['GENESYSCLOUD_OAUTHCLIENT_ID']}:{env['GENESYSCLOUD_OAUTHCLIENT_SECRET']}"
    response = http.request(
        "POST",
        env["GENESYSCLOUD_API_HOST"] + "/oauth/token",
        fields={"grant_type": "client_credentials"},
        encode_multipart=False,
        headers=urllib3.make_headers(basic_auth=auth),
    )
    token: str = response.json()["access_token"]
    return token


def client_process(
    env: dict[str, str], threads: int, duration: float, generate: int, post_share: float, seed: int
) -> dict[str, Any]:
    """One client process: `threads` threads hammering the emulator until the deadline."""
    http = urllib3.PoolManager(maxsize=threads, retries=False, timeout=10)
    headers = {"Authorization": f"Bearer {get_token(http, env)}"}
    base = env["GENESYSCLOUD_API_HOST"]
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        local: Counter[str] = Counter()
        while time.perf_counter() < deadline:
            i = rng.randrange(generate) if generate else 0
            if generate and rng.random() < post_share and i % 10 < 7:
                suffix = f"{i:012x}"
                path = (
                    f"/api/v2/conversations/calls/{generated_conversation_id(i)}"
                    f"/participants/9e000002-0000-4000-8000-{suffix}"
                    f"/communications/9e000012-0000-4000-8000-{suffix}/wrapup"
                )
                r = http.request(
                    "POST",
                    base + path,
                    body=json.dumps({"code": SALES_CODE}),
                    headers={**headers, "Content-Type": "application/json"},
                )
                local[f"POST {r.status}"] += 1
            else:
                cid = generated_conversation_id(i) if rng.random() < 0.9 else rng.choice(SEEDED)
                r = http.request("GET", f"{base}/api/v2/conversations/{cid}", headers=headers)
                local[f"GET {r.status}"] += 1
        with lock:
            statuses.update(local)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return dict(statuses)


def _run_client(args: tuple[dict[str, str], int, float, int, float, int]) -> dict[str, Any]:
    return client_process(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--generate", type=int, default=100_000)
    parser.add_argument("--post-share", type=float, default=0.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    process, env, startup_s = start_server(args.generate)
    try:
        rss_start = rss_mb(process.pid)
        jobs = [
            (env, args.threads, args.duration, args.generate, args.post_share, p)
            for p in range(args.processes)
        ]
        started = time.perf_counter()
        with multiprocessing.Pool(args.processes) as pool:
            results = pool.map(_run_client, jobs)
        elapsed = time.perf_counter() - started
        rss_end = rss_mb(process.pid)
        http = urllib3.PoolManager()
        server_stats = http.request("GET", env["GENESYSCLOUD_API_HOST"] + "/__emulator__/stats")
        stats = server_stats.json()
    finally:
        process.terminate()
        process.wait(timeout=10)

    totals: Counter[str] = Counter()
    for r in results:
        totals.update(r)
    requests = sum(totals.values())
    gets_ok = totals.get("GET 200", 0)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"nproc={os.cpu_count()}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}",
        "generated_conversations": args.generate,
        "startup_s": round(startup_s, 2),
        "rss_mb_after_start": round(rss_start, 1),
        "rss_mb_after_run": round(rss_end, 1),
        "client": f"{args.processes} process(es) x {args.threads} threads, urllib3 keep-alive",
        "duration_s": round(elapsed, 2),
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "get_conversation_200_per_s": round(gets_ok / elapsed, 1),
        "statuses": dict(totals),
        "server_posts_accepted": stats["posts_accepted"],
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
