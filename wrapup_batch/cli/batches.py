"""`run`, `work` and `revert`: the commands that apply (or put back) wrap-up codes.

Each gathers its parameters (a `--job` file's under those given), lets `execution` do the
work with the console's progress reporter and Ctrl-C handling, then prints the summary.
"""

from __future__ import annotations

import functools
import sys
import threading
from pathlib import Path
from typing import Any

import click

from wrapup_batch import execution
from wrapup_batch.api_settings import ApiSettings
from wrapup_batch.cli.common import (
    LEASE_OPTION,
    MAX_RUNTIME_OPTION,
    QUIET_OPTION,
    REQUEST_TIMEOUT_OPTION,
    api_options,
    concurrency_option,
    errors_reported,
    given,
    given_names,
    log_options,
    options,
    throughput_options,
)
from wrapup_batch.cli.progress import ProgressReporter, while_working
from wrapup_batch.ledger import DEFAULT_LEDGER
from wrapup_batch.logs import REDACT, begin_command, setup_logging
from wrapup_batch.options import SANDBOX_LEDGER, ledger_for, merge_job, run_options
from wrapup_batch.refusals import DEFAULT_STOP_AFTER_REFUSALS
from wrapup_batch.report import format_summary
from wrapup_batch.runner import RunResult

_say = functools.partial(click.echo, err=True)

run_parameters = options(
    click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path()),
    click.option(
        "--job",
        type=click.Path(dir_okay=False),
        help="A TOML job file holding any of these options (see jobs/); the options given "
        "here override it.",
    ),
    click.option("--query", help="SQL query giving conversation_id and wrapup_code columns."),
    click.option("--query-file", type=click.Path(), help="A file holding the SQL query to run."),
    click.option("--source-url", help="SQLAlchemy URL of the database to query."),
    click.option(
        "--ledger",
        help=f"SQLite file (or SQLAlchemy URL) recording every row's outcome [default: "
        f"{DEFAULT_LEDGER}; with --sandbox {SANDBOX_LEDGER}, or the job's ledger with "
        "-sandbox added to its name]. A ledger belongs to the first org it is used on.",
    ),
    click.option("--results", type=click.Path(), help="Write the results CSV here."),
    click.option("--summary-json", type=click.Path(), help="Write the run summary as JSON."),
    click.option(
        "--dry-run/--no-dry-run",
        default=False,
        help="Read and plan; write nothing to Genesys (--no-dry-run overrides a job file).",
    ),
    click.option(
        "--on-existing",
        type=click.Choice(["skip", "replace"]),
        default="skip",
        show_default=True,
        help="What to do when a communication already has another wrap-up code.",
    ),
    click.option(
        "--participant",
        type=click.Choice(["last-agent", "all-agents"]),
        default="last-agent",
        show_default=True,
        help="Which agent communication(s) to wrap up.",
    ),
    *throughput_options("Requests per minute (the org's limit for this OAuth client)."),
    MAX_RUNTIME_OPTION,
    click.option(
        "--limit",
        type=click.IntRange(min=1),
        help="Only the first N rows of the input (try 5 on a real org before the rest).",
    ),
    click.option(
        "--stop-after-refusals",
        type=click.IntRange(min=0),
        default=DEFAULT_STOP_AFTER_REFUSALS,
        show_default=True,
        help="Stop (exit 3) when the first N wrap-up POSTs are all refused with the same "
        "error and none is accepted; 0: never.",
    ),
    click.option(
        "--column",
        "columns",
        multiple=True,
        help="Map a column to your header: NAME=HEADER (repeatable).",
    ),
    click.option("--encoding", help="Input file encoding (default UTF-8, BOM detected)."),
    click.option("--sheet", help="XLSX sheet name or 0-based index (default the first)."),
    REQUEST_TIMEOUT_OPTION,
    click.option(
        "--lookup",
        type=click.Choice(["conversations", "analytics"]),
        default="conversations",
        show_default=True,
        help="Read conversations one GET each, or many per analytics request "
        "(check your org with `wrapup-batch check --lookup-compare` first).",
    ),
    click.option(
        "--lookup-batch",
        type=click.IntRange(1, 100),
        default=100,
        show_default=True,
        help="Conversations per analytics request.",
    ),
    click.option(
        "--analytics-settle",
        default="1h",
        show_default=True,
        help="With --lookup analytics, read a conversation that ended less than this long "
        "ago (30m, 2h; 0 trusts analytics at once) through the Conversations API: analytics "
        "may not show a wrap-up set a moment ago.",
    ),
    LEASE_OPTION,
    click.option(
        "--sandbox",
        is_flag=True,
        help="Run against the built-in emulator, with a ledger of its own.",
    ),
    *log_options(),
    QUIET_OPTION,
)


@click.command()
@run_parameters
@click.pass_context
def run(ctx: click.Context, /, **params: Any) -> None:
    """Apply the wrap-up codes listed in INPUT (or returned by --query, or named by --job).

    Other runs may use the same ledger at once, and other processes may join this run
    (`wrapup-batch work --run N`). Exit codes: 0 every row fine; 1 some rows not fine; 2 usage,
    input, output or ledger error (nothing sent; a ledger of another org included); 3 aborted
    (credentials, a permission, or the first wrap-ups all refused); 4 stopped early (rerun
    resumes); 5 an older wrapup-batch is using the ledger; 6 an unexpected error (a bug); 7 the
    API could not be reached before any work (network, proxy, region).
    """
    begin_command()
    with errors_reported(None):
        params = merge_job(params, given_names(ctx, params))
        params["ledger"] = ledger_for(params, given=given(ctx, "ledger"))
        setup_logging(params["log_file"], params["verbose"], params["log_format"])
    with errors_reported(params["log_file"]):
        result = execute_and_report(params)
    sys.exit(result.exit_code)


def execute_and_report(
    params: dict[str, Any],
    *,
    interactive: bool | None = None,
    settings: ApiSettings | None = None,
    revert_of: int | None = None,
) -> RunResult:
    """Run a batch (or, with `revert_of`, revert that run) and print its summary."""
    batch = execution.prepare(params, revert_of=revert_of)
    tty = sys.stderr.isatty() if interactive is None else interactive
    reporter = ProgressReporter(enabled=not params["quiet"], interactive=tty)
    stop = threading.Event()
    try:
        outcome = execution.execute(
            batch,
            progress=reporter,
            stop=stop,
            settings=settings,
            note=None if params["quiet"] else _say,
            during=while_working(reporter, stop),
        )
    finally:
        reporter.close()
    result = outcome.result
    _say(format_summary(result.summary))
    if outcome.results_written:
        _say(f"  results: {params['results']}")
    elif not params["results"] and result.rows:
        _say(
            f"  every row's outcome: add --results FILE, or `wrapup-batch report --ledger "
            f"{outcome.ledger_display} --run {result.run_id} -o FILE` (--not-fine for only the "
            "rows to look at)"
        )
    for text in outcome.unwritten:
        _say(
            f"Error: {REDACT(text)} (the run itself is recorded in the ledger: "
            f"`wrapup-batch report --ledger {outcome.ledger_display} -o FILE` writes its results)"
        )
    return result


@click.command()
@click.option(
    "--ledger",
    default=DEFAULT_LEDGER,
    show_default=True,
    help="The ledger of the run to join: the same file or URL the run uses.",
)
@click.option(
    "--run",
    "run_id",
    type=click.IntRange(min=1),
    required=True,
    help="The run to work on (`wrapup-batch status` lists the live ones).",
)
@options(
    *throughput_options("Requests per minute (the org's limit for this process's OAuth client).")
)
@MAX_RUNTIME_OPTION
@REQUEST_TIMEOUT_OPTION
@LEASE_OPTION
@click.option("--summary-json", type=click.Path(), help="Write this worker's summary as JSON.")
@QUIET_OPTION
@options(*log_options())
def work(**params: Any) -> None:
    """Join run N in its ledger as one more worker, with this process's own OAuth client
    (GENESYSCLOUD_* from its environment), until none of the run's rows is left to do.

    Start the run with `wrapup-batch run` on one host; start `work --run N` on as many others
    as you have OAuth clients: each applies rows at its own client's rate limit, and the
    results are the same whichever worker applied a row. Exit codes as `run` (0 the run's rows
    are all fine, 1 some are not, 2, 3, 4).
    """
    begin_command()
    setup_logging(params["log_file"], params["verbose"], params["log_format"])
    with errors_reported(params["log_file"]):
        worker_options = run_options(params)
        reporter = ProgressReporter(enabled=not params["quiet"], interactive=sys.stderr.isatty())
        stop = threading.Event()
        try:
            result = execution.join(
                params["ledger"],
                params["run_id"],
                worker_options,
                progress=reporter,
                stop=stop,
                summary_json=Path(params["summary_json"]) if params["summary_json"] else None,
                during=while_working(reporter, stop),
            )
        finally:
            reporter.close()
        _say(format_summary(result.summary))
    sys.exit(result.exit_code)


@click.command()
@click.argument("run_id", type=click.IntRange(min=1))
@click.option(
    "--ledger",
    help=f"The ledger holding the run to revert [default: {DEFAULT_LEDGER}; with --sandbox "
    f"{SANDBOX_LEDGER}].",
)
@click.option("--dry-run", is_flag=True, help="Show what would be put back; write nothing.")
@click.option("--results", type=click.Path(), help="Write the revert's results CSV here.")
@click.option("--summary-json", type=click.Path(), help="Write the revert's summary as JSON.")
@concurrency_option()
@MAX_RUNTIME_OPTION
@QUIET_OPTION
@api_options
def revert(run_id: int, **params: Any) -> None:
    """Put back the wrap-up codes that run RUN_ID replaced.

    Every communication the run wrapped up gets its previous code again, as a new run in the
    ledger (resumable, and itself revertible). A communication whose code was changed since
    is left alone (skipped); one that had no wrap-up before cannot be cleared through the API
    and is reported not_revertible.
    """
    begin_command()
    setup_logging(params["log_file"], params["verbose"], params["log_format"])
    fixed = {
        "on_existing": "replace",
        "participant": "all-agents",
        "lookup": "conversations",
        "lookup_batch": 100,
        "ledger": ledger_for(params, given=params["ledger"] is not None),
    }
    with errors_reported(params["log_file"]):
        result = execute_and_report({**params, **fixed}, revert_of=run_id)
    sys.exit(result.exit_code)
