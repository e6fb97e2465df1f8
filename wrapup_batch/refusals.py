"""The refusal breaker: stop a run early when the org refuses every wrap-up it is sent.

Nobody has confirmed that an OAuth client with client credentials may set a wrap-up on an
ended conversation (shared/reference/genesys-api.md). An org that refuses them all would
otherwise answer thousands of POSTs with the same 4xx, each recorded `rejected`, spending the
whole rate budget. So when the first `limit` wrap-up POSTs of a run are all refused with the
same HTTP status and Genesys error code, and none was accepted, the run stops: exit 3, one
message quoting what Genesys answered and what to try, and the rows not tried stay pending
for a rerun. One accepted POST, or one refusal with another code, disarms it for the run
(the refusals are then about those rows, not the org). POSTs that got no answer, a 5xx or a
429 count neither way. `limit` 0 switches it off.
"""

from __future__ import annotations

import threading

from wrapup_batch.api_settings import ENV_ACCESS_TOKEN, PERMISSIONS
from wrapup_batch.errors import ApiError, RefusedWritesError

#: How many refused first POSTs stop a run (`--stop-after-refusals`).
DEFAULT_STOP_AFTER_REFUSALS = 10


class RefusalBreaker:
    """Counts the outcomes of a run's first wrap-up POSTs; shared by the workers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._armed = limit > 0
        self._kind: tuple[int, str | None] | None = None
        self._refused = 0

    def accepted(self) -> None:
        """A wrap-up POST was accepted: the org takes them, the breaker is off for the run."""
        if self._armed:
            with self._lock:
                self._armed = False

    def refused(self, err: ApiError) -> RefusedWritesError | None:
        """A wrap-up POST was refused (a 4xx): the error that stops the run, once, when the
        first `limit` POSTs have all been refused alike; otherwise None."""
        if not self._armed:
            return None
        with self._lock:
            if not self._armed:
                return None
            kind = (err.status, err.code)
            if self._kind is None:
                self._kind = kind
            elif kind != self._kind:
                self._armed = False
                return None
            self._refused += 1
            if self._refused < self.limit:
                return None
            self._armed = False
        return RefusedWritesError(
            refusal_message(self.limit, err),
            status=err.status,
            code=err.code,
            context_id=err.context_id,
            method=err.method,
            path=err.path,
        )


def refusal_message(limit: int, err: ApiError) -> str:
    """What Genesys answered, that no more was sent, and what to try."""
    first = (
        "the first wrap-up POST was refused"
        if limit == 1
        else f"the first {limit} wrap-up POSTs were all refused alike"
    )
    return (
        f"{first} and none was accepted: Genesys answered {err.status} "
        f'{err.code or "(no error code)"}: "{err.message}" (contextId '
        f"{err.context_id or 'none given'}). No more wrap-ups were sent; the rows not tried "
        "stay pending and a rerun resumes them. What to try: check that the OAuth client's "
        f"role has {PERMISSIONS['wrapup']} in the divisions of these conversations; run as a "
        f"user instead: set {ENV_ACCESS_TOKEN} to a token from a user's own login (Genesys "
        "may let only a user set a wrap-up); if neither helps, open a Genesys Cloud support "
        "case quoting the contextId. (--stop-after-refusals 0 sends every row regardless.)"
    )
