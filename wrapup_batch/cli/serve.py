"""`serve`: the analysts' page (`wrapup_batch.web`, imported only here, and only when run)."""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

import click

from wrapup_batch.cli.common import (
    LEDGER_OPTION,
    concurrency_option,
    errors_reported,
    fail,
    given,
    rate_limit_option,
)
from wrapup_batch.logs import begin_command
from wrapup_batch.options import SANDBOX_LEDGER

if TYPE_CHECKING:
    from wrapup_batch.web.server import ServeOptions


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@LEDGER_OPTION
@click.option("--data-dir", help="Folder for uploaded files (default: beside the ledger).")
@click.option("--sandbox", is_flag=True, help="Batches and sign-in on the built-in emulator.")
@click.option("--no-auth", is_flag=True, help="No sign-in (only on 127.0.0.1/::1/localhost).")
@click.option(
    "--max-upload",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Largest upload, in MB.",
)
@click.option(
    "--login-client-id",
    help="Code Authorization (PKCE) client for sign-in [env WRAPUP_BATCH_LOGIN_CLIENT_ID].",
)
@click.option("--https", is_flag=True, help="Reached over https (a TLS proxy): Secure cookies.")
@rate_limit_option("Requests per minute of the page's batches.")
@concurrency_option("Workers per batch.", most=None)
def serve(**params: Any) -> None:
    """Serve the analysts' page: sign in, upload, preview, apply, watch, download results."""
    begin_command()
    try:
        from wrapup_batch.web.server import ServeOptions
        from wrapup_batch.web.server import serve as serve_page
    except ImportError as exc:
        fail(f"the page needs the web extra: pip install 'wrapup-batch[web]' ({exc})", 2)

    if params["sandbox"] and not given(click.get_current_context(), "ledger"):
        params["ledger"] = SANDBOX_LEDGER  # the emulator never shares a real org's ledger
    options = ServeOptions(**{**params, "max_upload": params["max_upload"] * 1024 * 1024})

    def ready(url: str, opts: ServeOptions) -> None:
        click.echo(f"wrapup-batch page: {url}  (ledger {opts.ledger}; Ctrl-C to stop)")
        if opts.sandbox:
            click.echo("sandbox: sign in as analyst@example.com / analyst-password")

    with errors_reported(None), suppress(KeyboardInterrupt):  # Ctrl-C: the normal way out
        serve_page(options, ready)
    click.echo("wrapup-batch page stopped")
