"""The project's exception tree.

    WrapupBatchError                 base; `str()` is a message for a person, never a secret
    ├── UsageError                   bad flags, job file or configuration      → exit 2
    │   └── OptionError              one option's value is wrong (names it)    → exit 2
    ├── InputError                   the input file or query cannot be read    → exit 2
    ├── LedgerError                  the ledger cannot be opened or used       → exit 2
    │   ├── LedgerBusyError          another live run holds the ledger         → exit 5
    │   └── LedgerOrgError           the ledger records another org's work     → exit 2
    ├── UnreachableError             no token: Genesys Cloud not reached        → exit 7
    └── ApiError                     a Genesys Cloud API call failed
        ├── AuthError                the token cannot be had (401/403 on it)   → exit 3
        ├── RefusedWritesError       the org refuses every wrap-up (breaker)   → exit 3
        ├── TransientApiError        5xx, 429, timeout, connection: retriable
        │   └── RateLimitedError     429, carries `retry_after` seconds
        └── RequestRejectedError     any other 4xx for one request: a per-row outcome

Every ApiError carries `status` (0 for no response), Genesys's error `code`, `message`
and `context_id` when the response had a Genesys error body.
"""

from __future__ import annotations


class WrapupBatchError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class UsageError(WrapupBatchError):
    exit_code = 2


class OptionError(UsageError):
    """One option's value cannot be used: `option` names it (`--max-runtime`), `detail` says
    why. The command line shows it as click shows a bad parameter."""

    def __init__(self, option: str, detail: str) -> None:
        super().__init__(f"invalid value for {option}: {detail}")
        self.option = option
        self.detail = detail


class InputError(WrapupBatchError):
    exit_code = 2


class LedgerError(WrapupBatchError):
    exit_code = 2


class LedgerBusyError(LedgerError):
    exit_code = 5


class LedgerOrgError(LedgerError):
    """The ledger belongs to another org than the one this run reaches (nothing was sent)."""


class UnreachableError(WrapupBatchError):
    """The API could not be reached for a token before any work (network, proxy, region, or
    the service down): not a credentials problem."""

    exit_code = 7


class ApiError(WrapupBatchError):
    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str | None = None,
        context_id: str | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.context_id = context_id
        self.method = method
        self.path = path


class AuthError(ApiError):
    exit_code = 3


class RefusedWritesError(ApiError):
    """The first wrap-up POSTs of a run were all refused alike: the org refuses them all."""

    exit_code = 3


class TransientApiError(ApiError):
    pass


class RateLimitedError(TransientApiError):
    def __init__(self, message: str, *, retry_after: float, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class RequestRejectedError(ApiError):
    pass
