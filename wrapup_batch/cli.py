"""The command line: the only module that imports click and tqdm.

Library errors (`errors.py`) become one line on stderr and the exit code the design names;
an unexpected exception becomes a short message pointing at the log, never a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
from tqdm import tqdm

from wrapup_batch import __version__
from wrapup_batch.errors import UsageError, WrapupBatchError
from wrapup_batch.genesys import ApiSettings, GenesysClient, settings_from_env
from wrapup_batch.ledger import DEFAULT_LEDGER, Ledger
from wrapup_batch.report import format_summary, write_results, write_summary_json
from wrapup_batch.runner import Progress, RunOptions, RunResult, run_batch
from wrapup_batch.sources import SourceSpec
from wrapup_batch.throttle import Throttle

log = logging.getLogger("wrapup_batch")

F = TypeVar("F", bound=Callable[..., Any])

SAMPLE_DATA = Path(__file__).resolve().parent.parent / "sample_data"


# -- shared plumbing ------------------------------------------------------------------------------


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _errors_reported(log_file: str | None) -> Iterator[None]:
    try:
        yield
    except WrapupBatchError as err:
        _fail(str(err), err.exit_code)
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except Exception as exc:  # the last line of defence: a short message, the details logged
        log.exception("unexpected error")
        where = f"; details in {log_file}" if log_file else "; rerun with --log-file F for details"
        _fail(f"unexpected {type(exc).__name__}: {exc}{where}", 1)


class _NoTraceback(logging.Formatter):
    """The console gets one line per record; tracebacks go only to --log-file."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname} {record.getMessage()}"


def _setup_logging(log_file: str | None, verbose: bool) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(_NoTraceback())
    root.addHandler(console)
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    for noisy in ("urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parse_duration(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    scale = units.get(text[-1:], 1.0)
    try:
        seconds = float(text[:-1] if text[-1:] in units else text) * scale
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a duration; use e.g. 45s, 90m or 2h", param_hint="--max-runtime"
        ) from None
    if seconds <= 0:
        raise click.BadParameter("must be more than zero", param_hint="--max-runtime")
    return seconds


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


class _ProgressReporter:
    """A tqdm bar on a terminal; otherwise a log line every 10 seconds."""

    def __init__(self, enabled: bool, interactive: bool) -> None:
        self.enabled = enabled
        self.interactive = interactive
        self.bar: tqdm[Any] | None = None
        self.last_line = 0.0
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
                self._line(f"read {progress.done} rows")

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
            self._line(
                f"{progress.done}/{progress.total} rows, applied {counts.get('applied', 0)}, "
                f"failed {failed}"
            )

    def _line(self, text: str) -> None:
        now = time.monotonic()
        if now - self.last_line >= 10.0:
            self.last_line = now
            click.echo(text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def _sandbox_settings(timeout: float) -> Iterator[ApiSettings]:
    """Settings for the emulator started in-process, seeded from the sample data."""
    from wrapup_batch.emulator import EmulatorConfig, start_emulator

    with start_emulator(EmulatorConfig()) as emulator:
        yield ApiSettings(
            host=emulator.base_url,
            client_id=emulator.client_id,
            client_secret=emulator.client_secret,
            timeout=timeout,
        )


@contextmanager
def _api_settings(
    sandbox: bool, timeout: float, given: ApiSettings | None
) -> Iterator[ApiSettings]:
    """The API to talk to: given, the in-process emulator (--sandbox), or the environment's org."""
    if given is not None:
        yield given
    elif sandbox:
        with _sandbox_settings(timeout) as settings:
            yield settings
    else:
        yield settings_from_env(os.environ, timeout=timeout)


# -- the commands --------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wrapup-batch")
def main() -> None:
    """Bulk-apply Genesys Cloud wrap-up codes: throttled, resumable, every row recorded."""


def _run_options(fn: F) -> F:
    options = [
        click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path()),
        click.option("--query", help="SQL query giving conversation_id and wrapup_code columns."),
        click.option(
            "--query-file", type=click.Path(), help="A file holding the SQL query to run."
        ),
        click.option("--source-url", help="SQLAlchemy URL of the database to query."),
        click.option(
            "--ledger",
            default=DEFAULT_LEDGER,
            show_default=True,
            help="SQLite file (or SQLAlchemy URL) recording every row's outcome.",
        ),
        click.option("--results", type=click.Path(), help="Write the results CSV here."),
        click.option("--summary-json", type=click.Path(), help="Write the run summary as JSON."),
        click.option("--dry-run", is_flag=True, help="Read and plan; write nothing to Genesys."),
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
        click.option("--sandbox", is_flag=True, help="Run against the built-in emulator."),
        click.option("--log-file", type=click.Path(), help="Write a detailed log here."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
        click.option("--verbose", "-v", is_flag=True, help="Log retries and decisions."),
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
def run(**params: Any) -> None:
    """Apply the wrap-up codes listed in INPUT (or returned by --query)."""
    _setup_logging(params["log_file"], params["verbose"])
    with _errors_reported(params["log_file"]):
        result = _execute(params)
    sys.exit(result.exit_code)


def _execute(
    params: dict[str, Any],
    *,
    interactive: bool | None = None,
    settings: ApiSettings | None = None,
) -> RunResult:
    spec = _source_spec(
        params["input_path"],
        params["query"],
        params["query_file"],
        params["source_url"],
        params["columns"],
        params["encoding"],
        params["sheet"],
    )
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
    )
    tty = sys.stderr.isatty() if interactive is None else interactive
    reporter = _ProgressReporter(enabled=not params["quiet"], interactive=tty)
    stop = threading.Event()
    ledger = Ledger.open(params["ledger"])
    try:
        with (
            _api_settings(params["sandbox"], options.request_timeout, settings) as api,
            _stop_on_signals(stop),
        ):

            def client_factory(throttle: Throttle) -> GenesysClient:
                return GenesysClient(api, throttle=throttle, pool_size=options.concurrency + 2)

            result = run_batch(ledger, spec, options, client_factory, progress=reporter, stop=stop)
        reporter.close()
        if params["results"]:
            write_results(ledger, result.run_id, Path(params["results"]))
        if params["summary_json"]:
            write_summary_json(Path(params["summary_json"]), result.summary)
    finally:
        reporter.close()
        ledger.close()
    click.echo(format_summary(result.summary), err=True)
    if params["results"]:
        click.echo(f"  results: {params['results']}", err=True)
    return result


@main.command()
@click.option("--port", type=int, default=8642, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--seed", type=click.Path(exists=True, dir_okay=False), help="Seed JSON file.")
@click.option("--generate", type=click.IntRange(min=0), default=0, help="Synthetic conversations.")
@click.option("--rate-limit", type=click.IntRange(min=0), default=300, show_default=True)
@click.option("--token-ttl", type=click.IntRange(min=1), default=86400, show_default=True)
@click.option("--latency-ms", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--fault-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--random-seed", type=int, default=0, show_default=True)
def emulator(**params: Any) -> None:
    """Serve the Genesys Cloud API emulator until interrupted."""
    from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, serve_forever

    _setup_logging(None, False)
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
    )

    def ready(handle: EmulatorHandle) -> None:
        click.echo(f"emulator serving {handle.base_url} (Ctrl-C to stop); point the tool at it:")
        for name, value in handle.env().items():
            click.echo(f"export {name}={value}")

    with _errors_reported(None):
        serve_forever(config, on_ready=ready)


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
    _setup_logging(None, False)
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
        "sandbox": True,
        "quiet": True,
        "log_file": None,
    }
    steps = (
        ("1. dry run: what would change", {"dry_run": True, "results": "dry-run.csv"}),
        ("2. the run", {"results": "run.csv"}),
        (
            "3. the rerun: no POSTs; only rows not fine are looked up again",
            {"results": "rerun.csv"},
        ),
    )
    # One emulator for every step, so that the rerun sees what the run wrote.
    with _errors_reported(None), _sandbox_settings(30.0) as settings:
        for title, changes in steps:
            click.echo(f"\n== {title}  ({csv_path.name})", err=True)
            params = {**base, **changes}
            params["results"] = str(folder / str(changes["results"]))
            _execute(params, interactive=False, settings=settings)
    click.echo(f"\nledger and results CSVs in {folder}/", err=True)


def _sample(name: str) -> Path:
    for folder in (Path("sample_data"), SAMPLE_DATA):
        if (folder / name).is_file():
            return folder / name
    raise UsageError(f"sample_data/{name} not found; run the demo from the project folder")
