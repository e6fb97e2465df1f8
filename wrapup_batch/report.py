"""Results CSV and run summaries, from the ledger.

The results CSV has one line per input row, in input order. It is written UTF-8 with a BOM so
that spreadsheets open names and notes in any script correctly, and every cell that a
spreadsheet would run as a formula (starting with = + - @, tab or carriage return) is prefixed
with an apostrophe.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wrapup_batch.errors import UsageError
from wrapup_batch.ledger import Ledger, ResultRow
from wrapup_batch.models import FINE, NOT_FINE, UNFINISHED, Status

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
)

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> str:
    """A cell as text that a spreadsheet shows and does not evaluate."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _cells(row: ResultRow) -> list[str]:
    return [neutralise(getattr(row, column)) for column in RESULT_COLUMNS]


def write_results(
    ledger: Ledger,
    run_id: int,
    path: Path,
    *,
    statuses: Sequence[str] | None = None,
) -> int:
    """Write the run's rows (optionally only some statuses) to `path`; return how many."""
    tmp = path.with_name(path.name + ".part")
    written = 0
    try:
        with tmp.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(RESULT_COLUMNS)
            for page in ledger.iter_results(run_id, statuses=statuses):
                writer.writerows(_cells(row) for row in page)
                written += len(page)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write results to {path}: {exc.strerror or exc}") from None
    return written


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
    if summary.get("dry_run"):
        lines.append("  dry run: nothing was written to Genesys Cloud")
    return "\n".join(lines)
