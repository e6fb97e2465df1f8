"""`python -m wrapup_batch.emulator`: serve the emulator until interrupted.

Prints the environment variables that point wrapup-batch at it (the secret is the emulator's
own fake one), one `NAME=value` per line on stdout, then serves.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from wrapup_batch.emulator.config import DEFAULT_ORG_ID, DEFAULT_ORG_NAME, EmulatorConfig
from wrapup_batch.emulator.server import EmulatorHandle, serve_forever


def parse_args(argv: Sequence[str] | None = None) -> EmulatorConfig:
    parser = argparse.ArgumentParser(
        prog="python -m wrapup_batch.emulator",
        description="Serve a Genesys Cloud API emulator on loopback until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8642, help="0 picks a free port")
    parser.add_argument("--seed", type=Path, default=None, help="seed JSON (default: packaged)")
    parser.add_argument("--generate", type=int, default=0, help="synthetic conversations")
    parser.add_argument("--rate-limit", type=int, default=300, help="per token per minute")
    parser.add_argument(
        "--rate-limit-scope",
        choices=("token", "client"),
        default="token",
        help="count the limit per token (default) or per OAuth client",
    )
    parser.add_argument(
        "--worker-clients",
        type=int,
        default=0,
        help="N more OAuth clients wrapup-batch-worker-1..N (secrets worker-1-secret ...)",
    )
    parser.add_argument("--token-ttl", type=int, default=86400, help="seconds")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="0..1")
    parser.add_argument("--random-seed", type=int, default=0)
    parser.add_argument(
        "--analytics-lag",
        type=float,
        default=0.0,
        help="seconds before a wrap-up shows in analytics",
    )
    parser.add_argument("--org-id", default=DEFAULT_ORG_ID, help="the org's id")
    parser.add_argument("--org-name", default=DEFAULT_ORG_NAME, help="the org's name")
    parser.add_argument(
        "--refuse-wrapups", default="", metavar="CODE", help="every wrap-up POST answers 400 CODE"
    )
    parser.add_argument(
        "--queue-codes-only",
        action="store_true",
        help="refuse a wrap-up code that is not in the participant's queue list",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.fault_rate <= 1:
        parser.error("--fault-rate must be between 0 and 1")
    for name in (
        "generate",
        "worker_clients",
        "rate_limit",
        "token_ttl",
        "latency_ms",
        "port",
        "analytics_lag",
    ):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    return EmulatorConfig(
        seed_path=args.seed,
        generate=args.generate,
        rate_limit=args.rate_limit,
        rate_limit_scope=args.rate_limit_scope,
        worker_clients=args.worker_clients,
        token_ttl=args.token_ttl,
        latency_ms=args.latency_ms,
        fault_rate=args.fault_rate,
        random_seed=args.random_seed,
        host=args.host,
        port=args.port,
        analytics_wrapup_lag_s=args.analytics_lag,
        org_id=args.org_id,
        org_name=args.org_name,
        refuse_wrapups=args.refuse_wrapups,
        queue_codes_only=args.queue_codes_only,
    )


def _announce(handle: EmulatorHandle) -> None:
    for name, value in handle.env().items():
        print(f"{name}={value}")
    print(
        f"Genesys Cloud emulator serving {handle.state.conversation_count} conversations "
        f"on {handle.base_url} (Ctrl-C stops it)",
        file=sys.stderr,
    )
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    try:
        serve_forever(config, on_ready=_announce)
    except (OSError, ValueError) as exc:
        print(f"emulator: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
