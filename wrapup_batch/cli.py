"""The command line: the only module that imports click and tqdm.

Library errors (`errors.py`) become one line on stderr and the exit code the design names;
an unexpected exception becomes a short message pointing at the log, never a traceback.

Commands: `run` (a batch, from flags and/or a `--job` file), `status` and `report` (what a
ledger holds), `codes` and `check` (the org, before a run), `emulator` and `demo`.
Logs: `--log-format text|json` and `--log-file F`; every record passes through a redaction of
the client secret, URL passwords and bearer tokens before it is written anywhere.
"""

from __future__ import annotations

import csv
import errno
import functools
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource
from tqdm import tqdm

from wrapup_batch import __version__
from wrapup_batch.api_settings import (
    ENV_ACCESS_TOKEN,
    PERMISSIONS,
    ApiSettings,
    is_permission_error,
    settings_from_env,
)
from wrapup_batch.codes import CodeCatalog, WrapupCode
from wrapup_batch.errors import (
    ApiError,
    AuthError,
    LedgerError,
    RateLimitedError,
    RequestRejectedError,
    UsageError,
    WrapupBatchError,
)
from wrapup_batch.jobs import load_job, parse_duration
from wrapup_batch.ledger import DEFAULT_LEASE_SECONDS, DEFAULT_LEDGER, Ledger, RunInfo
from wrapup_batch.models import FINE, NOT_FINE, UNFINISHED, Status
from wrapup_batch.org import OrgIdentity, identify
from wrapup_batch.planner import ConversationView, agent_participants
from wrapup_batch.planner import conversation_from_analytics as parse_analytics
from wrapup_batch.planner import conversation_from_json as parse_conversation
from wrapup_batch.refusals import DEFAULT_STOP_AFTER_REFUSALS
from wrapup_batch.report import (
    check_writable,
    format_status,
    format_summary,
    status_data,
    write_results,
    write_results_to,
    write_summary_json,
)
from wrapup_batch.runner import (
    EXIT_INTERNAL,
    EXIT_STOPPED,
    Progress,
    RunOptions,
    RunResult,
    join_run,
    revert_batch,
    run_batch,
)
from wrapup_batch.sources import (
    SourceSpec,
    check_source,
    describe_source,
    normalise_conversation_id,
)
from wrapup_batch.throttle import Throttle

if TYPE_CHECKING:  # the SDK is imported only by commands that call the API (see _new_client)
    from wrapup_batch.genesys import GenesysClient, RetryNotice

log = logging.getLogger("wrapup_batch")

F = TypeVar("F", bound=Callable[..., Any])

SAMPLE_DATA = Path(__file__).resolve().parent.parent / "sample_data"
#: `--sandbox` runs keep their own ledger: its `applied` rows are true of the emulator only.
SANDBOX_LEDGER = "wrapup-sandbox-ledger.db"
STATUS_NAMES = tuple(status.value for status in Status)


# -- shared plumbing ------------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    log.error("%s", message, extra={"exit_code": code, "file_only": True})
    click.echo(f"Error: {_REDACT(message)}", err=True)
    sys.exit(code)


@contextmanager
def _errors_reported(log_file: str | None, *, log_option: bool = True) -> Iterator[None]:
    """Library errors as one line and their exit code. `log_option`: the command has
    --log-file, so that an unexpected error may point at it."""
    try:
        yield
    except WrapupBatchError as err:
        _fail(str(err), err.exit_code)
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: what the user asked for, not an error
        message = (
            "stopped: interrupted again; the requests in flight were abandoned: their rows stay "
            "in_flight, and the next run reads them back before it sends anything"
        )
        log.warning("%s", message, extra={"exit_code": EXIT_STOPPED, "file_only": True})
        click.echo(message, err=True)
        sys.exit(EXIT_STOPPED)
    except Exception as exc:  # the last line of defence: a short message, the details logged
        log.exception("unexpected error")
        where = (
            f"; details in {log_file}"
            if log_file
            else "; rerun with --log-file F for details"
            if log_option
            else ""
        )
        _fail(f"unexpected {type(exc).__name__}: {exc}{where}", EXIT_INTERNAL)


# -- logs -----------------------------------------------------------------------------------------

#: Extra fields a log record may carry (`extra={...}`); JSON lines carry those that are set.
LOG_FIELDS = (
    "run_id",
    "row",
    "conversation_id",
    "status",
    "http_status",
    "error_code",
    "context_id",
    "method",
    "path",
    "attempt",
    "wait_seconds",
    "retry_after_seconds",
    "exit_code",
    "counts",
    "source",
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_ACCESS_TOKEN = re.compile(r"(?i)(access_token[\"']?\s*[:=]\s*[\"']?)[^\"'\s,&}]+")


class _Redactor:
    """Replaces known secrets (the client secret, URL passwords) and bearer tokens by ***."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4:
            self.secrets.add(secret)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return _ACCESS_TOKEN.sub(r"\1***", _BEARER.sub(r"\1***", text))


_REDACT = _Redactor()


class _LogContext(logging.Filter):
    """Stamps the current run id on records that do not carry one."""

    run_id: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None and _LogContext.run_id is not None:
            record.run_id = _LogContext.run_id
        return True


class _NotFileOnly(logging.Filter):
    """Keeps off the console what the console already shows another way (the Error: line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


class _ConsoleFormatter(logging.Formatter):
    """The console gets one line per record; tracebacks go only to --log-file."""

    def format(self, record: logging.LogRecord) -> str:
        return _REDACT(f"{record.levelname} {record.getMessage()}")


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        run_id = getattr(record, "run_id", None)
        if run_id is not None:
            text += f" [run {run_id}]"
        return _REDACT(text)


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the fields that are set."""

    def __init__(self, *, tracebacks: bool) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _REDACT(record.getMessage()),
        }
        for name in LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = _REDACT(value) if isinstance(value, str) else value
        if self.tracebacks and record.exc_info:
            data["traceback"] = _REDACT(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False, default=str)


_OUR_HANDLERS: list[logging.Handler] = []


def _begin_command() -> None:
    """A command's start: no secret known yet (the process may run several), console logs."""
    _REDACT.secrets.clear()
    _setup_logging(None, False)


def _setup_logging(log_file: str | None, verbose: bool, log_format: str = "text") -> None:
    """Console: warnings (info with -v), one line each. --log-file: info (debug with -v)."""
    as_json = log_format == "json"
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(_JsonFormatter(tracebacks=False) if as_json else _ConsoleFormatter())
    console.addFilter(_NotFileOnly())
    handlers: list[logging.Handler] = [console]
    if log_file:
        try:
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write the log to {log_file}: {exc.strerror or exc}") from None
        file_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        file_handler.setFormatter(_JsonFormatter(tracebacks=True) if as_json else _TextFormatter())
        handlers.append(file_handler)
    root = logging.getLogger()
    for handler in _OUR_HANDLERS:
        handler.close()
    _OUR_HANDLERS.clear()
    root.handlers.clear()
    _LogContext.run_id = None
    for handler in handlers:
        handler.addFilter(_LogContext())
        root.addHandler(handler)
        _OUR_HANDLERS.append(handler)
    # The lowest level any handler takes: records nobody writes are not even built (the runner
    # logs every row's outcome at info, which costs nothing without --log-file or -v).
    root.setLevel(min(handler.level for handler in handlers))
    for noisy in ("urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_CONVERSATION_IN_PATH = re.compile(r"/conversations/(?:[a-z]+/)?([0-9a-fA-F-]{36})")


def _log_retry(notice: RetryNotice) -> None:
    """GenesysClient's on_retry: one log record per retry, with the wait before it."""
    err = notice.error
    found = _CONVERSATION_IN_PATH.search(notice.path)
    extra: dict[str, Any] = {
        "method": notice.method,
        "path": notice.path,
        "attempt": notice.attempt,
        "wait_seconds": round(notice.wait_seconds, 3),
        "http_status": err.status or None,
        "error_code": err.code,
        "context_id": err.context_id,
        "conversation_id": found.group(1).lower() if found else None,
    }
    if isinstance(err, RateLimitedError):
        extra["retry_after_seconds"] = err.retry_after
        log.info(
            "429 on %s %s: every request waits %g s (Retry-After), then this one is retried "
            "(attempt %d)",
            notice.method,
            notice.path,
            err.retry_after,
            notice.attempt,
            extra=extra,
        )
        return
    log.info(
        "retrying %s %s in %.2f s after %s (attempt %d)",
        notice.method,
        notice.path,
        notice.wait_seconds,
        err,
        notice.attempt,
        extra=extra,
    )


def _parse_duration(value: str | float | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-runtime") from None


def _parse_settle(value: str | float) -> float:
    try:
        return parse_duration(value, allow_zero=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--analytics-settle") from None


def _parse_columns(values: Sequence[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for value in values:
        name, sep, header = value.partition("=")
        name = name.strip().lower()
        if not sep or not header.strip():
            raise click.BadParameter(
                f"{value!r}: use NAME=HEADER, e.g. conversation_id=ConvId", param_hint="--column"
            )
        if name not in ("conversation_id", "wrapup_code", "notes", "agent_id"):
            raise click.BadParameter(
                f"{name!r} is not a column this tool reads; use conversation_id, wrapup_code, "
                "notes or agent_id",
                param_hint="--column",
            )
        mapping[name] = header.strip()
    return mapping


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM: stop taking new items; a second SIGINT abandons those in flight."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        click.echo(
            "\nstopping: finishing the requests in flight (Ctrl-C again to abandon them)",
            err=True,
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _duration(seconds: float) -> str:
    """12s, 3m05s, 2h01m."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class _ProgressReporter:
    """A tqdm bar on a terminal; otherwise a log line every 10 seconds."""

    def __init__(self, enabled: bool, interactive: bool) -> None:
        self.enabled = enabled
        self.interactive = interactive
        self.bar: tqdm[Any] | None = None
        self.last_line = 0.0
        self.apply_started: float | None = None
        self.lock = threading.Lock()

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        with self.lock:
            if progress.phase == "apply":
                self._apply(progress)
            elif progress.phase == "done":
                self.close()
            elif progress.phase == "ingest" and progress.done and not self.interactive:
                self._line(f"read {progress.done} row{'' if progress.done == 1 else 's'}")

    def _apply(self, progress: Progress) -> None:
        counts = progress.counts
        failed = sum(n for s, n in counts.items() if s in ("failed", "rejected", "forbidden"))
        if self.interactive:
            if self.bar is None:
                self.bar = tqdm(total=progress.total, unit="row", file=sys.stderr, leave=True)
            self.bar.n = progress.done
            self.bar.set_postfix(applied=counts.get("applied", 0), failed=failed, refresh=False)
            self.bar.refresh()
        else:
            now = time.monotonic()
            first = self.apply_started is None
            if self.apply_started is None:
                self.apply_started = now
            elapsed = now - self.apply_started
            per_minute = progress.done * 60.0 / elapsed if elapsed > 0 else 0.0
            left = progress.total - progress.done
            eta = _duration(left * 60.0 / per_minute) if per_minute > 0 else "unknown"
            self._line(
                f"{progress.done}/{progress.total} rows, applied {counts.get('applied', 0)}, "
                f"failed {failed}, {per_minute:.1f} rows/min, ETA {eta}, "
                f"elapsed {_duration(elapsed)}",
                force=first,  # the work starts: its size, then a line every 10 s
            )

    def _line(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_line >= 10.0:
            self.last_line = now
            click.echo(text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


SANDBOX_NOTE = (
    "sandbox: a fresh emulator, seeded from sample_data/emulator_seed.json (conversations "
    "c0000001-0000-4000-8000-000000000000 to c0000031-...); it keeps nothing after this "
    "command: the next --sandbox call (a rerun, a revert) starts from the seed again"
)


@contextmanager
def _sandbox_settings(timeout: float, *, note: bool = True) -> Iterator[ApiSettings]:
    """Settings for the emulator started in-process, seeded from the sample data."""
    from wrapup_batch.emulator import EmulatorConfig, start_emulator

    with start_emulator(EmulatorConfig()) as emulator:
        if note:
            click.echo(SANDBOX_NOTE, err=True)
        yield ApiSettings(
            host=emulator.base_url,
            client_id=emulator.client_id,
            client_secret=emulator.client_secret,
            timeout=timeout,
        )


@contextmanager
def _api_settings(
    sandbox: bool, timeout: float, given: ApiSettings | None, *, note: bool = True
) -> Iterator[ApiSettings]:
    """The API to talk to: given, the in-process emulator (--sandbox), or the environment's org."""
    if given is not None:
        yield given
    elif sandbox:
        with _sandbox_settings(timeout, note=note) as settings:
            yield settings
    else:
        yield settings_from_env(os.environ, timeout=timeout)


# -- the commands --------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wrapup-batch")
def main() -> None:
    """Bulk-apply Genesys Cloud wrap-up codes: throttled, resumable, every row recorded."""


def _log_options_decorator(fn: F) -> F:
    for option in reversed(_log_options()):
        fn = option(fn)
    return fn


def _log_options() -> list[Callable[[F], F]]:
    return [
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False),
            help="Also write the log here (every row's outcome, retries and their waits).",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            help="Log lines as text, or as JSON objects (one per line) for log collectors.",
        ),
        click.option(
            "--verbose", "-v", is_flag=True, help="Log more: retries and every row on stderr."
        ),
    ]


_LEASE_OPTION = click.option(
    "--lease",
    "lease",
    type=click.FloatRange(min=5),
    default=DEFAULT_LEASE_SECONDS,
    show_default=True,
    help="Seconds a claim on a conversation lasts without a heartbeat: after a worker dies, "
    "another takes its rows over this long after its last heartbeat.",
)


def _run_options(fn: F) -> F:
    options = [
        click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path()),
        click.option(
            "--job",
            type=click.Path(dir_okay=False),
            help="A TOML job file holding any of these options (see jobs/); the options given "
            "here override it.",
        ),
        click.option("--query", help="SQL query giving conversation_id and wrapup_code columns."),
        click.option(
            "--query-file", type=click.Path(), help="A file holding the SQL query to run."
        ),
        click.option("--source-url", help="SQLAlchemy URL of the database to query."),
        click.option(
            "--ledger",
            help=f"SQLite file (or SQLAlchemy URL) recording every row's outcome [default: "
            f"{DEFAULT_LEDGER}; with --sandbox {SANDBOX_LEDGER}, or the job's ledger with "
            "-sandbox added to its name]. A ledger belongs to the first org it is used on.",
        ),
        click.option("--results", type=click.Path(), help="Write the results CSV here."),
        click.option("--summary-json", type=click.Path(), help="Write the run summary as JSON."),
        click.option(
            "--dry-run/--no-dry-run",
            default=False,
            help="Read and plan; write nothing to Genesys (--no-dry-run overrides a job file).",
        ),
        click.option(
            "--on-existing",
            type=click.Choice(["skip", "replace"]),
            default="skip",
            show_default=True,
            help="What to do when a communication already has another wrap-up code.",
        ),
        click.option(
            "--participant",
            type=click.Choice(["last-agent", "all-agents"]),
            default="last-agent",
            show_default=True,
            help="Which agent communication(s) to wrap up.",
        ),
        click.option(
            "--rate-limit",
            type=click.FloatRange(min=1),
            default=300,
            show_default=True,
            help="Requests per minute (the org's limit for this OAuth client).",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(1, 64),
            default=4,
            show_default=True,
            help="Requests in flight at once.",
        ),
        click.option("--max-runtime", help="Stop cleanly after this long (45s, 90m, 2h); exit 4."),
        click.option(
            "--limit",
            type=click.IntRange(min=1),
            help="Only the first N rows of the input (try 5 on a real org before the rest).",
        ),
        click.option(
            "--stop-after-refusals",
            type=click.IntRange(min=0),
            default=DEFAULT_STOP_AFTER_REFUSALS,
            show_default=True,
            help="Stop (exit 3) when the first N wrap-up POSTs are all refused with the same "
            "error and none is accepted; 0: never.",
        ),
        click.option(
            "--column",
            "columns",
            multiple=True,
            help="Map a column to your header: NAME=HEADER (repeatable).",
        ),
        click.option("--encoding", help="Input file encoding (default UTF-8, BOM detected)."),
        click.option("--sheet", help="XLSX sheet name or 0-based index (default the first)."),
        click.option(
            "--request-timeout",
            type=click.FloatRange(min=0.1),
            default=30.0,
            show_default=True,
            help="Seconds before one HTTP request is abandoned and retried.",
        ),
        click.option(
            "--lookup",
            type=click.Choice(["conversations", "analytics"]),
            default="conversations",
            show_default=True,
            help="Read conversations one GET each, or many per analytics request "
            "(check your org with `wrapup-batch check --lookup-compare` first).",
        ),
        click.option(
            "--lookup-batch",
            type=click.IntRange(1, 100),
            default=100,
            show_default=True,
            help="Conversations per analytics request.",
        ),
        click.option(
            "--analytics-settle",
            default="1h",
            show_default=True,
            help="With --lookup analytics, read a conversation that ended less than this long "
            "ago (30m, 2h; 0 trusts analytics at once) through the Conversations API: analytics "
            "may not show a wrap-up set a moment ago.",
        ),
        _LEASE_OPTION,
        click.option(
            "--sandbox",
            is_flag=True,
            help="Run against the built-in emulator, with a ledger of its own.",
        ),
        *_log_options(),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _source_spec(
    input_path: str | None,
    query: str | None,
    query_file: str | None,
    source_url: str | None,
    columns: Sequence[str],
    encoding: str | None,
    sheet: str | None,
) -> SourceSpec:
    if query_file:
        try:
            query = Path(query_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read --query-file {query_file}: {exc.strerror}") from None
    if query and input_path:
        raise UsageError("give either an INPUT file or --query/--query-file, not both")
    if query and not source_url:
        raise UsageError("--query needs --source-url, the database to run it on")
    if not query and not input_path:
        raise UsageError("give an INPUT file (CSV or XLSX) or --query with --source-url")
    sheet_value: str | int | None = int(sheet) if sheet and sheet.isdigit() else sheet
    return SourceSpec(
        path=Path(input_path) if input_path else None,
        encoding=encoding,
        sheet=sheet_value,
        source_url=source_url if query else None,
        query=query,
        columns=_parse_columns(columns),
    )


@main.command()
@_run_options
@click.pass_context
def run(ctx: click.Context, /, **params: Any) -> None:
    """Apply the wrap-up codes listed in INPUT (or returned by --query, or named by --job).

    Other runs may use the same ledger at once, and other processes may join this run
    (`wrapup-batch work --run N`). Exit codes: 0 every row fine; 1 some rows not fine; 2 usage,
    input, output or ledger error (nothing sent; a ledger of another org included); 3 aborted
    (credentials, a permission, or the first wrap-ups all refused); 4 stopped early (rerun
    resumes); 5 an older wrapup-batch is using the ledger; 6 an unexpected error (a bug); 7 the
    API could not be reached before any work (network, proxy, region).
    """
    _begin_command()
    with _errors_reported(None):
        params = _with_job(ctx, params)
        params["ledger"] = _ledger_for(params, given=_given(ctx, "ledger"))
        _setup_logging(params["log_file"], params["verbose"], params["log_format"])
    with _errors_reported(params["log_file"]):
        result = _execute(params)
    sys.exit(result.exit_code)


@main.command()
@click.option(
    "--ledger",
    default=DEFAULT_LEDGER,
    show_default=True,
    help="The ledger of the run to join: the same file or URL the run uses.",
)
@click.option(
    "--run",
    "run_id",
    type=click.IntRange(min=1),
    required=True,
    help="The run to work on (`wrapup-batch status` lists the live ones).",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    help="Requests per minute (the org's limit for this process's OAuth client).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option("--max-runtime", help="Stop cleanly after this long (45s, 90m, 2h); exit 4.")
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds before one HTTP request is abandoned and retried.",
)
@_LEASE_OPTION
@click.option("--summary-json", type=click.Path(), help="Write this worker's summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@_log_options_decorator
def work(**params: Any) -> None:
    """Join run N in its ledger as one more worker, with this process's own OAuth client
    (GENESYSCLOUD_* from its environment), until none of the run's rows is left to do.

    Start the run with `wrapup-batch run` on one host; start `work --run N` on as many others
    as you have OAuth clients: each applies rows at its own client's rate limit, and the
    results are the same whichever worker applied a row. Exit codes as `run` (0 the run's rows
    are all fine, 1 some are not, 2, 3, 4).
    """
    _begin_command()
    _setup_logging(params["log_file"], params["verbose"], params["log_format"])
    with _errors_reported(params["log_file"]):
        result = _execute_work(params)
    sys.exit(result.exit_code)


def _execute_work(params: dict[str, Any]) -> RunResult:
    options = RunOptions(
        rate_limit=params["rate_limit"],
        concurrency=params["concurrency"],
        max_runtime=_parse_duration(params["max_runtime"]),
        request_timeout=params["request_timeout"],
        lease_seconds=params["lease"],
    )
    reporter = _ProgressReporter(enabled=not params["quiet"], interactive=sys.stderr.isatty())
    stop = threading.Event()
    _LogContext.run_id = params["run_id"]
    ledger = Ledger.open(params["ledger"], create=False)
    try:
        with (
            _api_settings(False, options.request_timeout, None) as api,
            _stop_on_signals(stop),
        ):
            _REDACT.add(api.client_secret)
            log.info("worker joining run %d, ledger %s", params["run_id"], ledger.display)

            def client_factory(throttle: Throttle) -> GenesysClient:
                return _new_client(api, throttle, pool_size=options.concurrency + 2)

            result = join_run(
                ledger,
                params["run_id"],
                options,
                client_factory,
                progress=reporter,
                stop=stop,
                api=api,
            )
        reporter.close()
        if params["summary_json"]:
            write_summary_json(Path(params["summary_json"]), result.summary)
    finally:
        reporter.close()
        ledger.close()
    log.info(
        "worker on run %d: %s",
        result.run_id,
        result.message,
        extra={"run_id": result.run_id, "exit_code": result.exit_code, "counts": result.counts},
    )
    click.echo(format_summary(result.summary), err=True)
    return result


_SOURCE_PARAMS = ("input_path", "query", "query_file")


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user gave this parameter (on the command line), rather than its default."""
    return ctx.get_parameter_source(name) not in (
        None,
        ParameterSource.DEFAULT,
        ParameterSource.DEFAULT_MAP,
    )


def _with_job(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters with those of `--job` filled in where the command line gave none.

    An input given on the command line (INPUT, --query or --query-file) replaces the job's
    input as a whole; `--column` mappings are added to the job's `[columns]`.
    """
    if not params.get("job"):
        return params
    job = load_job(Path(params["job"]))
    for secret in job.secrets:
        _REDACT.add(secret)
    merged = dict(params)
    cli_source = any(_given(ctx, name) for name in _SOURCE_PARAMS)
    for name, value in job.params.items():
        if name == "columns":
            merged["columns"] = (*value, *params["columns"])
        elif not (
            _given(ctx, name)
            or (cli_source and name in _SOURCE_PARAMS)
            or (name == "source_url" and _given(ctx, "input_path"))
        ):
            merged[name] = value
    return merged


def _ledger_for(params: Mapping[str, Any], *, given: bool) -> str:
    """The ledger a run uses. `--ledger` on the command line, as given; otherwise the job's
    ledger or the default, except that a `--sandbox` run never uses those: its applied rows
    are true of the emulator only. It gets `wrapup-sandbox-ledger.db`, or the job's ledger
    file with `-sandbox` added to its name (a URL is used as given: its org is checked)."""
    value: str | None = params.get("ledger")
    if given and value:
        return value
    if not params.get("sandbox"):
        return value or DEFAULT_LEDGER
    if not value:
        return SANDBOX_LEDGER
    if "://" in value:
        return value
    path = Path(value)
    return str(path.with_name(f"{path.stem}-sandbox{path.suffix or '.db'}"))


def _execute(
    params: dict[str, Any],
    *,
    interactive: bool | None = None,
    settings: ApiSettings | None = None,
    revert_of: int | None = None,
) -> RunResult:
    """Run a batch (or, with `revert_of`, revert that run) and report it."""
    spec: SourceSpec | None = None
    if revert_of is None:
        spec = _source_spec(
            params["input_path"],
            params["query"],
            params["query_file"],
            params["source_url"],
            params["columns"],
            params["encoding"],
            params["sheet"],
        )
    if spec is not None:
        check_source(spec)  # a mistyped path: exit 2 before the ledger is even created
    if params["results"]:
        check_writable(Path(params["results"]), "--results")
    if params["summary_json"]:
        check_writable(Path(params["summary_json"]), "--summary-json", in_place=True)
    description = describe_source(spec) if spec is not None else f"revert of run {revert_of}"
    options = RunOptions(
        dry_run=params["dry_run"],
        on_existing=params["on_existing"],
        participant=params["participant"],
        rate_limit=params["rate_limit"],
        concurrency=params["concurrency"],
        max_runtime=_parse_duration(params["max_runtime"]),
        request_timeout=params["request_timeout"],
        lookup=params["lookup"],
        lookup_batch=params["lookup_batch"],
        analytics_settle=_parse_settle(params.get("analytics_settle", "1h")),
        stop_after_refusals=params.get("stop_after_refusals", DEFAULT_STOP_AFTER_REFUSALS),
        limit=params.get("limit"),
        lease_seconds=params.get("lease") or DEFAULT_LEASE_SECONDS,
    )
    tty = sys.stderr.isatty() if interactive is None else interactive
    reporter = _ProgressReporter(enabled=not params["quiet"], interactive=tty)
    stop = threading.Event()
    _LogContext.run_id = None
    ledger = Ledger.open(params["ledger"])
    try:
        with (
            _api_settings(
                params["sandbox"], options.request_timeout, settings, note=not params["quiet"]
            ) as api,
            _stop_on_signals(stop),
        ):
            _REDACT.add(api.client_secret)
            _REDACT.add(api.access_token)
            log.info(
                "run starting: %s, ledger %s",
                description,
                ledger.display,
                extra={"source": description},
            )

            def client_factory(throttle: Throttle) -> GenesysClient:
                current = ledger.get_run()  # the last run: this one, unless another started since
                _LogContext.run_id = current.id if current is not None else None
                return _new_client(api, throttle, pool_size=options.concurrency + 2)

            if spec is not None:
                result = run_batch(
                    ledger, spec, options, client_factory, progress=reporter, stop=stop, api=api
                )
            else:
                assert revert_of is not None
                result = revert_batch(
                    ledger,
                    revert_of,
                    options,
                    client_factory,
                    progress=reporter,
                    stop=stop,
                    api=api,
                )
        reporter.close()
        _LogContext.run_id = result.run_id
        # Checked writable before the work; a failure now (a full disk) is reported after the
        # summary, and the exit code stays the work's.
        unwritten: list[str] = []
        results_written = False
        if params["results"]:
            try:
                write_results(ledger, result.run_id, Path(params["results"]))
                results_written = True
            except UsageError as err:
                unwritten.append(str(err))
        if params["summary_json"]:
            try:
                write_summary_json(Path(params["summary_json"]), result.summary)
            except UsageError as err:
                unwritten.append(str(err))
    finally:
        reporter.close()
        ledger.close()
    log.info(
        "run %d: %s",
        result.run_id,
        result.message,
        extra={"run_id": result.run_id, "exit_code": result.exit_code, "counts": result.counts},
    )
    click.echo(format_summary(result.summary), err=True)
    if results_written:
        click.echo(f"  results: {params['results']}", err=True)
    elif not params["results"] and result.rows:
        click.echo(
            f"  every row's outcome: add --results FILE, or `wrapup-batch report --ledger "
            f"{ledger.display} --run {result.run_id} -o FILE` (--not-fine for only the rows "
            "to look at)",
            err=True,
        )
    for text in unwritten:
        log.error("%s", text, extra={"file_only": True})
        click.echo(
            f"Error: {_REDACT(text)} (the run itself is recorded in the ledger: "
            f"`wrapup-batch report --ledger {ledger.display} -o FILE` writes its results)",
            err=True,
        )
    return result


def _api_options(fn: F) -> F:
    options = [
        click.option("--sandbox", is_flag=True, help="Use the built-in emulator, not an org."),
        click.option(
            "--rate-limit",
            type=click.FloatRange(min=1),
            default=300,
            show_default=True,
            help="Requests per minute.",
        ),
        click.option(
            "--request-timeout",
            type=click.FloatRange(min=0.1),
            default=30.0,
            show_default=True,
            help="Seconds before one HTTP request is abandoned and retried.",
        ),
        *_log_options(),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _client(api: ApiSettings, rate_limit: float) -> GenesysClient:
    _REDACT.add(api.client_secret)
    _REDACT.add(api.access_token)
    return _new_client(api, Throttle(rate_limit))


def _new_client(api: ApiSettings, throttle: Throttle, pool_size: int = 8) -> GenesysClient:
    """The SDK client. The SDK is imported here, the first time a command needs the API: the
    import costs ~2.5 s and ~220 MB, which `status`, `report` and a rerun with nothing left to
    do never pay (benchmarks/RESULTS.md, target 4)."""
    from wrapup_batch.genesys import GenesysClient

    return GenesysClient(api, throttle=throttle, pool_size=pool_size, on_retry=_log_retry)


def _read_codes(client: GenesysClient) -> list[WrapupCode]:
    """Every wrap-up code; a 403 is an AuthError naming the permission (exit 3)."""
    try:
        return client.list_wrapup_codes()
    except RequestRejectedError as err:
        if err.status == 403:
            raise AuthError(
                f"the OAuth client may not read wrap-up codes (403: {err.message}); give its "
                f"role the permission {PERMISSIONS['codes']}",
                status=403,
                code=err.code,
                context_id=err.context_id,
            ) from None
        raise


# -- revert ---------------------------------------------------------------------------------------


@main.command()
@click.argument("run_id", type=click.IntRange(min=1))
@click.option(
    "--ledger",
    help=f"The ledger holding the run to revert [default: {DEFAULT_LEDGER}; with --sandbox "
    f"{SANDBOX_LEDGER}].",
)
@click.option("--dry-run", is_flag=True, help="Show what would be put back; write nothing.")
@click.option("--results", type=click.Path(), help="Write the revert's results CSV here.")
@click.option("--summary-json", type=click.Path(), help="Write the revert's summary as JSON.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option("--max-runtime", help="Stop cleanly after this long (45s, 90m, 2h); exit 4.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@_api_options
def revert(run_id: int, **params: Any) -> None:
    """Put back the wrap-up codes that run RUN_ID replaced.

    Every communication the run wrapped up gets its previous code again, as a new run in the
    ledger (resumable, and itself revertible). A communication whose code was changed since
    is left alone (skipped); one that had no wrap-up before cannot be cleared through the API
    and is reported not_revertible.
    """
    _begin_command()
    _setup_logging(params["log_file"], params["verbose"], params["log_format"])
    fixed = {
        "on_existing": "replace",
        "participant": "all-agents",
        "lookup": "conversations",
        "lookup_batch": 100,
        "ledger": _ledger_for(params, given=params["ledger"] is not None),
    }
    with _errors_reported(params["log_file"]):
        result = _execute({**params, **fixed}, revert_of=run_id)
    sys.exit(result.exit_code)


# -- status and report: what a ledger holds -------------------------------------------------------

_LEDGER_OPTION = click.option(
    "--ledger",
    default=DEFAULT_LEDGER,
    show_default=True,
    help="The ledger: a SQLite file (or SQLAlchemy URL) that `run` wrote.",
)


@main.command()
@_LEDGER_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(ledger: str, as_json: bool) -> None:
    """Show the runs in a ledger (when, source, counts by status, exit code) and the rows
    still to do after the last run."""
    _begin_command()
    with _errors_reported(None, log_option=False):
        book = _open_existing(ledger)
        try:
            data = status_data(book)
        finally:
            book.close()
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else format_status(data))


@main.command()
@_LEDGER_OPTION
@click.option(
    "--run", "run_id", type=click.IntRange(min=1), help="The run to report (default: the last)."
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUS_NAMES),
    help="Only rows with this status (repeatable).",
)
@click.option(
    "--not-fine",
    is_flag=True,
    help="Only the rows that are not fine or not finished: those a rerun tries again.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="Write the CSV to this file (UTF-8 with a BOM, for spreadsheets); "
    "default: standard output.",
)
def report(
    ledger: str,
    run_id: int | None,
    statuses: tuple[str, ...],
    not_fine: bool,
    output: str | None,
) -> None:
    """Write the rows of a run (default: the last) as the results CSV, optionally only those
    with some statuses: `report --not-fine -o failures.csv` after a nightly run."""
    _begin_command()
    wanted = set(statuses)
    if not_fine:
        wanted |= {status.value for status in NOT_FINE | UNFINISHED}
    chosen = [name for name in STATUS_NAMES if name in wanted] or None
    with _errors_reported(None, log_option=False):
        book = _open_existing(ledger)
        try:
            run_info = _the_run(book, run_id)
            if output:
                written = write_results(book, run_info.id, Path(output), statuses=chosen)
            else:
                written = _to_stdout(book, run_info.id, chosen)
        finally:
            book.close()
    which = f" with status {', '.join(chosen)}" if chosen else ""
    if not_fine:
        extra = [name for name in STATUS_NAMES if name in statuses and Status(name) in FINE]
        which = " not fine or not finished" + (f" or with status {', '.join(extra)}" * bool(extra))
    where = output if output else "standard output"
    click.echo(f"run {run_info.id}: {written} row(s){which} written to {where}", err=True)


def _open_existing(ledger: str) -> Ledger:
    """A ledger to read; when the default is missing but a sandbox run wrote its own, say so."""
    try:
        return Ledger.open(ledger, create=False)
    except LedgerError as err:
        if ledger == DEFAULT_LEDGER and not Path(ledger).exists() and Path(SANDBOX_LEDGER).exists():
            raise LedgerError(
                f"{err} (--sandbox runs write {SANDBOX_LEDGER}: add --ledger {SANDBOX_LEDGER})"
            ) from None
        raise


def _to_stdout(book: Ledger, run_id: int, statuses: Sequence[str] | None) -> int:
    try:
        written = write_results_to(book, run_id, sys.stdout, statuses=statuses)
        sys.stdout.flush()
    except BrokenPipeError:  # `report | head`: the reader has what it wanted
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    return written


def _the_run(book: Ledger, run_id: int | None) -> RunInfo:
    found = book.get_run(run_id)
    if found is not None:
        return found
    if run_id is None:
        raise UsageError(f"ledger {book.display} has no runs yet")
    raise UsageError(
        f"ledger {book.display} has no run {run_id}; `wrapup-batch status --ledger "
        f"{book.display}` lists its runs"
    )


# -- codes and check: the org --------------------------------------------------------------------


@main.command()
@click.option(
    "--match", help="Only codes whose name contains this text (ignoring case and spaces)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the codes as JSON.")
@_api_options
def codes(match: str | None, as_json: bool, **params: Any) -> None:
    """List the org's wrap-up codes (id, name, division), sorted by name, for building an
    input file. Exit 3 when the client may not read them."""
    _begin_command()
    with _errors_reported(None):
        _setup_logging(params["log_file"], params["verbose"], params["log_format"])
    with (
        _errors_reported(params["log_file"]),
        _api_settings(params["sandbox"], params["request_timeout"], None) as api,
    ):
        client = _client(api, params["rate_limit"])
        client.authenticate()
        catalog = CodeCatalog(_read_codes(client))
        found = catalog.search(match) if match else list(catalog)
    if as_json:
        rows = [
            {
                "id": c.id,
                "name": c.name,
                "division_id": c.division_id,
                "division_name": c.division_name,
            }
            for c in found
        ]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif found:
        table = [("id", "name", "division")] + [
            (c.id, c.name, c.division_name or c.division_id or "") for c in found
        ]
        widths = [max(len(row[i]) for row in table) for i in range(2)]
        for code_id, name, division in table:
            click.echo(f"{code_id:<{widths[0]}}  {name:<{widths[1]}}  {division}".rstrip())
    if match:
        click.echo(f"{len(found)} of {len(catalog)} code(s) match {match!r}", err=True)
    else:
        click.echo(f"{len(catalog)} code(s)", err=True)


class _Checklist:
    """Prints one ✓/✗/- line per check and works out the exit code."""

    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0
        self.not_checked = 0
        self.permission_missing = False

    def ok(self, text: str) -> None:
        self.passed += 1
        click.echo(f"✓ {_REDACT(text)}")
        log.info("check passed: %s", text, extra={"file_only": True})

    def bad(self, text: str, *, permission: bool = False) -> None:
        click.echo(f"✗ {_REDACT(text)}")
        log.warning("check failed: %s", text, extra={"file_only": True})
        self.failed += 1
        self.permission_missing = self.permission_missing or permission

    def skipped(self, text: str, *, not_checked: bool = True) -> None:
        self.not_checked += not_checked
        click.echo(f"- {text}")

    def finish(self) -> NoReturn:
        not_checked = f", {self.not_checked} not checked (the lines marked -)"
        tally = f"{self.passed} passed" + (not_checked if self.not_checked else "")
        if self.failed:
            click.echo(f"{self.failed} check(s) failed, {tally}")
            log.warning("%d check(s) failed", self.failed, extra={"file_only": True})
        elif self.not_checked:
            click.echo(f"{self.passed} check(s) passed{not_checked}")
        else:
            click.echo(f"every check passed ({self.passed})")
        sys.exit(3 if self.permission_missing else 1 if self.failed else 0)


def _conversation_ids(values: Iterable[str], option: str) -> list[str]:
    ids: list[str] = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            normal = normalise_conversation_id(part.strip())
            if normal is None:
                raise UsageError(f"{option} {part.strip()!r} is not a conversation id (a UUID)")
            if normal not in ids:
                ids.append(normal)
    return ids


@main.command()
@click.option(
    "--conversation",
    metavar="ID",
    help="Also read this conversation, to prove conversation:communication:view.",
)
@click.option(
    "--lookup-compare",
    "compare",
    multiple=True,
    metavar="ID[,ID...]",
    help="Read these conversations through the Conversations API and the analytics multi-get "
    "and say whether their communications agree (repeatable, or comma-separated).",
)
@_api_options
def check(conversation: str | None, compare: tuple[str, ...], **params: Any) -> None:
    """Prove the setup before a big run: the credentials get a token, the codes can be read,
    a conversation can be read, and say which permission is missing when one is.

    Exit 0 when every check passes, 3 when the credentials are refused or a permission is
    missing, 1 when another check fails (a conversation not found, or --lookup-compare finds
    the two APIs disagree), 2 for a usage error.
    """
    _begin_command()
    with _errors_reported(None):
        _setup_logging(params["log_file"], params["verbose"], params["log_format"])
        sample = _conversation_ids([conversation], "--conversation") if conversation else []
        compare_ids = _conversation_ids(compare, "--lookup-compare")
    with (
        _errors_reported(params["log_file"]),
        _api_settings(params["sandbox"], params["request_timeout"], None) as api,
    ):
        checks = _Checklist()
        client = _client(api, params["rate_limit"])
        try:
            client.authenticate()
            org = identify(client, "")
        except AuthError as err:
            checks.bad(f"credentials: {err}", permission=True)
            checks.finish()
        _check_credentials(checks, api, org)
        catalog = _check_codes(checks, client)
        if sample:
            _check_conversation(checks, client, sample[0], catalog)
        else:
            checks.skipped(
                "conversation: not checked; give --conversation ID to prove "
                f"{PERMISSIONS['conversation']}"
            )
        checks.skipped(
            f"{PERMISSIONS['wrapup']}: not checked (only a write proves it); a run without it "
            "stops at its first wrap-up POST with exit 3"
        )
        if compare_ids:
            _check_lookup_compare(checks, client, compare_ids, catalog)
    checks.finish()


def _check_credentials(checks: _Checklist, api: ApiSettings, org: OrgIdentity) -> None:
    if api.uses_user_token:
        checks.ok(
            f"credentials: the access token in {ENV_ACCESS_TOKEN} is accepted by {api.host} "
            f"({org.principal}), for {org.describe()}; it is used instead of an OAuth client"
        )
    else:
        checks.ok(
            f"credentials: OAuth client {api.client_id!r} got a token from {api.host}, "
            f"for {org.describe()}"
        )


def _check_codes(checks: _Checklist, client: GenesysClient) -> CodeCatalog | None:
    try:
        catalog = CodeCatalog(client.list_wrapup_codes())
    except ApiError as err:
        if err.status == 403:
            checks.bad(
                f"wrap-up codes: missing permission {PERMISSIONS['codes']} (403: {err.message})",
                permission=True,
            )
        else:
            checks.bad(f"wrap-up codes: cannot be read: {err}")
        return None
    checks.ok(f"wrap-up codes: {len(catalog)} readable ({PERMISSIONS['codes']})")
    return catalog


def _read_conversation(
    checks: _Checklist, client: GenesysClient, conversation_id: str, label: str
) -> ConversationView | None:
    """The conversation through the Conversations API, or None after a ✗ line saying why."""
    try:
        return parse_conversation(client.get_conversation(conversation_id))
    except ApiError as err:
        needed = PERMISSIONS["conversation"]
        if is_permission_error(err):
            checks.bad(
                f"{label}: missing permission {needed} (403: {err.message})", permission=True
            )
        elif err.status == 403:
            checks.bad(
                f"{label}: forbidden (403: {err.message}); the client's role does not grant "
                f"{needed} in this conversation's division",
                permission=True,
            )
        elif err.status == 404:
            checks.bad(f"{label}: not found (404); check the conversation id and the region")
        else:
            checks.bad(f"{label}: cannot be read: {err}")
        return None


def _code_text(code_id: str | None, catalog: CodeCatalog | None) -> str:
    if code_id is None:
        return "none"
    name = catalog.name_of(code_id) if catalog is not None else code_id
    return f"{name!r}" if name == code_id else f"{name!r} ({code_id})"


def _agent_communications(view: ConversationView) -> dict[str, tuple[str, str, str | None]]:
    """Agent communication id -> (participant id, media, wrap-up code id)."""
    return {
        comm.id: (participant.id, comm.media, comm.wrapup_code)
        for participant in agent_participants(view)
        for comm in participant.communications
    }


def _check_conversation(
    checks: _Checklist, client: GenesysClient, conversation_id: str, catalog: CodeCatalog | None
) -> None:
    label = f"conversation {conversation_id}"
    view = _read_conversation(checks, client, conversation_id, label)
    if view is None:
        return
    comms = _agent_communications(view)
    described = ", ".join(
        f"{cid} ({media}, wrap-up {_code_text(code, catalog)})"
        for cid, (_, media, code) in comms.items()
    )
    state = "ended" if view.ended else "not ended yet"
    agents = f"agent communication(s): {described}" if comms else "no agent communication"
    checks.ok(f"{label}: readable ({PERMISSIONS['conversation']}); {state}; {agents}")


def _check_lookup_compare(
    checks: _Checklist, client: GenesysClient, ids: list[str], catalog: CodeCatalog | None
) -> None:
    analytics: dict[str, ConversationView] = {}
    try:
        for start in range(0, len(ids), 100):
            for raw in client.get_conversation_details(ids[start : start + 100]):
                parsed = parse_analytics(raw)
                analytics[parsed.id.lower()] = parsed
    except ApiError as err:
        if err.status == 403:
            checks.bad(
                f"analytics: missing permission {PERMISSIONS['analytics']} (403: "
                f"{err.message}); --lookup analytics needs it",
                permission=True,
            )
        else:
            checks.bad(f"analytics: cannot be read: {err}")
        return
    checks.ok(
        f"analytics: {len(analytics)} of {len(ids)} conversation(s) found "
        f"({PERMISSIONS['analytics']})"
    )
    disagree = 0
    for conversation_id in ids:
        label = f"lookup-compare {conversation_id}"
        view = _read_conversation(checks, client, conversation_id, label)
        if view is None:
            continue
        other = analytics.get(conversation_id)
        if other is None:
            checks.bad(f"{label}: analytics does not know this conversation (yet)")
            disagree += 1
            continue
        if other.incomplete:
            checks.ok(
                f"{label}: analytics shows an agent session of a media it cannot map to a "
                "wrap-up path, or after-call work still open: --lookup analytics reads this "
                "conversation through the Conversations API"
            )
            continue
        problems = _differences(view, other, catalog)
        if problems:
            checks.bad(f"{label}: the two APIs disagree: " + "; ".join(problems))
            disagree += 1
        else:
            comms = _agent_communications(view)
            media = sorted({m for _, m, _ in comms.values()})
            checks.ok(
                f"{label}: the two APIs agree on {len(comms)} agent communication(s) "
                f"({', '.join(media) or 'none'}): ids, media and wrap-up codes"
            )
    if disagree:
        checks.skipped(
            f"{disagree} of {len(ids)} conversation(s) differ: keep --lookup conversations "
            "(the default) on this org",
            not_checked=False,
        )


def _differences(
    api_view: ConversationView, analytics_view: ConversationView, catalog: CodeCatalog | None
) -> list[str]:
    ours = _agent_communications(api_view)
    theirs = _agent_communications(analytics_view)
    problems = []
    only_api = [f"{c} ({ours[c][1]})" for c in ours if c not in theirs]
    only_analytics = [f"{c} ({theirs[c][1]})" for c in theirs if c not in ours]
    if only_api:
        problems.append("only in the Conversations API: " + ", ".join(only_api))
    if only_analytics:
        problems.append("only in analytics: " + ", ".join(only_analytics))
    for cid in (c for c in ours if c in theirs):
        (part_a, media_a, code_a), (part_b, media_b, code_b) = ours[cid], theirs[cid]
        if part_a != part_b:
            problems.append(f"{cid}: participant {part_a} vs {part_b} in analytics")
        if media_a != media_b:
            problems.append(f"{cid}: media {media_a} vs {media_b} in analytics")
        if code_a != code_b:
            problems.append(
                f"{cid}: wrap-up {_code_text(code_a, catalog)} vs "
                f"{_code_text(code_b, catalog)} in analytics"
            )
    return problems


@main.command()
@click.option("--port", type=int, default=8642, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--seed", type=click.Path(exists=True, dir_okay=False), help="Seed JSON file.")
@click.option("--generate", type=click.IntRange(min=0), default=0, help="Synthetic conversations.")
@click.option(
    "--rate-limit",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    help="Requests per token per minute before 429s (0: no limit).",
)
@click.option(
    "--token-ttl",
    type=click.IntRange(min=1),
    default=86400,
    show_default=True,
    help="Seconds an access token lives.",
)
@click.option(
    "--latency-ms",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Milliseconds added to every API request.",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of API requests answered with a 5xx.",
)
@click.option(
    "--random-seed", type=int, default=0, show_default=True, help="Seed of the fault dice."
)
@click.option(
    "--analytics-lag",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds before a wrap-up shows in analytics (as a real org's analytics lags).",
)
@click.option("--org-id", help="The org's id (GET /api/v2/organizations/me); two ids, two orgs.")
@click.option("--org-name", help="The org's name.")
@click.option(
    "--refuse-wrapups",
    metavar="CODE",
    help="Answer every wrap-up POST with 400 and this Genesys error code.",
)
@click.option(
    "--queue-codes-only",
    is_flag=True,
    help="Refuse (400) a wrap-up code that is not in the participant's queue wrap-up codes.",
)
@click.option(
    "--user-token",
    is_flag=True,
    help="Also issue a user's access token and print it as GENESYSCLOUD_ACCESS_TOKEN.",
)
@click.option(
    "--list",
    "list_count",
    type=click.IntRange(min=1),
    help="Print the first N conversations it would serve as CSV (id, media, ended, agent "
    "wrap-up), to build an input file from, and exit.",
)
def emulator(list_count: int | None, **params: Any) -> None:
    """Serve the Genesys Cloud API emulator until interrupted.

    It serves the seed's conversations (c0000001-0000-4000-8000-000000000000 ...) and, with
    --generate N, N more ended ones with ids 9e000000-0000-4000-8000-{i:012x} (i from 0, in
    hexadecimal); --list N prints some.
    """
    from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, serve_forever
    from wrapup_batch.emulator.seed import GENERATED_ID_PATTERN

    _begin_command()
    if list_count is not None:
        _list_conversations(params["seed"], params["generate"], list_count)
        return
    config = EmulatorConfig(
        seed_path=Path(params["seed"]) if params["seed"] else None,
        generate=params["generate"],
        rate_limit=params["rate_limit"],
        token_ttl=params["token_ttl"],
        latency_ms=params["latency_ms"],
        fault_rate=params["fault_rate"],
        random_seed=params["random_seed"],
        host=params["host"],
        port=params["port"],
        analytics_wrapup_lag_s=params["analytics_lag"],
        refuse_wrapups=params["refuse_wrapups"] or "",
        queue_codes_only=params["queue_codes_only"],
    )
    if params["org_id"]:
        config.org_id = params["org_id"]
    if params["org_name"]:
        config.org_name = params["org_name"]

    def ready(handle: EmulatorHandle) -> None:
        click.echo(f"emulator serving {handle.base_url} (Ctrl-C to stop); point the tool at it:")
        for name, value in handle.env().items():
            click.echo(f"export {name}={value}")
        if params["user_token"]:
            click.echo(f"export {ENV_ACCESS_TOKEN}={handle.user_token()}")
        seeded = len(handle.state.seed.conversations)
        generated = (
            f" and {config.generate} generated ones (ended, no wrap-up), ids "
            f"{GENERATED_ID_PATTERN} for i = 0 to {config.generate - 1} in hexadecimal "
            f"(the first: {GENERATED_ID_PATTERN.format(i=0)})"
            if config.generate
            else ""
        )
        click.echo(
            f"conversations: {seeded} of the seed (c0000001-0000-4000-8000-000000000000, ...)"
            f"{generated}; `wrapup-batch emulator --list 20{_generate_flag(config.generate)}` "
            "prints some as CSV"
        )

    with _errors_reported(None, log_option=False):
        try:
            serve_forever(config, on_ready=ready)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise UsageError(
                f"port {config.port} on {config.host} is in use (another emulator, or another "
                "program); stop it, or give another --port"
            ) from None


def _generate_flag(generate: int) -> str:
    return f" --generate {generate}" if generate else ""


def _list_conversations(seed: str | None, generate: int, count: int) -> None:
    from wrapup_batch.emulator import load_seed
    from wrapup_batch.emulator.seed import conversation_listing

    with _errors_reported(None, log_option=False):
        rows = conversation_listing(load_seed(Path(seed) if seed else None, generate), count)
    out = csv.DictWriter(
        sys.stdout, ["conversation_id", "source", "media", "ended", "agent_wrapup"]
    )
    out.writeheader()
    out.writerows(rows)
    if len(rows) < count:
        click.echo(f"{len(rows)} conversation(s) in all; --generate N serves more", err=True)


@main.command()
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default="demo-output",
    show_default=True,
    help="Folder for the demo's ledger and results (emptied first).",
)
def demo(output: str) -> None:
    """Run sample_data/reclassify.csv on the emulator: a dry run, the run, then a rerun."""
    _begin_command()
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
    with _errors_reported(None, log_option=False), _sandbox_settings(30.0, note=False) as settings:
        for title, changes in steps:
            say(f"\n== {title}")
            params = {**base, **changes}
            params["results"] = str(folder / str(changes["results"]))
            results.append(_execute(params, interactive=False, settings=settings))
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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@_LEDGER_OPTION
@click.option("--data-dir", help="Folder for uploaded files (default: beside the ledger).")
@click.option("--sandbox", is_flag=True, help="Batches and sign-in on the built-in emulator.")
@click.option("--no-auth", is_flag=True, help="No sign-in (only on 127.0.0.1/::1/localhost).")
@click.option(
    "--max-upload",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Largest upload, in MB.",
)
@click.option(
    "--login-client-id",
    help="Code Authorization (PKCE) client for sign-in [env WRAPUP_BATCH_LOGIN_CLIENT_ID].",
)
@click.option("--https", is_flag=True, help="Reached over https (a TLS proxy): Secure cookies.")
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    help="Requests per minute of the page's batches.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Workers per batch.",
)
def serve(**params: Any) -> None:
    """Serve the analysts' page: sign in, upload, preview, apply, watch, download results."""
    _begin_command()
    try:
        from wrapup_batch.web.server import ServeOptions
        from wrapup_batch.web.server import serve as serve_page
    except ImportError as exc:
        _fail(f"the page needs the web extra: pip install 'wrapup-batch[web]' ({exc})", 2)

    if params["sandbox"] and not _given(click.get_current_context(), "ledger"):
        params["ledger"] = SANDBOX_LEDGER  # the emulator never shares a real org's ledger
    options = ServeOptions(**{**params, "max_upload": params["max_upload"] * 1024 * 1024})

    def ready(url: str, opts: ServeOptions) -> None:
        click.echo(f"wrapup-batch page: {url}  (ledger {opts.ledger}; Ctrl-C to stop)")
        if opts.sandbox:
            click.echo("sandbox: sign in as analyst@example.com / analyst-password")

    with _errors_reported(None), suppress(KeyboardInterrupt):  # Ctrl-C: the normal way out
        serve_page(options, ready)
    click.echo("wrapup-batch page stopped")


def _sample(name: str) -> Path:
    for folder in (Path("sample_data"), SAMPLE_DATA):
        if (folder / name).is_file():
            return folder / name
    raise UsageError(f"sample_data/{name} not found; run the demo from the project folder")
