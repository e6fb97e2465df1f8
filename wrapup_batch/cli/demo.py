"""`demo`: sample_data/reclassify.csv on the in-process emulator, in three commented steps."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from wrapup_batch.cli.batches import execute_and_report
from wrapup_batch.cli.common import errors_reported
from wrapup_batch.errors import UsageError
from wrapup_batch.execution import sandbox_settings
from wrapup_batch.ledger import Ledger
from wrapup_batch.logs import begin_command
from wrapup_batch.models import NOT_FINE, Status
from wrapup_batch.refusals import DEFAULT_STOP_AFTER_REFUSALS
from wrapup_batch.runner import RunResult

SAMPLE_DATA = Path(__file__).resolve().parent.parent.parent / "sample_data"


@click.command()
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default="demo-output",
    show_default=True,
    help="Folder for the demo's ledger and results (emptied first).",
)
def demo(output: str) -> None:
    """Run sample_data/reclassify.csv on the emulator: a dry run, the run, then a rerun."""
    begin_command()
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("demo-ledger.db", "demo-ledger.db-wal", "demo-ledger.db-shm"):
        (folder / name).unlink(missing_ok=True)
    csv_path = _sample("reclassify.csv")
    base: dict[str, Any] = {
        "input_path": str(csv_path),
        "query": None,
        "query_file": None,
        "source_url": None,
        "ledger": str(folder / "demo-ledger.db"),
        "results": None,
        "summary_json": None,
        "dry_run": False,
        "on_existing": "skip",
        "participant": "last-agent",
        "rate_limit": 300.0,
        "concurrency": 4,
        "max_runtime": None,
        "columns": (),
        "encoding": None,
        "sheet": None,
        "request_timeout": 30.0,
        "lookup": "conversations",
        "lookup_batch": 100,
        "stop_after_refusals": DEFAULT_STOP_AFTER_REFUSALS,
        "limit": None,
        "sandbox": True,
        "quiet": True,
        "log_file": None,
    }
    ledger = str(folder / "demo-ledger.db")
    say = functools.partial(click.echo, err=True)
    say(
        f"wrapup-batch demo: the sample batch {csv_path} on the built-in emulator, a stand-in "
        "for a Genesys Cloud org\nseeded from sample_data/ (no real org is touched). The "
        "sample mixes rows that work with rows that are\nwrong on purpose, to show each kind "
        "of problem the tool reports. Three steps, one ledger:"
    )
    steps = (
        (
            "1. dry run: read and plan every row, write nothing",
            {"dry_run": True, "results": "dry-run.csv"},
        ),
        ("2. the run: the same batch, written", {"results": "run.csv"}),
        ("3. the rerun: the same input and ledger again", {"results": "rerun.csv"}),
    )
    results: list[RunResult] = []
    # One emulator for every step, so that the rerun sees what the run wrote.
    with errors_reported(None, log_option=False), sandbox_settings(30.0) as settings:
        for title, changes in steps:
            say(f"\n== {title}")
            params = {**base, **changes}
            params["results"] = str(folder / str(changes["results"]))
            results.append(execute_and_report(params, interactive=False, settings=settings))
            say(_demo_comment(len(results), results, ledger, params["results"]))
    say(
        "\nNext:\n"
        f"  wrapup-batch status --ledger {ledger}\n"
        "      the three runs, and what is still to do and how\n"
        f"  wrapup-batch report --ledger {ledger} --not-fine\n"
        "      the rows to fix, each with its message\n"
        "  wrapup-batch run YOUR.csv --sandbox --dry-run --results preview.csv\n"
        "      your own CSV (conversation_id, wrapup_code) on the emulator; its conversations "
        "are listed by\n      `wrapup-batch emulator --list 20`. Each --sandbox call starts a "
        "fresh emulator.\n"
        "  wrapup-batch serve --sandbox\n"
        "      the analysts' page on the emulator: open http://127.0.0.1:8080 and sign in as "
        "analyst@example.com /\n      analyst-password (viewer@example.com / viewer-password "
        "may only preview)\n"
        '  Then the README\'s "Pointing it at your org" for a real org, with --dry-run first.'
    )


def _demo_comment(step: int, results: Sequence[RunResult], ledger: str, csv_file: str) -> str:
    """What a step of the demo showed, from its own counts."""
    result = results[-1]
    counts = result.counts
    not_fine = sum(n for s, n in counts.items() if Status(s) in NOT_FINE)
    if step == 1:
        book = Ledger.open(ledger, create=False)
        try:
            bad = [
                f"row {r.row} {r.status}"
                for page in book.iter_results(result.run_id, statuses=[s.value for s in NOT_FINE])
                for r in page
            ]
        finally:
            book.close()
        return (
            f"-> Every row was decided without a single write: {counts.get('would_apply', 0)} "
            "would be applied (would_apply); unchanged, skipped and duplicate rows need "
            f"nothing.\n   The {not_fine} row(s) that need attention are the sample's "
            f"deliberate mistakes: {', '.join(bad)}.\n   Each row's outcome: {csv_file}"
        )
    if step == 2:
        return (
            f"-> {counts.get('applied', 0)} wrap-up(s) applied, one POST each "
            f"({result.summary['wrapup_posts']} POSTs), paced under the rate limit; the same "
            f"{not_fine} deliberate mistakes,\n   recorded with the reason for each. Each row "
            f"with the ids it touched and the code it replaced: {csv_file}"
        )
    return (
        f"-> {result.summary['wrapup_posts']} wrap-up POSTs: the ledger knows which rows are "
        "done, so a rerun costs nothing for them. Only\n   the rows not fine were tried again "
        f"({result.summary['requests']} requests: the code list and their conversations); "
        "they stay so until the input\n   (or the conversation) changes."
    )


def _sample(name: str) -> Path:
    for folder in (Path("sample_data"), SAMPLE_DATA):
        if (folder / name).is_file():
            return folder / name
    raise UsageError(f"sample_data/{name} not found; run the demo from the project folder")
