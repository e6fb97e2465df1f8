"""The seed tutorial's flow against the tool (issue 6, target 2), at the same limit and latency.

The tutorial (`shared/seed/wrapup-tutorial.txt`) applies wrap-up codes one row at a time:
read the conversation, POST the wrap-up, read the conversation again to verify. Here that flow
is written with the official SDK as it ships (`PureCloudPlatformClientV2`: `ApiClient` with its
own default transport, whose urllib3 retries wait out a 429's `Retry-After`), with the
tutorial's endpoints replaced by the real ones (`ConversationsApi.get_conversation`,
`post_conversations_{media}_participant_communication_wrapup`), after one lookup of the code's
id by name (`RoutingApi.get_routing_wrapupcodes`).

For each setting `LIMIT:LATENCY_MS`, three emulators with those settings are started, and at
the same time, for the same duration: the seed flow (its own process), `wrapup-batch run`
with the default lookup, and `wrapup-batch run --lookup analytics`. Reported: rows per minute
of each and the ratio tool / seed. The settings run in parallel (each has its own emulators).

    .venv/bin/python benchmarks/seed_flow.py [--settings 1200:40 300:250] [--duration 120]
        [--json OUT]
    # the seed flow alone, against the GENESYSCLOUD_* environment:
    .venv/bin/python benchmarks/seed_flow.py --seed-only --duration 60 [--first 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchlib import (
    OUT,
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

CODE_NAME = "Sales"
MEDIA = ("calls", "callbacks", "emails", "messages")
STAGGER_SECONDS = 4.0
SDK_MEDIA = {"calls": "call", "callbacks": "callback", "emails": "email", "messages": "message"}


# -- the tutorial's flow -------------------------------------------------------------------


def seed_flow(duration: float, first: int) -> dict[str, Any]:
    """Wrap up generated conversations first, first+1, ... one at a time until `duration`."""
    from PureCloudPlatformClientV2 import ApiClient, ConversationsApi, RoutingApi, WrapupInput

    from wrapup_batch.emulator.seed import generated_conversation_id

    api_client = ApiClient(host=os.environ["GENESYSCLOUD_API_HOST"])  # the SDK's own transport
    api_client.get_client_credentials_token(
        os.environ["GENESYSCLOUD_OAUTHCLIENT_ID"], os.environ["GENESYSCLOUD_OAUTHCLIENT_SECRET"]
    )
    conversations = ConversationsApi(api_client)
    routing = RoutingApi(api_client)

    # Step 1 of the tutorial: the code's id from its name.
    code_id = None
    page = 1
    while code_id is None:
        listing = routing.get_routing_wrapupcodes(page_size=100, page_number=page)
        code_id = next((c.id for c in listing.entities or [] if c.name == CODE_NAME), None)
        if page >= (listing.page_count or 0):
            break
        page += 1
    if code_id is None:
        raise SystemExit(f"wrap-up code {CODE_NAME!r} not found")

    started = time.perf_counter()
    deadline = started + duration
    done = verified = 0
    latencies: list[float] = []
    i = first
    while time.perf_counter() < deadline:
        row_started = time.perf_counter()
        conversation_id = generated_conversation_id(i)
        i += 1
        # Step 3: look up the conversation, pick the agent's communication, POST the wrap-up.
        conversation = conversations.get_conversation(conversation_id)
        media, participant_id, communication_id = _agent_communication(conversation)
        body = WrapupInput()
        body.code = code_id
        post = getattr(
            conversations, f"post_conversations_{SDK_MEDIA[media]}_participant_communication_wrapup"
        )
        post(conversation_id, participant_id, communication_id, body=body)
        # Step 4: read it back to verify.
        again = conversations.get_conversation(conversation_id)
        if _wrapup_code(again, participant_id, communication_id) == code_id:
            verified += 1
        done += 1
        latencies.append(time.perf_counter() - row_started)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rows": done,
        "verified": verified,
        "elapsed_seconds": round(elapsed, 2),
        "rows_per_minute": round(done * 60.0 / elapsed, 1) if elapsed else 0.0,
        "row_seconds_median": round(latencies[len(latencies) // 2], 4) if latencies else None,
        "row_seconds_p95": round(latencies[int(len(latencies) * 0.95)], 4) if latencies else None,
    }


def _agent_communication(conversation: Any) -> tuple[str, str, str]:
    """The last agent participant's first communication (generated conversations have one)."""
    for participant in reversed(conversation.participants or []):
        if participant.purpose != "agent":
            continue
        for media in MEDIA:
            for communication in getattr(participant, media) or []:
                return media, participant.id, communication.id
    raise RuntimeError(f"conversation {conversation.id} has no agent communication")


def _wrapup_code(conversation: Any, participant_id: str, communication_id: str) -> str | None:
    for participant in conversation.participants or []:
        if participant.id != participant_id:
            continue
        for media in MEDIA:
            for communication in getattr(participant, media) or []:
                if communication.id == communication_id and communication.wrapup is not None:
                    return str(communication.wrapup.code)
    return None


# -- the comparison ------------------------------------------------------------------------


def run_seed(env: dict[str, str], duration: float) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--seed-only"]
    command += ["--duration", str(duration)]
    started = time.time()
    done = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the seed flow failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["wall_seconds"] = round(time.time() - started, 2)
    return result


def compare(limit: int, latency_ms: int, duration: float, folder: Path) -> dict[str, Any]:
    """The seed flow, the tool (default lookup) and the tool (analytics), side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = {
        mode: math.ceil(ideal_rows_per_minute(limit, mode) * duration / 60.0)
        for mode in ("conversations", "analytics")
    }
    # Generated conversations: enough for the seed at any speed (it stops at the deadline).
    generate = max(rows.values()) + 10_000
    out: dict[str, Any] = {"limit_per_minute": limit, "latency_ms": latency_ms}
    with (
        emulator(generate=generate, rate_limit=limit, latency_ms=latency_ms) as seed_emu,
        emulator(generate=generate, rate_limit=limit, latency_ms=latency_ms) as conv_emu,
        emulator(generate=generate, rate_limit=limit, latency_ms=latency_ms) as ana_emu,
        ThreadPoolExecutor(3) as pool,
    ):
        inputs = {mode: write_input(folder / f"{mode}.csv", n) for mode, n in rows.items()}
        # A few seconds apart, so that their start-ups (imports) do not meet; each measures
        # its own steady part (the seed from its first row, the tool over its apply phase).
        seed = pool.submit(run_seed, seed_emu.env, duration)
        time.sleep(STAGGER_SECONDS)
        conv = pool.submit(
            run_tool, folder, conv_emu.env, inputs["conversations"], limit=limit, name="conv"
        )
        time.sleep(STAGGER_SECONDS)
        extra = ["--lookup", "analytics"]
        ana = pool.submit(
            run_tool, folder, ana_emu.env, inputs["analytics"], limit=limit, extra=extra, name="ana"
        )
        seed_result = seed.result()
        seed_stats = seed_emu.stats()
        seed_result["requests_seen_by_emulator"] = requests_seen(seed_stats)
        seed_result["answered_429"] = seed_stats["throttled"]
        seed_result["requests_by_route"] = requests_by_route(seed_stats)
        out["seed_flow"] = seed_result
        for key, future, emu in (
            ("tool_conversations", conv, conv_emu),
            ("tool_analytics", ana, ana_emu),
        ):
            run = future.result()
            stats = emu.stats()
            out[key] = {
                "rows": run.summary["rows"],
                "applied": run.summary["counts"].get("applied", 0),
                "rows_per_minute": run.summary["applied_per_minute"],
                "requests_seen_by_emulator": requests_seen(stats),
                "answered_429": stats["throttled"],
                "wall_seconds": run.wall_seconds,
            }
    seed_rate = out["seed_flow"]["rows_per_minute"]
    for key in ("tool_conversations", "tool_analytics"):
        tool_rate = out[key]["rows_per_minute"]
        out[key]["ratio_to_seed"] = round(tool_rate / seed_rate, 2) if seed_rate else None
    # What bounds each: the seed flow's rows per minute can be no more than the budget (3
    # requests per row) nor than one row per 3 x latency (sequential).
    out["seed_budget_bound_rows_per_minute"] = round(limit / 3.0, 1)
    out["seed_latency_bound_rows_per_minute"] = round(60.0 / (3 * latency_ms / 1000.0), 1)
    out["tool_ideal_rows_per_minute"] = {
        mode: round(ideal_rows_per_minute(limit, mode), 1)
        for mode in ("conversations", "analytics")
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=["1200:40", "300:250"])
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=OUT / "seed_flow.json")
    parser.add_argument("--seed-only", action="store_true", help="run the seed flow alone")
    parser.add_argument("--first", type=int, default=0, help="with --seed-only: first id")
    args = parser.parse_args()
    if args.seed_only:
        print(json.dumps(seed_flow(args.duration, args.first)))
        return
    settings = [tuple(int(x) for x in s.split(":")) for s in args.settings]
    result: dict[str, Any] = {
        "benchmark": "seed_flow",
        "machine": machine(),
        "duration_seconds": args.duration,
        "concurrency": 4,
    }
    with scratch("wrapup-bench-seed-") as folder, ThreadPoolExecutor(len(settings)) as pool:
        futures = []
        for k, (limit, latency) in enumerate(settings):
            if k:
                time.sleep(3 * STAGGER_SECONDS)
            where = folder / f"{limit}-{latency}"
            futures.append(pool.submit(compare, limit, latency, args.duration, where))
        result["settings"] = [f.result() for f in futures]
    emit(result, args.json)


if __name__ == "__main__":
    main()
