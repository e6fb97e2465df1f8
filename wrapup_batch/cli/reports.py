"""`status` and `report`: what a ledger holds (no API call, no SDK import)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import click

from wrapup_batch.cli.common import LEDGER_OPTION, errors_reported
from wrapup_batch.errors import LedgerError, UsageError
from wrapup_batch.ledger import DEFAULT_LEDGER, Ledger, RunInfo
from wrapup_batch.logs import begin_command
from wrapup_batch.models import FINE, NOT_FINE, UNFINISHED, Status
from wrapup_batch.options import SANDBOX_LEDGER
from wrapup_batch.report import format_status, status_data, write_results, write_results_to

STATUS_NAMES = tuple(status.value for status in Status)


@click.command()
@LEDGER_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(ledger: str, as_json: bool) -> None:
    """Show the runs in a ledger (when, source, counts by status, exit code) and the rows
    still to do after the last run."""
    begin_command()
    with errors_reported(None, log_option=False):
        book = _open_existing(ledger)
        try:
            data = status_data(book)
        finally:
            book.close()
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else format_status(data))


@click.command()
@LEDGER_OPTION
@click.option(
    "--run", "run_id", type=click.IntRange(min=1), help="The run to report (default: the last)."
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUS_NAMES),
    help="Only rows with this status (repeatable).",
)
@click.option(
    "--not-fine",
    is_flag=True,
    help="Only the rows that are not fine or not finished: those a rerun tries again.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="Write the CSV to this file (UTF-8 with a BOM, for spreadsheets); "
    "default: standard output.",
)
def report(
    ledger: str,
    run_id: int | None,
    statuses: tuple[str, ...],
    not_fine: bool,
    output: str | None,
) -> None:
    """Write the rows of a run (default: the last) as the results CSV, optionally only those
    with some statuses: `report --not-fine -o failures.csv` after a nightly run."""
    begin_command()
    wanted = set(statuses)
    if not_fine:
        wanted |= {status.value for status in NOT_FINE | UNFINISHED}
    chosen = [name for name in STATUS_NAMES if name in wanted] or None
    with errors_reported(None, log_option=False):
        book = _open_existing(ledger)
        try:
            run_info = _the_run(book, run_id)
            if output:
                written = write_results(book, run_info.id, Path(output), statuses=chosen)
            else:
                written = _to_stdout(book, run_info.id, chosen)
        finally:
            book.close()
    which = f" with status {', '.join(chosen)}" if chosen else ""
    if not_fine:
        extra = [name for name in STATUS_NAMES if name in statuses and Status(name) in FINE]
        which = " not fine or not finished" + (f" or with status {', '.join(extra)}" * bool(extra))
    where = output if output else "standard output"
    click.echo(f"run {run_info.id}: {written} row(s){which} written to {where}", err=True)


def _open_existing(ledger: str) -> Ledger:
    """A ledger to read; when the default is missing but a sandbox run wrote its own, say so."""
    try:
        return Ledger.open(ledger, create=False)
    except LedgerError as err:
        if ledger == DEFAULT_LEDGER and not Path(ledger).exists() and Path(SANDBOX_LEDGER).exists():
            raise LedgerError(
                f"{err} (--sandbox runs write {SANDBOX_LEDGER}: add --ledger {SANDBOX_LEDGER})"
            ) from None
        raise


def _to_stdout(book: Ledger, run_id: int, statuses: Sequence[str] | None) -> int:
    try:
        written = write_results_to(book, run_id, sys.stdout, statuses=statuses)
        sys.stdout.flush()
    except BrokenPipeError:  # `report | head`: the reader has what it wanted
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    return written


def _the_run(book: Ledger, run_id: int | None) -> RunInfo:
    found = book.get_run(run_id)
    if found is not None:
        return found
    if run_id is None:
        raise UsageError(f"ledger {book.display} has no runs yet")
    raise UsageError(
        f"ledger {book.display} has no run {run_id}; `wrapup-batch status --ledger "
        f"{book.display}` lists its runs"
    )
