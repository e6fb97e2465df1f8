"""Undo a run: put back, on every communication a run wrapped up, the code it had before.

A revert is itself a run (kind `revert`) over rows made from the ledger: one row per
communication the run applied, asking for the previous code on exactly that communication,
and only while it still carries the code the run set (a code changed since by someone else is
left alone). So a revert is resumable and can itself be reverted. A communication that had no
wrap-up before cannot be cleared through the API, and one that had a system code
(`ININ-WRAP-UP-TIMEOUT`, ...) cannot get it back: their rows are `not_revertible`.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapup_batch.errors import UsageError
from wrapup_batch.ledger import Ledger
from wrapup_batch.models import InputRow, Status
from wrapup_batch.planner import is_system_code


def check_revertible(ledger: Ledger, run_id: int) -> None:
    run = ledger.get_run(run_id)
    if run is None:
        raise UsageError(f"ledger {ledger.display} has no run {run_id}; see `wrapup-batch status`")
    if run.dry_run:
        raise UsageError(
            f"run {run_id} was a dry run: it wrote nothing, so there is nothing to revert"
        )


def revert_rows(ledger: Ledger, run_id: int, *, chunk_size: int = 1000) -> Iterator[list[InputRow]]:
    """The revert's input rows, in the order of the reverted run's rows."""
    number = 0
    chunk: list[InputRow] = []
    for page in ledger.iter_applied(run_id, batch=chunk_size):
        for item in page:
            previous = item.previous_codes + ("",) * len(item.communication_ids)
            for communication_id, previous_code in zip(
                item.communication_ids, previous, strict=False
            ):
                if previous_code == item.code_id:
                    continue  # the run left this one as it was
                number += 1
                chunk.append(
                    _row(
                        number,
                        item.conversation_id,
                        communication_id,
                        previous_code,
                        item.code_id,
                        run_id,
                    )
                )
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _row(
    number: int,
    conversation_id: str,
    communication_id: str,
    previous_code: str,
    applied_code: str,
    run_id: int,
) -> InputRow:
    if is_system_code(previous_code):
        return InputRow(
            number,
            conversation_id,
            "",
            problem=(
                f"communication {communication_id} had the system code {previous_code} before "
                f"run {run_id}; Genesys sets those itself and they cannot be POSTed"
            ),
            status=Status.NOT_REVERTIBLE,
            communication_id=communication_id,
        )
    if not previous_code:
        return InputRow(
            number,
            conversation_id,
            "",
            problem=(
                f"communication {communication_id} had no wrap-up before run {run_id}, and the "
                "API cannot remove a wrap-up; set another code with a new run if needed"
            ),
            status=Status.NOT_REVERTIBLE,
            communication_id=communication_id,
        )
    return InputRow(
        number,
        conversation_id,
        previous_code,
        communication_id=communication_id,
        expected_code=applied_code,
    )
