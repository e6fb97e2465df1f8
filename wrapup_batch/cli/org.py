"""`codes` and `check`: the org, before a run (the checks themselves are `checks.py`)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from wrapup_batch import execution
from wrapup_batch.checks import Checklist, conversation_ids, run_checks
from wrapup_batch.cli.common import api_options, errors_reported
from wrapup_batch.codes import CodeCatalog
from wrapup_batch.logs import begin_command, setup_logging


def _note(text: str) -> None:
    click.echo(text, err=True)


@click.command()
@click.option(
    "--match", help="Only codes whose name contains this text (ignoring case and spaces)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the codes as JSON.")
@api_options
def codes(match: str | None, as_json: bool, **params: Any) -> None:
    """List the org's wrap-up codes (id, name, division), sorted by name, for building an
    input file. Exit 3 when the client may not read them."""
    begin_command()
    with errors_reported(None):
        setup_logging(params["log_file"], params["verbose"], params["log_format"])
    with (
        errors_reported(params["log_file"]),
        execution.api_settings(params["sandbox"], params["request_timeout"], note=_note) as api,
    ):
        client = execution.client(api, params["rate_limit"])
        client.authenticate()
        catalog = CodeCatalog(execution.read_codes(client))
        found = catalog.search(match) if match else list(catalog)
    if as_json:
        rows = [
            {
                "id": c.id,
                "name": c.name,
                "division_id": c.division_id,
                "division_name": c.division_name,
            }
            for c in found
        ]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif found:
        table = [("id", "name", "division")] + [
            (c.id, c.name, c.division_name or c.division_id or "") for c in found
        ]
        widths = [max(len(row[i]) for row in table) for i in range(2)]
        for code_id, name, division in table:
            click.echo(f"{code_id:<{widths[0]}}  {name:<{widths[1]}}  {division}".rstrip())
    if match:
        click.echo(f"{len(found)} of {len(catalog)} code(s) match {match!r}", err=True)
    else:
        click.echo(f"{len(catalog)} code(s)", err=True)


@click.command()
@click.option(
    "--conversation",
    metavar="ID",
    help="Also read this conversation, to prove conversation:communication:view.",
)
@click.option(
    "--lookup-compare",
    "compare",
    multiple=True,
    metavar="ID[,ID...]",
    help="Read these conversations through the Conversations API and the analytics multi-get "
    "and say whether their communications agree (repeatable, or comma-separated).",
)
@api_options
def check(conversation: str | None, compare: tuple[str, ...], **params: Any) -> None:
    """Prove the setup before a big run: the credentials get a token, the codes can be read,
    a conversation can be read, and say which permission is missing when one is.

    Exit 0 when every check passes, 3 when the credentials are refused or a permission is
    missing, 1 when another check fails (a conversation not found, or --lookup-compare finds
    the two APIs disagree), 2 for a usage error.
    """
    begin_command()
    with errors_reported(None):
        setup_logging(params["log_file"], params["verbose"], params["log_format"])
        sample = conversation_ids([conversation], "--conversation") if conversation else []
        compare_ids = conversation_ids(compare, "--lookup-compare")
    checks = Checklist(click.echo)
    with (
        errors_reported(params["log_file"]),
        execution.api_settings(params["sandbox"], params["request_timeout"], note=_note) as api,
    ):
        run_checks(
            checks,
            api,
            params["rate_limit"],
            conversation=sample[0] if sample else None,
            compare=compare_ids,
        )
    sys.exit(checks.finish())
