"""Plain data shared by every stage of the pipeline: row statuses and input rows."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class Status(StrEnum):
    """A row's outcome, in the ledger and in the results CSV (the names are a contract)."""

    # fine
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"
    WOULD_APPLY = "would_apply"
    # not fine
    INVALID = "invalid"
    UNKNOWN_CODE = "unknown_code"
    AMBIGUOUS_CODE = "ambiguous_code"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    NOT_ENDED = "not_ended"
    NO_AGENT = "no_agent"
    FORBIDDEN = "forbidden"
    REJECTED = "rejected"
    FAILED = "failed"
    NOT_REVERTIBLE = "not_revertible"  # revert: there was no previous code to put back
    # not finished
    PENDING = "pending"
    IN_FLIGHT = "in_flight"


FINE: frozenset[Status] = frozenset(
    {Status.APPLIED, Status.UNCHANGED, Status.SKIPPED, Status.DUPLICATE, Status.WOULD_APPLY}
)
UNFINISHED: frozenset[Status] = frozenset({Status.PENDING, Status.IN_FLIGHT})
NOT_FINE: frozenset[Status] = frozenset(set(Status) - FINE - UNFINISHED)


class InputRow(NamedTuple):
    """One input row after normalisation (a named tuple: a million are built for a large
    input, four times faster than a frozen dataclass).

    `row` is the 1-based data row number in input order (the header is not counted).
    `problem` is set when the row failed validation; it becomes the `invalid` message.
    `conversation_id` is normalised (lower case, braces and spaces stripped) when valid and
    kept as given otherwise; `wrapup_code` has surrounding spaces stripped.
    """

    row: int
    conversation_id: str
    wrapup_code: str
    notes: str | None = None
    agent_id: str | None = None
    problem: str | None = None
    #: The row-level status when `problem` is set (default `invalid`).
    status: Status | None = None
    #: Target exactly this communication (revert), and only while it still has `expected_code`.
    communication_id: str | None = None
    expected_code: str | None = None
