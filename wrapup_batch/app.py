"""The application layer of the analysts' page: uploads, previews, runs, results, history.

The page (`wrapup_batch.web`) is a thin face over this module, which calls the library the
command line uses: `sources` reads the file, a scratch `Ledger` gives the preview the same
verdicts (`invalid`, `duplicate`, `conflict`, `unknown_code`, `ambiguous_code`) that a run
records, `codes.CodeCatalog` resolves the codes, `planner.plan` projects the sampled look-up,
`execution.start` (as `wrapup-batch run` and `revert`) applies in a background thread with a
progress callback and a stop event, with `options.run_options` and `execution.new_client` as
the command line's, and `report.write_results` writes the results file (the same bytes as
`run --results`). Nothing here imports a web framework.

Files and runs are reached by id only: an upload by a random token (its file lives in
`<data dir>/uploads/<token>/`), a run by its ledger id. Every run records who started it.

Many runs share one ledger (the ledger's claims): two analysts, and the nightly job, may apply
at once, and each conversation is changed by one run at a time. Only a run of an older
wrapup-batch, which held the whole ledger, refuses a new one (`LedgerBusyError`: a clear page).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select

from wrapup_batch.api_settings import ApiSettings
from wrapup_batch.codes import CodeCatalog
from wrapup_batch.errors import (
    ApiError,
    LedgerBusyError,
    UsageError,
    WrapupBatchError,
)
from wrapup_batch.execution import hide_secrets, new_client, start
from wrapup_batch.fixes import RowsToFix, write_rows_to_fix
from wrapup_batch.ledger import (
    DONE,
    Ledger,
    RunInfo,
    StartedBy,
    items,
    run_rows,
    runs,
)
from wrapup_batch.ledger.locking import pid_alive
from wrapup_batch.models import FINE, NOT_FINE, UNFINISHED, Status
from wrapup_batch.options import run_options
from wrapup_batch.planner import OnExisting, ParticipantMode, plan
from wrapup_batch.planner import conversation_from_json as parse_conversation
from wrapup_batch.preview_job import RESULT_FILE as PREVIEW_FILE
from wrapup_batch.preview_job import SCRATCH_PREFIX, PreviewJobs
from wrapup_batch.report import run_counts, write_results
from wrapup_batch.runner import Progress, RunOptions, RunResult
from wrapup_batch.sources import (
    CANONICAL_COLUMNS,
    REQUIRED_COLUMNS,
    SourceSpec,
    describe_source,
    match_columns,
    read_header,
    read_rows,
    sheet_names,
)
from wrapup_batch.throttle import Throttle

if TYPE_CHECKING:
    from wrapup_batch.genesys import GenesysClient

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024
SAMPLE_SIZE = 20
PROBLEMS_SHOWN = 200
CODE_VALUES_SHOWN = 500
#: Requests per row when applying: the conversation look-up and the wrap-up POST.
REQUESTS_PER_ROW = 2
FAILURES_SHOWN = 8
CATALOG_TTL_S = 300.0
#: Uploads up to this size are previewed within the request (a second or so); larger ones in a
#: child process while the page shows how far it has read (`preview_job`).
PREVIEW_INLINE_BYTES = 1024 * 1024
_REFRESH_S = 1.0
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SUFFIXES = (".csv", ".txt", ".tsv", ".xlsx", ".xlsm")
PROBLEM_STATUSES = (
    Status.INVALID.value,
    Status.DUPLICATE.value,
    Status.CONFLICT.value,
    Status.UNKNOWN_CODE.value,
    Status.AMBIGUOUS_CODE.value,
)


# -- errors the page shows --------------------------------------------------------------------


class PageError(WrapupBatchError):
    """A refusal to show to the person, with the HTTP status that goes with it."""

    status = 400


class NotFound(PageError):
    status = 404


class NotAllowed(PageError):
    status = 403


class Busy(PageError):
    status = 409


class TooLarge(PageError):
    status = 413


# -- who --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    id: str
    name: str
    can_apply: bool

    @property
    def started_by(self) -> StartedBy:
        return StartedBy(self.id, self.name)


def local_user() -> User:
    """The one analyst of `serve --no-auth` (loopback only): the OS account, allowed to apply."""
    from wrapup_batch.ledger import local_account

    account = local_account()
    return User(account.id, account.name, can_apply=True)


# -- uploads ----------------------------------------------------------------------------------


@dataclass
class Upload:
    token: str
    filename: str
    size: int
    created: str
    uploaded_by: dict[str, str]
    directory: Path
    sheet: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    run_ids: list[int] = field(default_factory=list)

    @property
    def path(self) -> Path:
        suffix = Path(self.filename).suffix.lower()
        return self.directory / ("input" + (suffix if suffix in _SUFFIXES else ".csv"))

    def spec(self) -> SourceSpec:
        sheet: str | int | None = self.sheet
        return SourceSpec(path=self.path, sheet=sheet, columns=dict(self.columns))

    def shown(self, text: str) -> str:
        """A library message about this upload, naming the file as the analyst knows it."""
        return text.replace(str(self.path), self.filename)

    def meta(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("directory")
        return data


def _now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe_name(filename: str) -> str:
    name = Path(filename.replace("\\", "/")).name.strip() or "upload.csv"
    name = "".join(c for c in name if c.isprintable())[:120]
    return name or "upload.csv"


# -- runs as the page sees them -----------------------------------------------------------------


@dataclass
class RunView:
    """A run for the page and `/api/runs/{id}`: its state and counts as the ledger has them."""

    id: int
    kind: str
    state: str  # applying, stopped, done (preview is an upload's state)
    interrupted: bool
    dry_run: bool
    started: str
    finished: str | None
    source: str
    started_by: dict[str, str] | None
    total: int
    done: int
    counts: dict[str, int]
    rate_limit: float
    rows_per_minute: float
    eta_seconds: float | None
    message: str
    exit_code: int | None
    upload: str | None  # the upload's token, when the page started the run
    phase: str = ""  # ingest, resolve, apply (a run of this server), apply (one elsewhere)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: Rows left because another run was changing their conversations: {that run: rows} and
    #: how many of them are still not done (Resume finishes them).
    held: dict[int, int] = field(default_factory=dict)
    held_left: int = 0
    here: bool = False  # applying in this server's process (Stop reaches only such a run)
    applied_here: int | None = None  # rows this run itself applied (its summary), once ended

    @property
    def applied_before(self) -> int:
        """Applied rows this run sent nothing for: another run (earlier, or at the same time)
        had applied them."""
        if self.applied_here is None:
            return 0
        return max(0, self.counts.get(Status.APPLIED.value, 0) - self.applied_here)

    @property
    def held_rows(self) -> int:
        return sum(self.held.values())

    @property
    def held_runs(self) -> str:
        """The runs that held rows of this one, for a sentence: "run 3", "runs 1 and 3"."""
        ids = [str(n) for n in sorted(self.held)]
        if len(ids) < 2:
            return f"run {ids[0]}" if ids else ""
        return f"runs {', '.join(ids[:-1])} and {ids[-1]}"

    @property
    def to_fix(self) -> int:
        """Rows that are not fine or not finished: what the rows-to-fix file holds."""
        return sum(n for s, n in self.counts.items() if not is_fine(s))

    def api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "counts": self.counts,
            "started_by": self.started_by,
            "interrupted": self.interrupted,
            "kind": self.kind,
            "rows_per_minute": self.rows_per_minute,
            "eta_seconds": self.eta_seconds,
            "phase": self.phase,
            "held_by_other_runs": self.held_rows,
            "held_not_done": self.held_left,
        }


@dataclass
class _Live:
    """A run this process started: its thread, stop event and latest progress."""

    stop: threading.Event
    started: threading.Event
    thread: threading.Thread | None = None
    run_id: int = 0
    progress: Progress | None = None
    result: RunResult | None = None
    error: BaseException | None = None


@dataclass
class _Meter:
    """Rows done over time, for rows a minute and the ETA."""

    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=120))
    view: RunView | None = None
    at: float = 0.0


# -- the workspace ----------------------------------------------------------------------------


class Workspace:
    """The page's state: the ledger, the uploads folder, the server's API settings."""

    def __init__(
        self,
        *,
        ledger: str,
        data_dir: Path,
        api: ApiSettings | None,
        api_problem: str = "",
        rate_limit: float = 300.0,
        concurrency: int = 4,
        max_upload: int = DEFAULT_MAX_UPLOAD,
        request_timeout: float = 30.0,
        preview_inline_bytes: int = PREVIEW_INLINE_BYTES,
    ) -> None:
        self.ledger_target = ledger
        self.ledger = Ledger.open(ledger)
        self.data_dir = data_dir
        (data_dir / "uploads").mkdir(parents=True, exist_ok=True)
        (data_dir / "runs").mkdir(parents=True, exist_ok=True)
        self.api = api
        self.api_problem = api_problem
        self.rate_limit = rate_limit
        self.concurrency = concurrency
        self.max_upload = max_upload
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._live: dict[int, _Live] = {}
        self._meters: dict[int, _Meter] = {}
        self._catalog: tuple[float, CodeCatalog] | None = None
        self.preview_inline_bytes = preview_inline_bytes
        self._previews = PreviewJobs(self._catalog_or_problem, rate_limit)

    def close(self) -> None:
        self._previews.close()
        for live in list(self._live.values()):
            live.stop.set()
        for live in list(self._live.values()):
            if live.thread is not None:
                live.thread.join(timeout=30)
        self.ledger.close()

    # -- uploads --------------------------------------------------------------------------

    def save_upload(self, filename: str, chunks: Iterable[bytes], user: User) -> Upload:
        """Stream an uploaded file to disk; TooLarge (and nothing kept) past `max_upload`."""
        token = secrets.token_urlsafe(18)
        directory = self.data_dir / "uploads" / token
        directory.mkdir(parents=True)
        upload = Upload(
            token=token,
            filename=_safe_name(filename),
            size=0,
            created=_now(),
            uploaded_by={"id": user.id, "name": user.name},
            directory=directory,
        )
        try:
            with upload.path.open("wb") as out:
                for chunk in chunks:
                    upload.size += len(chunk)
                    if upload.size > self.max_upload:
                        raise TooLarge(self.too_large_message())
                    out.write(chunk)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self._save(upload)
        return upload

    def too_large_message(self) -> str:
        return (
            f"The file is larger than the limit of {_size(self.max_upload)}: nothing was kept. "
            "Split it into smaller files, or ask whoever runs this page to raise --max-upload."
        )

    def get_upload(self, token: str) -> Upload:
        if not _TOKEN_RE.match(token):
            raise NotFound("No such upload.")
        directory = self.data_dir / "uploads" / token
        try:
            data = json.loads((directory / "meta.json").read_text("utf-8"))
        except (OSError, ValueError):
            raise NotFound("No such upload.") from None
        return Upload(directory=directory, **data)

    def _save(self, upload: Upload) -> None:
        tmp = upload.directory / "meta.json.part"
        tmp.write_text(json.dumps(upload.meta(), indent=1), "utf-8")
        os.replace(tmp, upload.directory / "meta.json")
        (upload.directory / "preview.json").unlink(missing_ok=True)

    def choose_sheet(self, upload: Upload, sheet: str) -> None:
        upload.sheet = sheet
        upload.columns = {}
        self._save(upload)

    def map_columns(self, upload: Upload, mapping: dict[str, str]) -> None:
        """Set the upload's column mapping (canonical name -> header), as `--column` does."""
        headers = read_header(upload.spec())
        columns: dict[str, str] = {}
        for canonical in CANONICAL_COLUMNS:
            header = mapping.get(canonical) or ""
            if not header.strip():
                if canonical in REQUIRED_COLUMNS:
                    raise PageError(f"Pick the column that holds {canonical}.")
                continue
            if header not in headers:
                raise PageError(f"{header!r} is not a column of {upload.filename}.")
            columns[canonical] = header
        upload.columns = columns
        self._save(upload)

    # -- the preview ----------------------------------------------------------------------

    def preview(self, upload: Upload) -> dict[str, Any]:
        """Every verdict that needs no per-row API call (computed once, then kept).

        A file of up to `preview_inline_bytes` is previewed here and now (about a second); a
        larger one in a child process (`preview_job`: even its sheet and column steps, since a
        large workbook's strings alone can take a hundred MB), and until that is done the
        answer is the stage `reading` with how far it has got."""
        kept = self._kept_preview(upload)
        if kept is not None:
            return kept
        if upload.size > self.preview_inline_bytes:
            return self._previews.follow(upload)
        return self._keep_preview(
            upload,
            self.compute_preview(upload, self._catalog_or_problem, rate_limit=self.rate_limit),
        )

    @staticmethod
    def _kept_preview(upload: Upload) -> dict[str, Any] | None:
        try:
            return dict(json.loads((upload.directory / PREVIEW_FILE).read_text("utf-8")))
        except (OSError, ValueError):
            return None

    @staticmethod
    def _keep_preview(upload: Upload, result: dict[str, Any]) -> dict[str, Any]:
        part = upload.directory / (PREVIEW_FILE + ".part")
        part.write_text(json.dumps(result), "utf-8")
        os.replace(part, upload.directory / PREVIEW_FILE)
        return result

    @staticmethod
    def preview_layout(upload: Upload) -> dict[str, Any]:
        """The sheet and column steps: `{"stage": "sheet" | "columns", ...}` while the
        analyst has a choice to make, else `{"stage": "ready", sheets, headers, mapping}`."""
        sheets = sheet_names(upload.path)
        if len(sheets) > 1 and upload.sheet is None:
            return {"stage": "sheet", "sheets": sheets}
        headers = read_header(upload.spec())
        matched = match_columns(headers, upload.columns)
        if any(c not in matched for c in REQUIRED_COLUMNS):
            return {
                "stage": "columns",
                "headers": headers,
                "matched": {c: headers[i] for c, i in matched.items()},
            }
        return {
            "stage": "ready",
            "sheets": sheets,
            "headers": headers,
            "mapping": {c: headers[i] for c, i in matched.items()},
        }

    @staticmethod
    def compute_preview(
        upload: Upload,
        codes: Callable[[], tuple[CodeCatalog | None, str]],
        *,
        rate_limit: float,
        progress: Callable[[str, int], None] | None = None,
    ) -> dict[str, Any]:
        """The preview of `upload`, in this process: the layout, then every row through a
        scratch ledger for the verdicts a run would record. `codes()` gives the org's
        catalogue or what kept it from being read; `progress(phase, rows)` hears how far it
        has got. A file's problem is the `error` stage, with the CLI's message."""
        try:
            layout = Workspace.preview_layout(upload)
            if layout["stage"] != "ready":
                return layout
            started = time.monotonic()
            scratch_dir = tempfile.TemporaryDirectory(dir=upload.directory, prefix=SCRATCH_PREFIX)
            with scratch_dir as scratch:
                book = Ledger.open(str(Path(scratch) / "preview.db"))
                try:
                    result = Workspace._verdicts(
                        upload, book, codes, rate_limit, progress or _no_progress
                    )
                finally:
                    book.close()
        except WrapupBatchError as err:
            return {"stage": "error", "error": upload.shown(str(err))}
        result.update(layout, seconds=round(time.monotonic() - started, 2))
        return result

    @staticmethod
    def _verdicts(
        upload: Upload,
        book: Ledger,
        codes: Callable[[], tuple[CodeCatalog | None, str]],
        rate_limit: float,
        progress: Callable[[str, int], None],
    ) -> dict[str, Any]:
        run_id = book.start_run(source=upload.filename, options={}, dry_run=True)
        values: Counter[str] = Counter()
        rows = 0
        progress("reading", 0)
        for chunk in read_rows(upload.spec()):
            book.ingest(run_id, chunk)
            rows += len(chunk)
            values.update(row.wrapup_code for row in chunk if row.problem is None)
            progress("reading", rows)
        progress("duplicates", rows)
        book.mark_duplicates(run_id)
        progress("resolve", rows)
        catalog, codes_error = codes()
        code_lines: list[dict[str, Any]] = []
        if catalog is not None:
            for value in book.requested_codes(run_id, DONE):
                found = catalog.resolve(value)
                book.apply_resolution(
                    run_id,
                    DONE,
                    value,
                    code_id=found.code.id if found.code else None,
                    code_name=found.code.name if found.code else None,
                    status=found.status,
                    message=found.message,
                )
            progress("conflicts", rows)
            book.mark_conflicts(run_id, DONE)
        progress("summary", rows)
        sample = _sample(book, run_id) if catalog is not None else []
        for value, count in values.most_common(CODE_VALUES_SHOWN):
            line: dict[str, Any] = {"value": value, "rows": count}
            if catalog is not None:
                found = catalog.resolve(value)
                line["code"] = found.code.name if found.code else None
                line["code_id"] = found.code.id if found.code else None
                line["status"] = found.status.value if found.status else "ok"
                line["message"] = found.message
            code_lines.append(line)
        counts = book.status_counts(run_id)
        problems = [
            {
                "row": r.row,
                "conversation_id": r.conversation_id,
                "wrapup_code": r.wrapup_code,
                "status": r.status,
                "message": r.message,
            }
            for page in book.iter_results(run_id, statuses=PROBLEM_STATUSES, batch=PROBLEMS_SHOWN)
            for r in page
        ][:PROBLEMS_SHOWN]
        to_apply = counts.get(Status.PENDING.value, 0)
        return {
            "rows": rows,
            "counts": counts,
            "problems": problems,
            "codes": code_lines,
            "distinct_codes": len(values),
            "codes_error": codes_error,
            "to_apply": to_apply,
            "rate_limit": rate_limit,
            "eta_seconds": round(to_apply * REQUESTS_PER_ROW * 60.0 / rate_limit, 1),
            "sample": sample,
        }

    def _catalog_or_problem(self) -> tuple[CodeCatalog | None, str]:
        try:
            return self.catalog(), ""
        except WrapupBatchError as err:
            return None, f"The org's wrap-up codes could not be read: {err}"

    def warm_up(self) -> None:
        """Read the org's codes in the background (the SDK's import and a token take seconds),
        so that the first preview does not wait for them; a failure is only logged."""

        def read() -> None:
            try:
                self.catalog()
            except Exception as exc:  # the preview says what is wrong, in time
                log.warning("could not read the org's wrap-up codes yet: %s", exc)

        threading.Thread(target=read, name="wrapup-web-warm-up", daemon=True).start()

    @property
    def codes_ready(self) -> bool:
        """Whether the org's codes are read (the first preview then does not wait for them)."""
        return self._catalog is not None

    def catalog(self) -> CodeCatalog:
        """The org's wrap-up codes, read with the server's client (kept five minutes)."""
        with self._lock:
            if self._catalog is not None and time.monotonic() - self._catalog[0] < CATALOG_TTL_S:
                return self._catalog[1]
        client = self._client(Throttle(self.rate_limit))
        catalog = CodeCatalog(client.list_wrapup_codes())
        with self._lock:
            self._catalog = (time.monotonic(), catalog)
        return catalog

    def _client(self, throttle: Throttle, pool_size: int = 4) -> GenesysClient:
        if self.api is None:
            raise UsageError(self.api_problem or "no API settings")
        hide_secrets(self.api)
        return new_client(self.api, throttle, pool_size=pool_size)

    def sample_lookup(
        self, upload: Upload, on_existing: OnExisting, participant: ParticipantMode
    ) -> dict[str, Any]:
        """Read the sampled rows' conversations through the API and plan them (no write)."""
        preview = self.preview(upload)
        rows: list[dict[str, Any]] = list(preview.get("sample", []))
        if not rows:
            return {"sampled": 0, "outcomes": {}, "rows": []}
        catalog = self.catalog()
        client = self._client(Throttle(self.rate_limit))
        client.authenticate()
        outcomes: Counter[str] = Counter()
        shown: list[dict[str, Any]] = []
        for row in rows:
            try:
                view = parse_conversation(client.get_conversation(row["conversation_id"]))
            except ApiError as err:
                outcome = {404: "not_found", 403: "forbidden"}.get(err.status, "failed")
                message = err.message if err.status else str(err)
            else:
                the_plan = plan(
                    view,
                    code_id=row["code_id"],
                    agent_id=row["agent_id"],
                    participant=participant,
                    on_existing=on_existing,
                    name_of=catalog.name_of,
                )
                if the_plan.status is None:
                    replacing = any(t.previous_code for t in the_plan.to_apply)
                    outcome = "would_replace" if replacing else "would_apply"
                else:
                    outcome = the_plan.status.value
                message = the_plan.message
            outcomes[outcome] += 1
            shown.append({**row, "outcome": outcome, "message": message})
        return {"sampled": len(rows), "outcomes": dict(outcomes.most_common()), "rows": shown}

    # -- runs -----------------------------------------------------------------------------

    def apply(
        self,
        upload: Upload,
        user: User,
        *,
        on_existing: OnExisting = "skip",
        participant: ParticipantMode = "last-agent",
    ) -> int:
        """Start the upload's batch in a background thread; return its run id."""
        self._may_apply(user)
        preview = self.preview(upload)
        if preview.get("stage") != "ready":
            raise PageError("This file cannot be applied yet: finish the preview first.")
        options = self._options(on_existing, participant)
        run_id = self._launch(options, user, spec=upload.spec())
        upload.run_ids.append(run_id)
        self._save_keep_preview(upload)
        (self.data_dir / "runs" / f"{run_id}.json").write_text(
            json.dumps({"upload": upload.token}), "utf-8"
        )
        return run_id

    def resume(self, run_id: int, user: User) -> int:
        """Run an interrupted or stopped run's upload again: done rows cost nothing."""
        view = self.run_view(run_id)
        if view.upload is None:
            raise PageError(
                "This run was not started from this page: resume it where it was started "
                "(run the same input with the same ledger again)."
            )
        if view.state == "applying":
            raise Busy("This run is still applying.")
        upload = self.get_upload(view.upload)
        options = RunInfoOptions.of(self.ledger.get_run(run_id))
        return self.apply(
            upload, user, on_existing=options.on_existing, participant=options.participant
        )

    def revert(self, run_id: int, user: User) -> int:
        """Put back the codes a finished run replaced, as a new run of kind revert."""
        self._may_apply(user)
        view = self.run_view(run_id)
        if view.state == "applying":
            raise Busy("This run is still applying: revert it once it has ended.")
        return self._launch(self._options("replace", "all-agents"), user, revert_of=run_id)

    def _launch(
        self,
        options: RunOptions,
        user: User,
        *,
        spec: SourceSpec | None = None,
        revert_of: int | None = None,
    ) -> int:
        """Start the batch read from `spec` (or the revert of run `revert_of`) in a background
        thread, on a ledger connection of its own; return its run id once it is recorded."""

        def work(live: _Live) -> RunResult:
            book = Ledger.open(self.ledger_target)
            try:
                return start(
                    book,
                    options,
                    self._factory,
                    spec=spec,
                    revert_of=revert_of,
                    progress=self._progress_of(live),
                    stop=live.stop,
                    api=self.api,
                    started_by=user.started_by,
                )
            finally:
                book.close()

        return self._start(work)

    def stop(self, run_id: int, user: User) -> None:
        """Stop a run this server started, as Ctrl-C: what is in flight finishes."""
        self._may_apply(user)
        live = self._live.get(run_id)
        if live is None or live.result is not None:
            raise PageError("This run is not applying on this server; nothing to stop.")
        live.stop.set()

    def _may_apply(self, user: User) -> None:
        if not user.can_apply:
            raise NotAllowed(
                "Only people whose Genesys Cloud role has the permission "
                "conversation:participant:wrapup may apply or revert wrap-up codes."
            )

    def _options(self, on_existing: str, participant: str) -> RunOptions:
        if on_existing not in ("skip", "replace"):
            raise PageError("on_existing must be skip or replace.")
        if participant not in ("last-agent", "all-agents"):
            raise PageError("participant must be last-agent or all-agents.")
        return run_options(
            {
                "on_existing": on_existing,
                "participant": participant,
                "rate_limit": self.rate_limit,
                "concurrency": self.concurrency,
                "request_timeout": self.request_timeout,
            }
        )

    def _factory(self, throttle: Throttle) -> GenesysClient:
        return self._client(throttle, pool_size=self.concurrency + 2)

    def _progress_of(self, live: _Live) -> Any:
        def on_progress(progress: Progress) -> None:
            live.progress = progress
            if progress.run_id and not live.started.is_set():
                live.run_id = progress.run_id
                with self._lock:
                    self._live[progress.run_id] = live
                live.started.set()

        return on_progress

    def _start(self, work: Any) -> int:
        live = _Live(stop=threading.Event(), started=threading.Event())

        def target() -> None:
            try:
                live.result = work(live)
            except BaseException as exc:  # kept for the page; the thread must not die loudly
                live.error = exc
                if not isinstance(exc, WrapupBatchError):
                    log.error("a run failed unexpectedly: %s", exc, exc_info=exc)
            finally:
                live.started.set()

        live.thread = threading.Thread(target=target, name="wrapup-web-run", daemon=True)
        live.thread.start()
        live.started.wait(timeout=60)
        if live.run_id:
            return live.run_id
        error = live.error
        if isinstance(error, LedgerBusyError):
            raise Busy(
                "A run of an older wrapup-batch holds this whole ledger; try again when it "
                f"ends (see the history). {error}"
            )
        if isinstance(error, WrapupBatchError):
            raise PageError(str(error))
        raise PageError("The run could not start; the server log has the details.")

    def _save_keep_preview(self, upload: Upload) -> None:
        tmp = upload.directory / "meta.json.part"
        tmp.write_text(json.dumps(upload.meta(), indent=1), "utf-8")
        os.replace(tmp, upload.directory / "meta.json")

    # -- reading runs -----------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunInfo:
        run = self.ledger.get_run(run_id)
        if run is None:
            raise NotFound(f"No run {run_id} in this ledger.")
        return run

    def run_view(self, run_id: int, *, fresh: bool = False) -> RunView:
        """The run as the ledger has it now (re-read at most once a second per run)."""
        with self._lock:
            meter = self._meters.setdefault(run_id, _Meter())
            if not fresh and meter.view is not None and time.monotonic() - meter.at < _REFRESH_S:
                return meter.view
        # this server's run is looked at before the ledger: a run that ends in between is then
        # seen finished in the ledger, never as ended here and unfinished there (interrupted)
        live = self._live.get(run_id)
        live_here = live is not None and live.result is None and live.error is None
        run = self.get_run(run_id)
        running = run.finished is None and (live_here or self._held_by(run_id))
        if run.finished is None and not running:  # ended elsewhere just now, or interrupted
            run = self.get_run(run_id)
        phase = ""
        progress = live.progress if running and live_here and live is not None else None
        own = progress is not None
        if progress is not None:
            # this server's run: the runner's own progress (the ledger's rows still carry
            # the statuses of earlier runs until this one reaches them)
            phase = progress.phase
            total = progress.total
            done = progress.done if phase == "apply" else 0
            counts = dict(progress.counts) if phase == "apply" else {}
            if total > done:
                counts[Status.PENDING.value] = total - done
        elif running:
            # a run of another process (the command line, cron, another server): its own
            # work, from its rows (rows done by earlier runs are not its work, nor done by it)
            phase = "apply" if self.ledger.run_state(run_id).work_ready else ""
            counts = self.ledger.progress_counts(run_id, _done_statuses(run))
            total = sum(counts.values())
            done = total - sum(n for s, n in counts.items() if _status(s) in UNFINISHED)
        else:
            counts = run_counts(self.ledger, run)
            total = sum(counts.values())
            done = total - sum(n for s, n in counts.items() if _status(s) in UNFINISHED)
        summary = run.summary or {}
        # rows another run held: read for a run that says it left some, or one not finished
        # that this server is not running (a run of this server says so when it ends)
        left_some = bool(summary.get("held_by_other_runs"))
        held = (
            self.ledger.held_counts(run_id)
            if left_some or (run.finished is None and not own)
            else {}
        )
        if run.finished is None and not running:
            state, interrupted = "stopped", True
        elif running:
            state, interrupted = "applying", False
        else:
            state = "stopped" if run.exit_code in (3, 4) else "done"
            interrupted = False
        now = time.monotonic()
        meter.samples.append((now, done))
        rate = _rate(meter.samples)
        remaining = total - done
        eta = round(remaining * 60.0 / rate, 1) if rate > 0 and running else None
        limit = float(run.options.get("rate_limit") or self.rate_limit)
        view = RunView(
            id=run.id,
            kind=run.kind,
            state=state,
            interrupted=interrupted,
            dry_run=run.dry_run,
            started=run.started,
            finished=run.finished,
            source=self._source_shown(run),
            started_by=asdict(run.started_by) if run.started_by else None,
            total=total,
            done=done,
            counts=counts,
            rate_limit=limit,
            rows_per_minute=round(rate, 1),
            eta_seconds=eta,
            message=self._text_shown(run_id, str(summary.get("message") or "")),
            exit_code=run.exit_code,
            phase=phase,
            upload=self._upload_of(run_id),
            # shown while applying only (the results say it after): no scan of the items for
            # each finished run of the history
            failures=self._failures(run_id) if running else [],
            held={other: n for other, (n, _left) in held.items()},
            held_left=sum(left for _n, left in held.values()),
            here=own,
            applied_here=_int_or_none(summary.get("applied_this_run")) if run.finished else None,
        )
        with self._lock:
            meter.view, meter.at = view, now
        return view

    def _held_by(self, run_id: int) -> bool:
        """Whether a live process other than this one is working on this run (a worker of it
        whose lease has not passed; on this host, one whose process is still alive), or, on
        this host, the run's own process is still alive: before its workers start (reading
        its input, resolving its codes) a run has no worker yet, and is not interrupted."""
        host = socket.gethostname()
        with self.ledger.engine.connect() as conn:
            started = conn.execute(
                select(runs.c.pid, runs.c.host).where(runs.c.id == run_id)
            ).first()
        if started is not None and started[0] and started[1] == host:
            pid = int(started[0])
            if pid != os.getpid() and pid_alive(pid):
                return True
        for worker in self.ledger.live_workers():
            if worker.run_id != run_id:
                continue
            if worker.host != host:
                return True
            if worker.pid != os.getpid() and pid_alive(worker.pid):
                return True
        return False

    def _failures(self, run_id: int) -> list[dict[str, Any]]:
        """The latest rows of the run that failed at Genesys, newest first."""
        statuses = [s.value for s in NOT_FINE if s.value not in PROBLEM_STATUSES]
        query = (
            select(items.c.conversation_id, items.c.status, items.c.message, items.c.updated)
            .where(and_(items.c.last_run_id == run_id, items.c.status.in_(statuses)))
            .order_by(items.c.updated.desc())
            .limit(FAILURES_SHOWN)
        )
        with self.ledger.engine.connect() as conn:
            found = conn.execute(query).mappings().all()
        return [dict(r) for r in found]

    def _upload_of(self, run_id: int) -> str | None:
        try:
            data = json.loads((self.data_dir / "runs" / f"{run_id}.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        token = data.get("upload")
        return token if isinstance(token, str) else None

    def _text_shown(self, run_id: int, text: str) -> str:
        """A run's message with its upload's server path replaced by the file's name."""
        token = self._upload_of(run_id)
        if token is None or not text:
            return text
        try:
            return self.get_upload(token).shown(text)
        except NotFound:
            return text

    def _source_shown(self, run: RunInfo) -> str:
        """A run's source, with an upload's server path replaced by its file name."""
        uploads = str(self.data_dir / "uploads") + os.sep
        if run.source.startswith(uploads):
            token = run.source[len(uploads) :].split(os.sep, 1)[0]
            try:
                return self.get_upload(token).shown(run.source)
            except NotFound:
                return Path(run.source).name
        return run.source

    def history(self) -> list[RunView]:
        """Every run in the ledger, newest first, whoever started it (page, CLI, cron)."""
        return [self.run_view(run.id) for run in reversed(self.ledger.list_runs())]

    def result_rows(
        self, run_id: int, status: str | None = None, limit: int = 500
    ) -> tuple[list[Any], int]:
        """The first `limit` result rows (optionally of one status) and how many match."""
        self.get_run(run_id)
        statuses = [status] if status else None
        shown: list[Any] = []
        matching = 0
        for page in self.ledger.iter_results(run_id, statuses=statuses):
            matching += len(page)
            if len(shown) < limit:
                shown.extend(page[: limit - len(shown)])
        return shown, matching

    def results_file(self, run_id: int) -> Path:
        """The run's results CSV, written by `report.write_results` (as `run --results`) to a
        temporary file the caller deletes."""
        self.get_run(run_id)
        handle, name = tempfile.mkstemp(prefix=f"results-{run_id}-", suffix=".csv")
        os.close(handle)
        path = Path(name)
        write_results(self.ledger, run_id, path)
        return path

    def rows_to_fix(self, run_id: int) -> RowsToFix:
        """The input rows of a run that are not fine (or not finished), in the uploaded file's
        own layout (`fixes.write_rows_to_fix`: a CSV's own records, a workbook's sheet as an
        .xlsx), to correct and upload again; a temporary file the caller deletes."""
        token = self._upload_of(run_id)
        if token is None:
            raise PageError("This run was not started from this page: use its results file.")
        upload = self.get_upload(token)
        spec = upload.spec()
        if not _read_as(self.get_run(run_id).source, spec):  # its row numbers are not these
            raise PageError(
                f"Another sheet of {upload.filename} was chosen after this run; choose the sheet "
                "this run read again (the history names it) to download its rows to fix."
            )
        statuses = [s.value for s in (NOT_FINE | UNFINISHED)]
        rows = (r.row for page in self.ledger.iter_results(run_id, statuses=statuses) for r in page)
        try:
            return write_rows_to_fix(spec, rows, upload.filename)
        except WrapupBatchError as err:
            raise PageError(upload.shown(str(err))) from None


def _read_as(recorded: str, spec: SourceSpec) -> bool:
    """Whether a run's recorded source is the upload's file read as `spec` reads it (the same
    sheet), whatever the data folder was called when the run started."""
    assert spec.path is not None
    sheet = describe_source(spec).removeprefix(str(spec.path))  # "" or " (sheet 'Data')"
    return recorded.endswith(os.sep + spec.path.name + sheet)


@dataclass(frozen=True)
class RunInfoOptions:
    on_existing: OnExisting
    participant: ParticipantMode

    @staticmethod
    def of(run: RunInfo | None) -> RunInfoOptions:
        options = run.options if run is not None else {}
        on_existing = "replace" if options.get("on_existing") == "replace" else "skip"
        participant = "all-agents" if options.get("participant") == "all-agents" else "last-agent"
        return RunInfoOptions(on_existing, participant)  # type: ignore[arg-type]


def _sample(book: Ledger, run_id: int) -> list[dict[str, Any]]:
    """Up to SAMPLE_SIZE of the rows a run would look up, drawn at random by the database."""
    status = func.coalesce(run_rows.c.status, items.c.status)
    query = (
        select(
            run_rows.c.row,
            items.c.conversation_id,
            items.c.code_name,
            items.c.code_id,
            items.c.agent_id,
        )
        .select_from(run_rows.join(items, items.c.id == run_rows.c.item_id))
        .where(and_(run_rows.c.run_id == run_id, status == Status.PENDING.value))
        .order_by(func.random())
        .limit(SAMPLE_SIZE)
    )
    with book.engine.connect() as conn:
        found = conn.execute(query).all()
    return [
        {
            "row": r[0],
            "conversation_id": r[1],
            "wrapup_code": r[2],
            "code_id": r[3],
            "agent_id": r[4] or None,
        }
        for r in sorted(found)
    ]


def _no_progress(_phase: str, _rows: int) -> None:
    pass


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) else None


def _done_statuses(run: RunInfo) -> list[str]:
    """The item statuses a run does not redo (as the runner decides them from its options)."""
    skip = [Status.SKIPPED.value] if run.options.get("on_existing", "skip") == "skip" else []
    return [*DONE, *skip]


def _status(value: str) -> Status | None:
    try:
        return Status(value)
    except ValueError:
        return None


def _rate(samples: deque[tuple[float, int]]) -> float:
    """Rows a minute over the last minute of samples."""
    if len(samples) < 2:
        return 0.0
    now, done = samples[-1]
    then, before = next((t, d) for t, d in samples if now - t <= 60.0)
    if now - then < 1.0:
        return 0.0
    return max(0.0, (done - before) * 60.0 / (now - then))


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def is_fine(status: str) -> bool:
    found = _status(status)
    return found is not None and found in FINE
