"""Results CSV and run summaries, from the ledger.

The results CSV has one line per input row, in input order. It is written UTF-8 with a BOM so
that spreadsheets open names and notes in any script correctly, and every cell that a
spreadsheet would run as a formula (starting with = + - @, tab or carriage return) is prefixed
with an apostrophe.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import ColumnElement, case, func, literal

from wrapup_batch.errors import UsageError
from wrapup_batch.ledger import Ledger, RunInfo
from wrapup_batch.models import FINE, NOT_FINE, UNFINISHED, Status
from wrapup_batch.org import META_KEYS as ORG_META_KEYS
from wrapup_batch.org import OrgIdentity

RESULT_COLUMNS = (
    "row",
    "conversation_id",
    "wrapup_code",
    "status",
    "message",
    "participant_id",
    "communication_id",
    "previous_code",
    "previous_code_id",
    "code_id",
    "http_status",
    "error_code",
    "context_id",
    "notes",
    "agent_id",
    "wrapup_end_time",
)

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_sql(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """A text cell that a spreadsheet shows and does not evaluate: prefixed with an apostrophe
    when it starts like a formula. An SQL expression, which the ledger wraps around each text
    column of the results, so that a million rows go from SQLite to the CSV writer without a
    Python step per cell (the numbers, row numbers and HTTP statuses, never start so)."""
    return case(
        (func.substr(column, 1, 1).in_(_FORMULA_STARTS), literal("'").concat(column)),
        else_=column,
    )


def check_writable(path: Path, option: str, *, in_place: bool = False) -> None:
    """Raise UsageError unless a file can be written at `path`: checked before a run sends
    anything, so that a mistyped folder stops it with exit 2 while nothing has changed.

    `in_place`: the file is written where it is (an existing writable file is enough);
    otherwise it is written beside and renamed over (its folder must take a new file).
    """
    where = f"{option} {path}"
    if path.is_dir():
        raise UsageError(f"{where} is a folder; give a file name, e.g. {path / 'out.csv'}")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(
            f"cannot write {where}: the folder {folder} does not exist; create it or give "
            "another path"
        )
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UsageError(f"cannot write {where}: the file exists and is read-only")
        if in_place:
            return
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise UsageError(
            f"cannot write {where}: {exc.strerror or exc} in {folder}; give a path in a folder "
            "you can write to"
        ) from None


def write_results(
    ledger: Ledger,
    run_id: int,
    path: Path,
    *,
    statuses: Sequence[str] | None = None,
) -> int:
    """Write the run's rows (optionally only some statuses) to `path`; return how many."""
    tmp = path.with_name(path.name + ".part")
    try:
        with tmp.open("w", encoding="utf-8-sig", newline="") as handle:
            written = write_results_to(ledger, run_id, handle, statuses=statuses)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write results to {path}: {exc.strerror or exc}") from None
    return written


def write_results_to(
    ledger: Ledger,
    run_id: int,
    handle: TextIO,
    *,
    statuses: Sequence[str] | None = None,
) -> int:
    """Write the run's rows as the results CSV to an open text stream (no BOM); return how many."""
    handle.write(_csv_text([RESULT_COLUMNS]))
    written = 0
    run = ledger.get_run(run_id)
    pages = ledger.iter_result_tuples(
        run_id,
        statuses=statuses,
        cell=neutralise_sql,
        code_names=run is not None and run.kind == "revert",  # its rows ask for code ids
    )
    for page in pages:
        handle.write(_csv_text(page))  # one write a page: the encoder runs once, not per row
        written += len(page)
    return written


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)  # None is written as an empty cell
    return buffer.getvalue()


def write_summary_json(path: Path, summary: Mapping[str, Any]) -> None:
    try:
        path.write_text(json.dumps(dict(summary), indent=2, sort_keys=True) + "\n", "utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the summary to {path}: {exc.strerror or exc}") from None


def _ordered(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    order = {status.value: i for i, status in enumerate(Status)}
    return sorted(counts.items(), key=lambda item: order.get(item[0], len(order)))


def format_summary(summary: Mapping[str, Any]) -> str:
    """The end-of-run summary for a person."""
    counts: Mapping[str, int] = summary.get("counts") or {}
    lines = [f"run {summary['run_id']}: {summary['message']}"]
    groups = (("fine", FINE), ("not fine", NOT_FINE), ("not finished", UNFINISHED))
    for title, members in groups:
        parts = [f"{s} {n}" for s, n in _ordered(counts) if Status(s) in members and n]
        if parts:
            lines.append(f"  {title}: " + ", ".join(parts))
    lines.append(
        f"  rows {summary['rows']}, requests {summary['requests']} "
        f"({summary['wrapup_posts']} wrap-up POSTs), "
        f"{summary['requests_per_minute']:g}/min of {summary['rate_limit_per_minute']:g} allowed, "
        f"429s {summary['throttled_429']} "
        f"(waited {summary['retry_after_wait_seconds']:g} s), "
        f"time {summary['elapsed_seconds']:.1f} s"
    )
    skipped = counts.get(Status.SKIPPED.value, 0)
    if skipped:
        lines.append(
            f"  skipped {skipped}: these already had another wrap-up code and were left as they "
            "were; --on-existing replace changes them"
        )
    applied = counts.get(Status.APPLIED.value, 0)
    here = summary.get("applied_this_run", applied)
    if here != applied:
        lines.append(
            (
                f"  this run applied {here} row(s) ({summary['applied_per_minute']:g}/min); the "
                f"other {applied - here}"
                if here
                else f"  this run applied nothing; the {applied}"
            )
            + " applied row(s) were applied by earlier runs"
        )
    if summary.get("dry_run"):
        lines.append("  dry run: nothing was written to Genesys Cloud")
    return "\n".join(lines)


# -- the state of a ledger (`wrapup-batch status`) ------------------------------------------------


def format_counts(counts: Mapping[str, int]) -> list[str]:
    """Counts by status as lines "fine: applied 9, ...", "not fine: ...", "not finished: ..."."""
    lines = []
    groups = (("fine", FINE), ("not fine", NOT_FINE), ("not finished", UNFINISHED))
    for title, members in groups:
        parts = [f"{s} {n}" for s, n in _ordered(counts) if _status(s) in members and n]
        if parts:
            lines.append(f"{title}: " + ", ".join(parts))
    others = [f"{s} {n}" for s, n in _ordered(counts) if _status(s) is None and n]
    if others:
        lines.append("other: " + ", ".join(others))
    return lines


def _status(value: str) -> Status | None:
    try:
        return Status(value)
    except ValueError:
        return None


def to_do(counts: Mapping[str, int], *, dry_run: bool) -> dict[str, int]:
    """The rows of a run a rerun would still work on: not fine or not finished (and, after a
    dry run, those that would be applied)."""
    wanted = NOT_FINE | UNFINISHED | ({Status.WOULD_APPLY} if dry_run else set())
    return {s: n for s, n in _ordered(counts) if _status(s) in wanted and n}


def run_counts(ledger: Ledger, run: RunInfo) -> dict[str, int]:
    """A run's counts: recorded when it finished, else read from its rows as they are now."""
    return dict(run.counts) if run.counts is not None else ledger.status_counts(run.id)


def status_data(ledger: Ledger) -> dict[str, Any]:
    """The runs of a ledger and the rows still to do after the last one, as JSON-ready data."""
    runs = ledger.list_runs()
    entries: list[dict[str, Any]] = []
    for run in runs:
        entries.append(
            {
                "id": run.id,
                "kind": run.kind,
                "dry_run": run.dry_run,
                "started": run.started,
                "finished": run.finished,
                "source": run.source,
                "started_by": (
                    {"id": run.started_by.id, "name": run.started_by.name}
                    if run.started_by
                    else None
                ),
                "exit_code": run.exit_code,
                "rows": sum(run_counts(ledger, run).values()),
                "counts": run_counts(ledger, run),
            }
        )
    still: dict[str, Any] | None = None
    if entries:
        last = entries[-1]
        todo = to_do(last["counts"], dry_run=bool(last["dry_run"]))
        still = {"run_id": last["id"], "rows": sum(todo.values()), "counts": todo}
    org = OrgIdentity.from_meta(ledger.read_meta(ORG_META_KEYS))
    live = [
        {
            "worker_id": w.worker_id,
            "run_id": w.run_id,
            "role": w.role,
            "pid": w.pid,
            "host": w.host,
            "client_id": w.client_id,
            "started": w.started,
            "heartbeat": w.heartbeat,
            "claims": w.claims,
        }
        for w in ledger.live_workers()
    ]
    return {
        "ledger": ledger.display,
        "org": org.as_dict() if org is not None else None,
        "runs": entries,
        "still_to_do": still,
        "live": live,
    }


def format_org(org: Mapping[str, str] | None) -> str:
    """The org line of `status`."""
    if not org:
        return "org: none recorded yet (the next run that reaches an org records it)"
    found = OrgIdentity(org["id"], org["name"], org["api_host"], org["principal"], org["since"])
    since = f" on {found.since}" if found.since else ""
    return f"{found.describe()}, first used {found.reached()}{since}"


def format_status(data: Mapping[str, Any]) -> str:
    """`status_data` for a person."""
    runs: list[Mapping[str, Any]] = data["runs"]
    org = format_org(data.get("org"))
    if not runs:
        return f"ledger {data['ledger']}: no runs yet\n{org}"
    lines = [f"ledger {data['ledger']}: {len(runs)} run(s)", org]
    for run in runs:
        kind = "dry run" if run["dry_run"] else str(run["kind"])
        if run["finished"]:
            outcome = f"exit {run['exit_code']}"
            when = f"{run['started']} to {run['finished']}"
        else:
            outcome = "not finished (running now, or stopped without a summary)"
            when = f"started {run['started']}"
        who = f" by {run['started_by']['name']}" if run.get("started_by") else ""
        lines.append(f"run {run['id']} ({kind}): {outcome}, {run['rows']} row(s), {when}{who}")
        lines.append(f"    source: {run['source']}")
        lines.extend(f"    {line}" for line in format_counts(run["counts"]))
    still = data["still_to_do"]
    if still["rows"]:
        parts = ", ".join(f"{s} {n}" for s, n in still["counts"].items())
        lines.append(f"still to do after run {still['run_id']}: {still['rows']} row(s) ({parts})")
        lines.extend(f"    {line}" for line in next_steps(still["counts"]))
    else:
        lines.append(f"still to do after run {still['run_id']}: nothing")
    live: list[Mapping[str, Any]] = data.get("live", [])
    if live:
        lines.append(f"live now: {len({w['run_id'] for w in live})} run(s), {len(live)} worker(s)")
        for w in live:
            lines.append(
                f"    run {w['run_id']} {w['role']} worker {w['worker_id']}: pid {w['pid']} on "
                f"{w['host']}, OAuth client {w['client_id']}, holds {w['claims']} "
                f"conversation(s), last heartbeat {w['heartbeat']}"
            )
    return "\n".join(lines)


#: What a person does about the rows still to do, by status: (statuses, what to do).
_NEXT_STEPS: tuple[tuple[frozenset[str], str], ...] = (
    (
        frozenset({"invalid", "unknown_code", "ambiguous_code", "conflict"}),
        "fix these in the input (a rerun alone cannot): {parts}",
    ),
    (
        frozenset({"would_apply"}),
        "the same run without --dry-run applies these: {parts}",
    ),
    (
        frozenset({"failed", "pending", "in_flight", "not_ended"}),
        "run the same input with this ledger again to retry these: {parts}",
    ),
    (
        frozenset({"not_found", "no_agent", "forbidden", "rejected", "not_revertible"}),
        "check these in Genesys Cloud (the id, the region, the role's divisions; "
        "`report --not-fine` has each message): {parts}",
    ),
)


def next_steps(counts: Mapping[str, int]) -> list[str]:
    """The rows still to do grouped by what fixes them: an edit of the input, a rerun, a run
    without --dry-run, or a look in Genesys Cloud."""
    lines = []
    for members, text in _NEXT_STEPS:
        parts = ", ".join(f"{s} {n}" for s, n in _ordered(counts) if s in members and n)
        if parts:
            lines.append(text.format(parts=parts))
    return lines
