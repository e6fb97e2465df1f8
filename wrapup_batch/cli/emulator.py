"""`emulator`: serve the Genesys Cloud API emulator, or list the conversations it serves."""

from __future__ import annotations

import csv
import errno
import sys
from pathlib import Path
from typing import Any

import click

from wrapup_batch.api_settings import ENV_ACCESS_TOKEN
from wrapup_batch.cli.common import errors_reported, rate_limit_option
from wrapup_batch.errors import UsageError
from wrapup_batch.logs import begin_command


@click.command()
@click.option("--port", type=int, default=8642, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--seed", type=click.Path(exists=True, dir_okay=False), help="Seed JSON file.")
@click.option("--generate", type=click.IntRange(min=0), default=0, help="Synthetic conversations.")
@rate_limit_option(
    "Requests per token per minute before 429s (0: no limit).", type_=click.IntRange(min=0)
)
@click.option(
    "--token-ttl",
    type=click.IntRange(min=1),
    default=86400,
    show_default=True,
    help="Seconds an access token lives.",
)
@click.option(
    "--latency-ms",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Milliseconds added to every API request.",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of API requests answered with a 5xx.",
)
@click.option(
    "--random-seed", type=int, default=0, show_default=True, help="Seed of the fault dice."
)
@click.option(
    "--analytics-lag",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds before a wrap-up shows in analytics (as a real org's analytics lags).",
)
@click.option("--org-id", help="The org's id (GET /api/v2/organizations/me); two ids, two orgs.")
@click.option("--org-name", help="The org's name.")
@click.option(
    "--refuse-wrapups",
    metavar="CODE",
    help="Answer every wrap-up POST with 400 and this Genesys error code.",
)
@click.option(
    "--queue-codes-only",
    is_flag=True,
    help="Refuse (400) a wrap-up code that is not in the participant's queue wrap-up codes.",
)
@click.option(
    "--user-token",
    is_flag=True,
    help="Also issue a user's access token and print it as GENESYSCLOUD_ACCESS_TOKEN.",
)
@click.option(
    "--list",
    "list_count",
    type=click.IntRange(min=1),
    help="Print the first N conversations it would serve as CSV (id, media, ended, agent "
    "wrap-up), to build an input file from, and exit.",
)
def emulator(list_count: int | None, **params: Any) -> None:
    """Serve the Genesys Cloud API emulator until interrupted.

    It serves the seed's conversations (c0000001-0000-4000-8000-000000000000 ...) and, with
    --generate N, N more ended ones with ids 9e000000-0000-4000-8000-{i:012x} (i from 0, in
    hexadecimal); --list N prints some.
    """
    from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, serve_forever
    from wrapup_batch.emulator.seed import GENERATED_ID_PATTERN

    begin_command()
    if list_count is not None:
        _list_conversations(params["seed"], params["generate"], list_count)
        return
    config = EmulatorConfig(
        seed_path=Path(params["seed"]) if params["seed"] else None,
        generate=params["generate"],
        rate_limit=params["rate_limit"],
        token_ttl=params["token_ttl"],
        latency_ms=params["latency_ms"],
        fault_rate=params["fault_rate"],
        random_seed=params["random_seed"],
        host=params["host"],
        port=params["port"],
        analytics_wrapup_lag_s=params["analytics_lag"],
        refuse_wrapups=params["refuse_wrapups"] or "",
        queue_codes_only=params["queue_codes_only"],
    )
    if params["org_id"]:
        config.org_id = params["org_id"]
    if params["org_name"]:
        config.org_name = params["org_name"]

    def ready(handle: EmulatorHandle) -> None:
        click.echo(f"emulator serving {handle.base_url} (Ctrl-C to stop); point the tool at it:")
        for name, value in handle.env().items():
            click.echo(f"export {name}={value}")
        if params["user_token"]:
            click.echo(f"export {ENV_ACCESS_TOKEN}={handle.user_token()}")
        seeded = len(handle.state.seed.conversations)
        generated = (
            f" and {config.generate} generated ones (ended, no wrap-up), ids "
            f"{GENERATED_ID_PATTERN} for i = 0 to {config.generate - 1} in hexadecimal "
            f"(the first: {GENERATED_ID_PATTERN.format(i=0)})"
            if config.generate
            else ""
        )
        click.echo(
            f"conversations: {seeded} of the seed (c0000001-0000-4000-8000-000000000000, ...)"
            f"{generated}; `wrapup-batch emulator --list 20{_generate_flag(config.generate)}` "
            "prints some as CSV"
        )

    with errors_reported(None, log_option=False):
        try:
            serve_forever(config, on_ready=ready)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise UsageError(
                f"port {config.port} on {config.host} is in use (another emulator, or another "
                "program); stop it, or give another --port"
            ) from None


def _generate_flag(generate: int) -> str:
    return f" --generate {generate}" if generate else ""


def _list_conversations(seed: str | None, generate: int, count: int) -> None:
    from wrapup_batch.emulator import load_seed
    from wrapup_batch.emulator.seed import conversation_listing

    with errors_reported(None, log_option=False):
        rows = conversation_listing(load_seed(Path(seed) if seed else None, generate), count)
    out = csv.DictWriter(
        sys.stdout, ["conversation_id", "source", "media", "ended", "agent_wrapup"]
    )
    out.writeheader()
    out.writerows(rows)
    if len(rows) < count:
        click.echo(f"{len(rows)} conversation(s) in all; --generate N serves more", err=True)
