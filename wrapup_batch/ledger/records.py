"""What the ledger hands out and takes in: the work, the outcomes, the results, the runs; and
the item statuses that decide what a run does again."""

from __future__ import annotations

import getpass
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from wrapup_batch.models import Status

#: Item statuses a run does not process again (`skipped` joins them under --on-existing skip).
DONE = (Status.APPLIED.value, Status.UNCHANGED.value)
#: Set while resolving codes and finding conflicts: final for this run.
DECIDED_BEFORE_WORK = (
    Status.UNKNOWN_CODE.value,
    Status.AMBIGUOUS_CODE.value,
    Status.CONFLICT.value,
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class WorkItem:
    row: int
    item_id: int
    conversation_id: str
    code_id: str
    code_name: str
    agent_id: str | None
    notes: str | None
    status: str
    previous_code: str | None
    previous_code_name: str | None
    communication_id: str | None = None
    expected_code: str | None = None
    attempts: int = 0  # in_flight marks and applies recorded: a POST may have been sent


@dataclass(frozen=True, slots=True)
class ResolvedCode:
    """How one requested code value resolved: a code (status None), or the status (unknown
    or ambiguous code) and message its rows get."""

    requested: str
    code_id: str | None
    code_name: str | None
    status: Status | None
    message: str


@dataclass(frozen=True, slots=True)
class AppliedItem:
    """What a run applied to one conversation: per communication, the code it replaced."""

    conversation_id: str
    code_id: str
    communication_ids: tuple[str, ...]
    previous_codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ItemUpdate:
    """An item's new state. Every field is written, so the runner says what it keeps."""

    item_id: int
    status: str
    message: str = ""
    participant_id: str | None = None
    communication_id: str | None = None
    media: str | None = None
    previous_code: str | None = None
    previous_code_name: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    context_id: str | None = None
    attempts: int = 0
    #: The `endTime` sent (or to be sent) with each wrap-up, ";"-joined like the communications.
    wrapup_end_time: str | None = None


class ResultRow(NamedTuple):
    """One line of the results: the fields in `report.RESULT_COLUMNS` order. A named tuple
    (not a dataclass): a million of them are built for a results file."""

    row: int
    conversation_id: str
    wrapup_code: str
    status: str
    message: str
    participant_id: str | None
    communication_id: str | None
    previous_code: str | None
    previous_code_id: str | None
    code_id: str | None
    http_status: int | None
    error_code: str | None
    context_id: str | None
    notes: str | None
    agent_id: str | None
    wrapup_end_time: str | None


@dataclass(frozen=True, slots=True)
class StartedBy:
    """Who started a run: a Genesys user (id and name) or an OS account (id `os:<user>`)."""

    id: str
    name: str


def local_account() -> StartedBy:
    """The operating-system account running this process (command line, cron)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return StartedBy(f"os:{user}", f"{user}@{socket.gethostname()}")


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: int
    kind: str
    started: str
    finished: str | None
    source: str
    options: dict[str, Any]
    dry_run: bool
    counts: dict[str, int] | None
    summary: dict[str, Any] | None
    exit_code: int | None
    started_by: StartedBy | None = None


def run_info(row: Any) -> RunInfo:
    return RunInfo(
        id=int(row["id"]),
        kind=str(row["kind"]),
        started=str(row["started"]),
        finished=row["finished"],
        source=str(row["source"]),
        options=json.loads(row["options"] or "{}"),
        dry_run=bool(row["dry_run"]),
        counts=json.loads(row["counts"]) if row["counts"] else None,
        summary=json.loads(row["summary"]) if row["summary"] else None,
        exit_code=row["exit_code"],
        started_by=StartedBy(row["started_by_id"], row["started_by_name"] or "")
        if row["started_by_id"]
        else None,
    )
