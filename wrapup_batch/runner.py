"""The pipeline: ingest → resolve codes → look up → plan → apply → record.

`run_batch` wires the stages together and never prints: it reports through a progress
callback and returns a `RunResult`. Threads:

- the caller's thread ingests the input, resolves codes, then claims items (a batch at a
  time, `ledger.claims`) and feeds them to the workers, a bounded number at a time, in input
  order;
- `concurrency` workers look up, plan and apply one item each, sharing one throttle;
- one recorder thread owns every ledger write during the work: it commits outcomes in batches
  and, for an item about to be POSTed, commits its `in_flight` mark before the worker may send.

After a crash an `in_flight` item is looked up again: a communication that already carries the
requested code was written by the interrupted run, so it is recorded `applied`, not resent.

Several processes may work on one run: `run_batch` starts it, and `join_run` (`wrapup-batch
work --run N`, on any host that reaches the ledger) adds a worker with its own OAuth client.
Each claims the items it works on, so no item is worked twice, and each waits at the end for
the claims the others still hold (taking them over if their worker dies). Every process on
one OAuth client paces itself from that client's shared budget in the ledger (`throttle`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from wrapup_batch.api_settings import ApiSettings, is_permission_error
from wrapup_batch.codes import CodeCatalog
from wrapup_batch.errors import (
    ApiError,
    AuthError,
    LedgerError,
    LedgerOrgError,
    RequestRejectedError,
    TransientApiError,
    UnreachableError,
    WrapupBatchError,
)
from wrapup_batch.ledger import (
    DECIDED_BEFORE_WORK,
    DEFAULT_LEASE_SECONDS,
    DONE,
    ItemUpdate,
    Ledger,
    ResolvedCode,
    StartedBy,
    WorkItem,
    now_iso,
)
from wrapup_batch.models import FINE, UNFINISHED, InputRow, Status
from wrapup_batch.org import META_KEYS as ORG_META_KEYS
from wrapup_batch.org import OrgIdentity, identify, refuse_other_org, same_target
from wrapup_batch.planner import (
    ConversationView,
    OnExisting,
    ParticipantMode,
    Plan,
    Target,
    format_time,
    plan,
)
from wrapup_batch.planner import conversation_from_analytics as parse_analytics
from wrapup_batch.planner import conversation_from_json as parse_conversation
from wrapup_batch.refusals import DEFAULT_STOP_AFTER_REFUSALS, RefusalBreaker
from wrapup_batch.revert import check_revertible, revert_rows
from wrapup_batch.sources import SourceSpec, describe_source, read_rows
from wrapup_batch.throttle import Throttle, ThrottleStopped, WriteNotSent

if TYPE_CHECKING:  # built by the caller's ClientFactory: this module never imports the SDK
    from wrapup_batch.genesys import GenesysClient

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_FINE = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_STOPPED = 4
EXIT_BUSY = 5  # an older wrapup-batch's run holds the ledger lock (LedgerBusyError)
EXIT_INTERNAL = 6  # an unexpected error: a bug; the log has the details, a rerun resumes
EXIT_UNREACHABLE = 7  # no token: the API could not be reached before any work (UnreachableError)


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    on_existing: OnExisting = "skip"
    participant: ParticipantMode = "last-agent"
    rate_limit: float = 300.0
    concurrency: int = 4
    max_runtime: float | None = None
    request_timeout: float = 30.0
    lookup: LookupMode = "conversations"
    lookup_batch: int = 100
    #: `--lookup analytics`: only a conversation that ended at least this long ago is read from
    #: analytics; a younger one through the Conversations API (see `_lookups`).
    analytics_settle: float = 3600.0
    #: Stop when the first N wrap-up POSTs are all refused alike (0: never; `refusals.py`).
    stop_after_refusals: int = DEFAULT_STOP_AFTER_REFUSALS
    #: Only the first N rows of the input (None: all of them).
    limit: int | None = None
    lease_seconds: float = DEFAULT_LEASE_SECONDS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    """What the progress callback hears. `phase`: ingest, resolve, apply, done."""

    phase: str
    done: int = 0
    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    run_id: int = 0  # the ledger's id of the run (0 before the run is recorded)


ProgressCallback = Callable[[Progress], None]
LookupMode = Literal["conversations", "analytics"]
#: What a worker joining a run takes from the run's options (the rest is its own).
SHARED_OPTIONS = ("dry_run", "on_existing", "participant", "lookup", "lookup_batch")
#: How often a worker looks again for work another worker of its run still holds (seconds).
WAIT_POLL_SECONDS = 1.0
#: How often a worker looks for claims whose worker died, to take them over (seconds).
TAKEOVER_CHECK_SECONDS = 1.0
#: After a stop signal, how long requests waiting on the throttle may go on before they are
#: abandoned (their items stay pending or in_flight and the next run settles them).
STOP_GRACE_SECONDS = 10.0
ClientFactory = Callable[[Throttle], "GenesysClient"]


@dataclass
class RunResult:
    run_id: int
    exit_code: int
    counts: dict[str, int]
    rows: int
    message: str
    summary: dict[str, Any]


class RunAborted(Exception):
    """The whole run must stop: credentials or a permission are missing."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


class WorkerHooks(TypedDict, total=False):
    """How a caller follows and steers a run it starts or joins: `progress` hears each step,
    `stop` set asks it to stop taking new rows (those in flight finish), `api` is the settings
    the client factory uses (a ledger that already records the same API host and OAuth client
    then skips asking Genesys which org it reaches)."""

    progress: ProgressCallback | None
    stop: threading.Event | None
    api: ApiSettings | None


class RunHooks(WorkerHooks, total=False):
    """WorkerHooks, and `started_by`, recorded with a new run (default: this process's OS
    account)."""

    started_by: StartedBy | None


@dataclass(frozen=True)
class _Input:
    """Where a run's rows come from: a source for `run`, the ledger for `revert`."""

    kind: str
    description: str
    rows: Callable[[], Iterable[list[InputRow]]]
    started_by: StartedBy | None = None


def run_batch(
    ledger: Ledger,
    source: SourceSpec,
    options: RunOptions,
    client_factory: ClientFactory,
    **hooks: Unpack[RunHooks],
) -> RunResult:
    """Run one batch on a ledger the caller opened; other runs may share it (`RunHooks`:
    progress, stop, api, started_by)."""
    limit = options.limit
    description = describe_source(source) + (f", first {limit} row(s)" if limit else "")
    given = _Input(
        "run", description, lambda: _first_rows(read_rows(source), limit), hooks.get("started_by")
    )
    return _new_run(ledger, given, options, client_factory, hooks).execute()


def revert_batch(
    ledger: Ledger,
    run_id: int,
    options: RunOptions,
    client_factory: ClientFactory,
    **hooks: Unpack[RunHooks],
) -> RunResult:
    """Put back the previous codes a run replaced, as a new run of kind `revert`."""
    options = replace(options, on_existing="replace", participant="all-agents", limit=None)
    given = _Input(
        "revert",
        f"revert of run {run_id}",
        lambda: revert_rows(ledger, run_id),
        hooks.get("started_by"),
    )
    check_revertible(ledger, run_id)
    return _new_run(ledger, given, options, client_factory, hooks).execute()


def _first_rows(chunks: Iterable[list[InputRow]], limit: int | None) -> Iterator[list[InputRow]]:
    """The chunks of the input up to its first `limit` rows (all of them for None); the
    source is closed there, so the rest of the file or query is never read."""
    if limit is None:
        yield from chunks
        return
    left = limit
    try:
        for chunk in chunks:
            if len(chunk) >= left:
                yield chunk[:left]
                return
            yield chunk
            left -= len(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def join_run(
    ledger: Ledger,
    run_id: int,
    options: RunOptions,
    client_factory: ClientFactory,
    **hooks: Unpack[WorkerHooks],
) -> RunResult:
    """Work on run `run_id` beside its own process (and any other worker) until none of its
    items is left to do. What to do with each row (`SHARED_OPTIONS`) comes from the run;
    concurrency, rate limit, deadline and lease are this worker's own."""
    info = ledger.get_run(run_id)
    if info is None:
        raise LedgerError(f"ledger {ledger.display} has no run {run_id}; see `wrapup-batch status`")
    shared = {k: info.options[k] for k in SHARED_OPTIONS if k in info.options}
    options = replace(options, **shared)
    given = _Input(info.kind, info.source, lambda: iter(()))
    return _new_run(ledger, given, options, client_factory, hooks).join(run_id)


def _new_run(
    ledger: Ledger,
    given: _Input,
    options: RunOptions,
    client_factory: ClientFactory,
    hooks: WorkerHooks,
) -> _Run:
    """A run (or a worker of one) on a ledger no older wrapup-batch holds whole."""
    ledger.check_legacy_lock()
    stop = hooks.get("stop") or threading.Event()
    return _Run(
        ledger, given, options, client_factory, hooks.get("progress"), stop, hooks.get("api")
    )


class _Run:
    def __init__(
        self,
        ledger: Ledger,
        given: _Input,
        options: RunOptions,
        client_factory: ClientFactory,
        progress: ProgressCallback | None,
        stop: threading.Event,
        api: ApiSettings | None = None,
    ) -> None:
        self.ledger = ledger
        self.given = given
        self.options = options
        self.client_factory = client_factory
        report = progress or (lambda _p: None)

        def stamped(p: Progress) -> None:
            p.run_id = self.run_id
            report(p)

        self.progress = stamped
        self.stop = stop
        self.started = time.monotonic()
        self.deadline = (
            self.started + options.max_runtime if options.max_runtime is not None else None
        )
        self.done_statuses: tuple[str, ...] = DONE + (
            (Status.SKIPPED.value,) if options.on_existing == "skip" else ()
        )
        self.run_id = 0
        self.rows = 0
        self.abort: ApiError | None = None
        self.throttle = Throttle(options.rate_limit)
        self.apply_started = 0.0
        self.apply_finished = 0.0
        self.client: GenesysClient | None = None
        self.api = api  # where and as whom the client factory connects (see `_check_org`)
        self.authenticated = False
        self.breaker = RefusalBreaker(options.stop_after_refusals)
        self.applied_here = 0  # rows this run applied (not those applied by earlier runs)
        self.worker_id = 0
        self.role = "run"
        self.held = 0

    # -- the stages -----------------------------------------------------------------------

    def execute(self) -> RunResult:
        self.run_id = self.ledger.start_run(
            source=self.given.description,
            options=self.options.as_dict(),
            dry_run=self.options.dry_run,
            kind=self.given.kind,
            started_by=self.given.started_by,
        )
        try:
            self._ingest()
            requested = self.ledger.requested_codes(self.run_id, self.done_statuses)
            self._check_org(bool(requested))
            if requested:  # otherwise every row is decided already: no request at all
                client = self._client()
                catalog = self._prepare(client, requested)
                self._log_decided()
                self.ledger.mark_work_ready(self.run_id)
                self._work(client, catalog)
            else:
                self._log_decided()
        except AuthError as err:
            self.abort = err
        except RunAborted as aborted:
            self.abort = aborted.error
        except LedgerOrgError:
            self.ledger.discard_run(self.run_id)  # nothing was sent: as if it never started
            raise
        except WrapupBatchError as err:
            self._finish(err.exit_code, f"stopped: {err}")
            raise
        except KeyboardInterrupt:
            self._finish(EXIT_STOPPED, "interrupted; a rerun settles the items left in flight")
            raise
        except BaseException as exc:
            self._finish(EXIT_INTERNAL, f"stopped by an unexpected {type(exc).__name__}")
            raise
        return self._conclude()

    def join(self, run_id: int) -> RunResult:
        """Work on a run another process started (see `join_run`)."""
        self.run_id = run_id
        self.role = "work"
        try:
            if self._wait_until_ready():
                self.rows = self.ledger.run_row_count(run_id)
                self._check_org(True)  # a worker on another org's client stops here
                client = self._client()
                catalog = self._catalog(client)
                self._work(client, catalog)
        except AuthError as err:
            self.abort = err
        except RunAborted as aborted:
            self.abort = aborted.error
        except KeyboardInterrupt:
            return self._worker_result(
                EXIT_STOPPED, "interrupted; the run's other workers or a rerun settle the rest"
            )
        return self._conclude()

    def _wait_until_ready(self) -> bool:
        """Wait until the run's process has resolved its codes; False when there is nothing
        to join (the run has finished) or the worker is told to stop first."""
        while True:
            info = self.ledger.run_state(self.run_id)
            if info.finished:
                return False
            if info.work_ready:
                return True
            if self.stop.wait(WAIT_POLL_SECONDS) or self._should_stop():
                return False

    def _ingest(self) -> None:
        self.progress(Progress("ingest"))
        for chunk in self.given.rows():
            self.ledger.ingest(self.run_id, chunk)
            self.rows += len(chunk)
            self.progress(Progress("ingest", done=self.rows))
        self.ledger.mark_duplicates(self.run_id)

    def _client(self) -> GenesysClient:
        """The run's client, made and authenticated once."""
        if self.client is None:
            self.client = self.client_factory(self.throttle)
            # every process on this OAuth client paces itself from one budget in the ledger
            self.throttle.budget = self.ledger.budget(_budget_key(self.client))
        if not self.authenticated:
            self.client.authenticate()
            self.authenticated = True
        return self.client

    def _check_org(self, requested: bool) -> None:
        """Make sure the ledger belongs to the org this run reaches (see `org.py`).

        The first run that reaches an org records it in the ledger; a run that reaches another
        one raises LedgerOrgError. A run through the host and OAuth client the ledger records
        asks nothing (so a rerun with nothing left to do sends no request at all), nor does a
        first run with nothing to send (an input without rows): its ledger claims nothing yet.
        """
        recorded = OrgIdentity.from_meta(self.ledger.read_meta(ORG_META_KEYS))
        if recorded is not None and self.api is not None and same_target(recorded, self.api):
            return
        earlier = len(self.ledger.list_runs()) - 1
        if recorded is None and not requested and earlier == 0:
            return
        try:
            found = identify(self._client(), now_iso())
        except TransientApiError as err:
            if not err.status and self.api is not None:  # no connection: before any work
                raise UnreachableError(
                    f"could not reach {self.api.host} ({err}); check the network, a proxy "
                    "(HTTPS_PROXY), and the region (GENESYSCLOUD_REGION or "
                    "GENESYSCLOUD_API_HOST); nothing was sent"
                ) from None
            raise RunAborted(err) from None
        if recorded is None:
            if earlier > 0:
                log.warning(
                    "ledger %s had no org recorded (its %d earlier run(s) were made by an "
                    "older wrapup-batch): it now belongs to %s; if those runs wrote to another "
                    "org (or the sandbox), stop and use another --ledger for this one",
                    self.ledger.display,
                    earlier,
                    found.describe(),
                )
            self.ledger.write_meta(found.to_meta())
            log.info(
                "ledger %s now belongs to %s %s",
                self.ledger.display,
                found.describe(),
                found.reached(),
            )
        elif recorded.org_id != found.org_id:
            raise refuse_other_org(self.ledger.display, recorded, found)

    def _log_decided(self) -> None:
        """One log record per row decided before the work (invalid, duplicate, unknown or
        ambiguous code, conflict), with the fields of the work's own records."""
        if not log.isEnabledFor(logging.INFO):
            return
        for page in self.ledger.iter_results(self.run_id, statuses=_DECIDED_ROWS):
            for row in page:
                log_outcome(
                    self.run_id,
                    row.row,
                    row.conversation_id,
                    row.status,
                    row.message,
                    http_status=row.http_status,
                    error_code=row.error_code,
                    context_id=row.context_id,
                )

    def _prepare(self, client: GenesysClient, requested: list[str]) -> CodeCatalog:
        self.progress(Progress("resolve", total=self.rows))
        catalog = self._catalog(client)
        resolved = []
        for value in requested:  # in memory; then written in one pass
            resolution = catalog.resolve(value)
            code = resolution.code
            resolved.append(
                ResolvedCode(
                    value,
                    code.id if code else None,
                    code.name if code else None,
                    resolution.status,
                    resolution.message,
                )
            )
        self.ledger.apply_resolutions(self.run_id, self.done_statuses, resolved)
        self.ledger.mark_conflicts(self.run_id, self.done_statuses)
        return catalog

    def _catalog(self, client: GenesysClient) -> CodeCatalog:
        try:
            catalog = CodeCatalog(client.list_wrapup_codes())
        except RequestRejectedError as err:
            if err.status == 403:
                raise AuthError(
                    "the OAuth client may not read wrap-up codes (403: "
                    f"{err.message}); give its role the permission routing:wrapupCode:view",
                    status=403,
                    code=err.code,
                    context_id=err.context_id,
                ) from None
            raise RunAborted(err) from None
        except TransientApiError as err:
            raise RunAborted(err) from None
        return catalog

    def _work(self, client: GenesysClient, catalog: CodeCatalog) -> None:
        total = self.ledger.count_work(self.run_id, self.done_statuses)
        self.apply_started = time.monotonic()
        self.worker_id = self.ledger.register_worker(
            self.run_id,
            role=self.role,
            client_id=_budget_key(client),
            lease_seconds=self.options.lease_seconds,
        )
        recorder = _Recorder(
            self.ledger,
            self.run_id,
            total,
            self.progress,
            self.stop,
            worker_id=self.worker_id,
            lease_seconds=self.options.lease_seconds,
        )
        self.recorder = recorder
        recorder.start()
        finished = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(finished,), name="wrapup-watchdog", daemon=True
        )
        watchdog.start()
        worker = _Worker(client, catalog, self.options, recorder, self)
        window = threading.BoundedSemaphore(self.options.concurrency * 2)
        try:
            with ThreadPoolExecutor(
                max_workers=self.options.concurrency, thread_name_prefix="wrapup-worker"
            ) as pool:
                for item, view in self._lookups(client):
                    if not self._acquire_slot(window):
                        break
                    future = pool.submit(worker.process, item, view)
                    future.add_done_callback(lambda f: self._settle(f, window, recorder))
        finally:
            finished.set()
            self.apply_finished = time.monotonic()
            recorder.close()
            self.applied_here = recorder.counts[Status.APPLIED.value]
            self.ledger.finish_worker(self.worker_id)
        if recorder.error is not None:
            raise recorder.error

    def _items(self) -> Iterator[WorkItem]:
        """`_claimed` an item at a time; between items, at most every second, claims whose
        worker died are looked for, and taken over at once (ahead of the rest of the batch)."""
        checked = time.monotonic()
        for batch in self._claimed():
            for item in batch:
                yield item
                if time.monotonic() - checked > TAKEOVER_CHECK_SECONDS:
                    checked = time.monotonic()
                    if self.ledger.expired_claims(self.run_id):
                        taken = self.ledger.claim(
                            self.run_id,
                            self.worker_id,
                            self.done_statuses,
                            after_row=0,
                            limit=self._batch_size(),
                            lease_seconds=self.options.lease_seconds,
                        )
                        self.held += taken.held
                        self.recorder.hold(taken.items)
                        yield from taken.items

    def _batch_size(self) -> int:
        """Rows claimed at once: enough to keep the workers busy (twice the requests in
        flight) and about two seconds of work at the rate limit, at most 64 (a lookup batch
        with `--lookup analytics`)."""
        if self.options.lookup == "analytics":
            return self.options.lookup_batch
        two_seconds = int(self.options.rate_limit / 60 * 2 / 2)  # two requests a row
        return max(self.options.concurrency * 2, min(64, two_seconds))

    def _claimed(self) -> Iterator[list[WorkItem]]:
        """The run's items this worker claims, a batch at a time, in input order (a batch
        is yielded whole: the wait below needs every item claimed before it on its way).

        A pass walks the run's rows from the start; rows other workers of the run hold are
        skipped. When a pass from the start finds nothing, the worker is done unless other
        workers of the run still hold claims: then it waits, and looks again. Every couple of
        seconds it also looks for claims whose worker died (a lease passed, or a process of
        this host gone), and then starts a pass from the start again to take them over.
        """
        size = self._batch_size()
        after = 0
        checked = time.monotonic()
        while not self._should_stop():
            if after and time.monotonic() - checked > TAKEOVER_CHECK_SECONDS:
                checked = time.monotonic()
                if self.ledger.expired_claims(self.run_id):
                    after = 0  # a worker died: its rows, behind the cursor, are taken over now
            claimed = self.ledger.claim(
                self.run_id,
                self.worker_id,
                self.done_statuses,
                after_row=after,
                limit=size,
                lease_seconds=self.options.lease_seconds,
            )
            self.held += claimed.held
            if claimed.last_row == 0:  # nothing past the cursor
                if after == 0:  # nor from the start: done, unless claims are still held
                    if self.recorder.holding():  # ours, on their way: they may free rows
                        self.stop.wait(0.2)  # of the same conversation
                    elif self.ledger.others_claims(self.run_id, self.worker_id):
                        self.stop.wait(WAIT_POLL_SECONDS)
                    else:
                        return
                after = 0
                continue
            after = claimed.last_row
            if claimed.items:
                self.recorder.hold(claimed.items)
                yield claimed.items

    def _lookups(self, client: GenesysClient) -> Iterator[tuple[WorkItem, ConversationView | None]]:
        """Items with their conversation when the analytics multi-get already read it.

        `--lookup analytics` reads `lookup_batch` conversations per request. It is UNCONFIRMED
        that analytics and the Conversations API agree (`check --lookup-compare` verifies it on
        an org), and analytics data lags: a wrap-up an agent set a minute ago may not be there
        yet, and "no wrap-up" would then overwrite it. So an item falls back to its own GET
        when analytics does not know the conversation, does not show it ended, shows it ended
        less than `analytics_settle` ago (UNCONFIRMED how long analytics takes: the default,
        an hour, is a guess on the safe side of the minutes Genesys usually takes), shows a
        session it cannot map to a wrap-up media or after-call work still open, or when the
        item was in flight (whether its POST landed must be read from the Conversations API).
        """
        if self.options.lookup != "analytics":
            for item in self._items():
                yield item, None
            return
        for batch in self._claimed():  # at most `lookup_batch` items each
            wanted = sorted(
                {i.conversation_id for i in batch if i.status != Status.IN_FLIGHT.value}
            )
            found = self._analytics(client, wanted) if wanted else {}
            settled_before = datetime.now(UTC) - timedelta(seconds=self.options.analytics_settle)
            for item in batch:
                view = found.get(item.conversation_id)
                usable = (
                    view is not None
                    and view.ended
                    and not view.incomplete
                    and view.end_time is not None
                    and view.end_time <= settled_before
                    and item.status != Status.IN_FLIGHT.value
                )
                yield item, view if usable else None

    def _analytics(self, client: GenesysClient, ids: list[str]) -> dict[str, ConversationView]:
        try:
            conversations = client.get_conversation_details(ids)
        except TransientApiError as err:
            log.warning("analytics lookup failed (%s); reading these conversations one by one", err)
            return {}
        except RequestRejectedError as err:
            if err.status == 403:
                raise RunAborted(
                    AuthError(
                        f"{err}; give the OAuth client's role the permission "
                        "analytics:conversationDetail:view, or use --lookup conversations",
                        status=403,
                        code=err.code,
                        context_id=err.context_id,
                    )
                ) from None
            log.warning("analytics lookup refused (%s); reading one by one", err)
            return {}
        views = (parse_analytics(c) for c in conversations)
        return {view.id: view for view in views if view.id}

    def _watch(self, finished: threading.Event) -> None:
        """Stop taking items at the last start time (or on a signal); abandon waits after that.

        Requests still waiting on the throttle when the deadline (or a grace period after a
        signal) comes are abandoned: their items stay pending or in_flight for the next run.
        """
        while not finished.wait(0.05):
            if self._should_stop():
                break
        else:
            return
        give_up = (
            self.deadline - 1.0
            if self.deadline is not None and time.monotonic() < self.deadline
            else time.monotonic() + STOP_GRACE_SECONDS
        )
        if not finished.wait(max(0.0, give_up - time.monotonic())):
            self.throttle.stop()

    def _acquire_slot(self, window: threading.BoundedSemaphore) -> bool:
        while not window.acquire(timeout=0.2):
            if self._should_stop():
                return False
        if self._should_stop():
            window.release()
            return False
        return True

    def _settle(
        self, future: Future[None], window: threading.BoundedSemaphore, recorder: _Recorder
    ) -> None:
        window.release()
        exc = future.exception()
        if isinstance(exc, RunAborted | AuthError):
            self.abort = exc.error if isinstance(exc, RunAborted) else exc
            self.stop.set()
        elif exc is not None:
            log.error("a worker failed unexpectedly: %s", exc, exc_info=exc)
            recorder.error = exc
            self.stop.set()

    def refused(self, err: RequestRejectedError) -> None:
        """A wrap-up POST was refused: stop the run when the breaker says the org refuses all."""
        tripped = self.breaker.refused(err)
        if tripped is not None:  # the end-of-run message says it: once, not also as a warning
            log.info("stopping: %s", tripped)
            self.abort = tripped
            self.stop.set()

    def _should_stop(self) -> bool:
        if self.stop.is_set():
            return True
        if self.deadline is not None and time.monotonic() >= self._last_start():
            self.stop.set()
            return True
        return False

    def _last_start(self) -> float:
        """The last moment to start an item and still finish it before the deadline."""
        assert self.deadline is not None
        margin = min(self.options.request_timeout, (self.options.max_runtime or 0) * 0.1)
        return self.deadline - margin

    # -- the end ----------------------------------------------------------------------------

    def _conclude(self) -> RunResult:
        # the outcomes first, then the counts read from them: a row another run was changing
        # is counted as the report keeps it, even if that run finishes it in between
        self.ledger.snapshot_outcomes(self.run_id)
        counts = self.ledger.status_counts(self.run_id)
        unfinished = sum(n for status, n in counts.items() if status in UNFINISHED)
        not_fine = sum(n for status, n in counts.items() if Status(status) not in FINE)
        if self.abort is not None:
            code, message = EXIT_ABORTED, f"aborted: {self.abort}"
        elif unfinished:
            code = EXIT_STOPPED
            message = f"stopped early with {unfinished} row(s) still to do; run again to resume"
            if self.held:
                message += (
                    f" ({self.held} left because another run was changing their conversations)"
                )
        elif not_fine:
            code, message = EXIT_NOT_FINE, f"finished; {not_fine} row(s) need attention"
        elif self.rows == 0:
            code, message = EXIT_OK, "the input has no rows"
        else:
            code, message = EXIT_OK, "finished; every row is fine"
        return self._finish(code, message, counts)

    def _worker_result(self, code: int, message: str) -> RunResult:
        counts = self.ledger.status_counts(self.run_id)
        summary = self._summary(counts, code, message)
        return RunResult(self.run_id, code, counts, self.rows, message, summary)

    def _finish(self, code: int, message: str, counts: dict[str, int] | None = None) -> RunResult:
        """End the run; `counts` given: read after `snapshot_outcomes` (see `_conclude`)."""
        if counts is None:
            self.ledger.snapshot_outcomes(self.run_id)
            counts = self.ledger.status_counts(self.run_id)
        summary = self._summary(counts, code, message)
        if self.role == "run":  # a worker that joined leaves the run's record to its process
            self.ledger.finish_run(self.run_id, counts=counts, summary=summary, exit_code=code)
        self.progress(Progress("done", done=self.rows, total=self.rows, counts=counts))
        return RunResult(self.run_id, code, counts, self.rows, message, summary)

    def _summary(self, counts: dict[str, int], code: int, message: str) -> dict[str, Any]:
        stats = self.throttle.stats()
        apply_seconds = max(0.0, (self.apply_finished or time.monotonic()) - self.apply_started)
        applied_rate = (
            round(self.applied_here * 60.0 / apply_seconds, 1)
            if self.apply_started and apply_seconds > 0
            else 0.0
        )
        return {
            "run_id": self.run_id,
            "worker": self.role,
            "held_by_other_runs": self.held,
            "exit_code": code,
            "message": message,
            "dry_run": self.options.dry_run,
            "rows": self.rows,
            "counts": counts,
            "requests": stats.requests,
            "wrapup_posts": self.client.writes_sent if self.client else 0,
            "throttled_429": stats.throttled,
            "retry_after_wait_seconds": stats.retry_after_wait_seconds,
            "rate_limit_per_minute": stats.limit_per_minute,
            "requests_per_minute": stats.requests_per_minute,
            "applied_this_run": self.applied_here,
            "applied_per_minute": applied_rate,
            "elapsed_seconds": round(time.monotonic() - self.started, 3),
            "aborted": str(self.abort) if self.abort else None,
        }


# -- one item -----------------------------------------------------------------------------------


class _Worker:
    def __init__(
        self,
        client: GenesysClient,
        catalog: CodeCatalog,
        options: RunOptions,
        recorder: _Recorder,
        run: _Run,
    ) -> None:
        self.client = client
        self.catalog = catalog
        self.options = options
        self.recorder = recorder
        self.run = run

    def process(self, item: WorkItem, view: ConversationView | None) -> None:
        update = None
        try:
            if not self.run.stop.is_set():
                update = self._process(item, view)
        except ThrottleStopped:
            pass
        finally:
            if update is None:  # nothing to record: the claim is not waited for
                self.recorder.forget(item)
        if update is not None:
            self.recorder.submit(update, item)

    def _process(self, item: WorkItem, view: ConversationView | None) -> ItemUpdate | None:
        if view is None:
            try:
                view = parse_conversation(self.client.get_conversation(item.conversation_id))
            except ApiError as err:
                return self._failure(item, err, looking_up=True)
        the_plan = plan(
            view,
            code_id=item.code_id,
            agent_id=item.agent_id,
            participant=self.options.participant,
            on_existing=self.options.on_existing,
            name_of=self.catalog.name_of,
            communication_id=item.communication_id,
            expected_code=item.expected_code,
        )
        if the_plan.status is not None:
            return self._decided(item, the_plan)
        if self.options.dry_run:
            names = self.catalog.name_of(item.code_id)
            count = len(the_plan.to_apply)
            return self._update(
                item,
                the_plan,
                Status.WOULD_APPLY,
                f"would apply {names!r} to {count} communication(s)",
            )
        if self.run.stop.is_set():
            return None  # stopping: nothing was written, the item stays as it was
        if not self.recorder.mark_in_flight(self._update(item, the_plan, Status.IN_FLIGHT, "")):
            return None
        for index, target in enumerate(the_plan.to_apply):
            try:
                self.client.post_wrapup(
                    target.media,
                    item.conversation_id,
                    target.participant_id,
                    target.communication_id,
                    code_id=item.code_id,
                    notes=item.notes,
                    end_time=format_time(target.end_time) if target.end_time else None,
                )
            except ApiError as err:
                failure = self._failure(item, err, looking_up=False, the_plan=the_plan)
                if isinstance(err, RequestRejectedError):
                    self.run.refused(err)
                return failure
            except WriteNotSent:
                if index > 0:
                    raise  # another communication of it was written: in_flight, read back later
                # The deadline (or a stop) came while its POST waited for its turn: nothing was
                # sent, so the row is not left in flight but pending again.
                restored = self._update(
                    item, the_plan, Status.PENDING, "stopped before its wrap-up was sent"
                )
                return replace(restored, attempts=-1)  # undo the in_flight mark's attempt
            self.run.breaker.accepted()
        return self._update(item, the_plan, Status.APPLIED, "", http_status=202)

    def _decided(self, item: WorkItem, the_plan: Plan) -> ItemUpdate:
        assert the_plan.status is not None
        status, message = the_plan.status, the_plan.message
        if status == Status.UNCHANGED and _may_have_landed(item):
            # the earlier attempt's wrap-up is there: its endTime is the one that was sent
            landed = replace(
                the_plan, targets=tuple(replace(t, action="apply") for t in the_plan.targets)
            )
            message = "confirmed by reading it back: an earlier attempt had landed"
            return self._update(item, landed, Status.APPLIED, message)
        return self._update(item, the_plan, status, message)

    def _update(
        self,
        item: WorkItem,
        the_plan: Plan,
        status: Status,
        message: str,
        *,
        http_status: int | None = None,
    ) -> ItemUpdate:
        targets = the_plan.targets
        recovering = _may_have_landed(item) and item.previous_code is not None
        previous = item.previous_code if recovering else _join(t.previous_code for t in targets)
        previous_names = (
            item.previous_code_name
            if recovering
            else _join(self.catalog.name_of(t.previous_code) for t in targets)
        )
        return ItemUpdate(
            item_id=item.item_id,
            status=status.value,
            message=message,
            participant_id=_join(t.participant_id for t in targets),
            communication_id=_join(t.communication_id for t in targets),
            media=_join(t.media for t in targets),
            previous_code=previous,
            previous_code_name=previous_names,
            http_status=http_status,
            attempts=1 if status in (Status.APPLIED, Status.IN_FLIGHT) else 0,
            wrapup_end_time=_end_times(targets),
        )

    def _failure(
        self,
        item: WorkItem,
        err: ApiError,
        *,
        looking_up: bool,
        the_plan: Plan | None = None,
    ) -> ItemUpdate:
        if isinstance(err, AuthError) or is_permission_error(err):
            raise RunAborted(_permission_hint(err, looking_up))
        status = _status_for(err, looking_up)
        if the_plan is not None:
            base = self._update(item, the_plan, status, err.message)
            fields = asdict(base)
        else:
            fields = {"item_id": item.item_id, "status": status.value}
            fields["previous_code"] = item.previous_code
            fields["previous_code_name"] = item.previous_code_name
        fields.update(
            status=status.value,
            message=err.message if isinstance(err, RequestRejectedError) else str(err),
            http_status=err.status or None,
            error_code=err.code,
            context_id=err.context_id,
        )
        return ItemUpdate(**fields)


#: Row statuses decided before the work: logged together once the codes are resolved.
_DECIDED_ROWS = (Status.INVALID.value, Status.DUPLICATE.value, *DECIDED_BEFORE_WORK)


def log_outcome(
    run_id: int,
    row: int | None,
    conversation_id: str | None,
    status: str,
    message: str,
    *,
    http_status: int | None = None,
    error_code: str | None = None,
    context_id: str | None = None,
) -> None:
    """The log record of one row's outcome: the same message and fields for every status."""
    log.info(
        "row %s %s: %s%s",
        row,
        conversation_id,
        status,
        f" ({message})" if message else "",
        extra={
            "run_id": run_id,
            "row": row,
            "conversation_id": conversation_id,
            "status": status,
            "http_status": http_status,
            "error_code": error_code,
            "context_id": context_id,
        },
    )


def _may_have_landed(item: WorkItem) -> bool:
    """Whether an earlier run may have written this item: its POST was sent (in_flight) and
    then neither confirmed nor refused (interrupted, or failed with no answer or a 5xx)."""
    return item.status == Status.IN_FLIGHT.value or (
        item.status == Status.FAILED.value and item.attempts > 0
    )


def _status_for(err: ApiError, looking_up: bool) -> Status:
    if isinstance(err, TransientApiError):
        return Status.FAILED
    if err.status == 404:
        return Status.NOT_FOUND
    if err.status == 403:
        return Status.FORBIDDEN
    return Status.REJECTED


def _permission_hint(err: ApiError, looking_up: bool) -> ApiError:
    if isinstance(err, AuthError):
        return err
    needed = "conversation:communication:view" if looking_up else "conversation:participant:wrapup"
    return AuthError(
        f"{err}; give the OAuth client's role the permission {needed}",
        status=err.status,
        code=err.code,
        context_id=err.context_id,
    )


def _budget_key(client: GenesysClient) -> str:
    """Whose rate budget a client draws from: its OAuth client id (a user's token: one budget
    for every process using a user's token, whose app's client is not known)."""
    settings = client.settings
    return "user token" if settings.uses_user_token else settings.client_id


def _end_times(targets: Iterable[Target]) -> str | None:
    """The `endTime` sent to each target (";"-joined like the ids; "" where none is sent)."""
    times = [format_time(t.end_time) if t.action == "apply" and t.end_time else "" for t in targets]
    return ";".join(times) if any(times) else None


def _join(values: Iterable[str | None]) -> str:
    return ";".join(value or "" for value in values)


# -- the single ledger writer -------------------------------------------------------------------


class _Ack:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False


class _Recorder(threading.Thread):
    """Owns the ledger writes during the work: commits outcomes in batches, in_flight marks
    first (each only while this worker still holds its conversation's claim), releases a
    conversation's claim when its last item here is recorded, and beats the worker's heart
    (extending its lease and claims) every quarter of the lease."""

    BATCH = 500

    def __init__(
        self,
        ledger: Ledger,
        run_id: int,
        total: int,
        progress: ProgressCallback,
        stop: threading.Event,
        *,
        worker_id: int,
        lease_seconds: float,
    ) -> None:
        super().__init__(name="wrapup-recorder", daemon=True)
        self.stop = stop
        self.ledger = ledger
        self.run_id = run_id
        self.total = total
        self.progress = progress
        self.queue: queue.Queue[tuple[ItemUpdate, _Ack | None] | None] = queue.Queue()
        self.counts: Counter[str] = Counter()
        self.done = 0
        self.error: BaseException | None = None
        self._last_beat = time.monotonic()
        self._logged: dict[int, tuple[int, str]] = {}  # item id -> (row, conversation id)
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = lease_seconds / 4
        self._claims_lock = threading.Lock()
        self._conversation_of: dict[int, str] = {}  # claimed item id -> conversation id
        self._outstanding: Counter[str] = Counter()  # conversation id -> items not recorded

    def holding(self) -> int:
        """How many claimed items are still to be recorded."""
        with self._claims_lock:
            return len(self._conversation_of)

    def forget(self, item: WorkItem) -> None:
        """A claimed item that will not be recorded (stopping, or its claim was lost)."""
        with self._claims_lock:
            if self._conversation_of.pop(item.item_id, None) is not None:
                self._outstanding[item.conversation_id] -= 1

    def hold(self, claimed: Iterable[WorkItem]) -> None:
        """Items just claimed: their conversations are released once they are recorded."""
        with self._claims_lock:
            for item in claimed:
                self._conversation_of[item.item_id] = item.conversation_id
                self._outstanding[item.conversation_id] += 1

    def submit(self, update: ItemUpdate, item: WorkItem | None = None) -> None:
        if item is not None and log.isEnabledFor(logging.INFO):
            self._logged[update.item_id] = (item.row, item.conversation_id)
        self.queue.put((update, None))

    def mark_in_flight(self, update: ItemUpdate) -> bool:
        """Commit the in_flight mark; True once it is durable and the POST may go."""
        ack = _Ack()
        self.queue.put((update, ack))
        while not ack.event.wait(timeout=1.0):
            if not self.is_alive():
                return False
        return ack.ok

    def close(self) -> None:
        self.queue.put(None)
        self.join()

    def run(self) -> None:
        self.progress(Progress("apply", total=self.total))
        closing = False
        while not closing:
            batch, closing = self._take()
            if batch:
                self._write(batch)
            if time.monotonic() - self._last_beat > self.heartbeat_seconds:
                self._last_beat = time.monotonic()
                self._safely(self._heartbeat)

    def _heartbeat(self) -> None:
        self.ledger.heartbeat_worker(self.worker_id, self.lease_seconds)

    def _take(self) -> tuple[list[tuple[ItemUpdate, _Ack | None]], bool]:
        try:
            first = self.queue.get(timeout=1.0)
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self.BATCH:
            try:
                entry = self.queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    def _write(self, batch: list[tuple[ItemUpdate, _Ack | None]]) -> None:
        refused: list[ItemUpdate] = []

        def write() -> None:
            refused.extend(
                self.ledger.record_claimed(
                    self.run_id,
                    self.worker_id,
                    [(u, self._conversation_of.get(u.item_id, "")) for u, _ in batch],
                    release=self._settled,
                    lease_seconds=self.lease_seconds,
                )
            )

        ok = self._safely(write)
        lost = {u.item_id for u in refused}
        for update, ack in batch:
            if ack is not None and update.item_id in lost:  # its claim was taken over
                log.warning("item %d: its claim was taken over; not sent", update.item_id)
                ack.ok = False
                ack.event.set()
        batch = [(u, ack) for u, ack in batch if u.item_id not in lost]
        for update, ack in batch:
            if ack is not None:
                ack.ok = ok
                ack.event.set()
            elif ok:
                self.done += 1
                self.counts[update.status] += 1
                if self._logged:
                    self._log_outcome(update)
        if ok:
            self.progress(
                Progress("apply", done=self.done, total=self.total, counts=dict(self.counts))
            )

    def _settled(self, updates: Sequence[ItemUpdate]) -> list[str]:
        """The conversations whose last claimed item here has just been recorded."""
        released = []
        with self._claims_lock:
            for update in updates:
                conversation = self._conversation_of.pop(update.item_id, None)
                if conversation is None:
                    continue
                self._outstanding[conversation] -= 1
                if self._outstanding[conversation] <= 0:
                    del self._outstanding[conversation]
                    released.append(conversation)
        return released

    def _log_outcome(self, update: ItemUpdate) -> None:
        """One log record per committed outcome (only built when info records are wanted)."""
        row, conversation_id = self._logged.pop(update.item_id, (None, None))
        log_outcome(
            self.run_id,
            row,
            conversation_id,
            update.status,
            update.message,
            http_status=update.http_status,
            error_code=update.error_code,
            context_id=update.context_id,
        )

    def _safely(self, action: Callable[[], None]) -> bool:
        if self.error is not None:
            return False
        try:
            action()
        except Exception as exc:  # the run stops; nothing else is sent
            self.error = exc
            self.stop.set()
            return False
        return True
