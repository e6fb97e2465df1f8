"""Running a batch for a face (the command line, the page): the one way a run starts.

`prepare` checks a run's parameters before anything is created (the input exists, the output
files can be written, the options parse); `execute` opens the ledger, reaches the API (the
given settings, the in-process emulator for `--sandbox`, or the environment's org), starts the
run or the revert (`start`, which the page calls too) with a progress callback and a stop
event, then writes the results and summary files; a file that cannot be written after the work
is reported in `Outcome.unwritten`, the run's exit code unchanged. `join` is `work --run N`.

The SDK is imported by `new_client` only, the first time a run needs the API: `status`,
`report` and a rerun with nothing left to do never pay for it. Nothing here prints, or imports
click, tqdm or a web framework.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from wrapup_batch.api_settings import PERMISSIONS, ApiSettings, settings_from_env
from wrapup_batch.codes import WrapupCode
from wrapup_batch.errors import AuthError, RequestRejectedError, UsageError
from wrapup_batch.ledger import Ledger
from wrapup_batch.logs import REDACT, LogContext, log_retry
from wrapup_batch.options import run_options, source_spec
from wrapup_batch.report import check_writable, write_results, write_summary_json
from wrapup_batch.runner import (
    ClientFactory,
    ProgressCallback,
    RunHooks,
    RunOptions,
    RunResult,
    join_run,
    revert_batch,
    run_batch,
)
from wrapup_batch.sources import SourceSpec, check_source, describe_source
from wrapup_batch.throttle import Throttle

if TYPE_CHECKING:  # the SDK is imported only when a run needs the API (see new_client)
    from wrapup_batch.genesys import GenesysClient

log = logging.getLogger("wrapup_batch")

#: What to tell the person when `--sandbox` starts an emulator for one command.
SANDBOX_NOTE = (
    "sandbox: a fresh emulator, seeded from sample_data/emulator_seed.json (conversations "
    "c0000001-0000-4000-8000-000000000000 to c0000031-...); it keeps nothing after this "
    "command: the next --sandbox call (a rerun, a revert) starts from the seed again"
)

Notice = Callable[[str], None]


# -- the API ------------------------------------------------------------------------------------


@contextmanager
def sandbox_settings(timeout: float, *, note: Notice | None = None) -> Iterator[ApiSettings]:
    """Settings for an emulator started in-process, seeded from the sample data, for as long
    as the block lasts; `note` hears SANDBOX_NOTE once it serves."""
    from wrapup_batch.emulator import EmulatorConfig, start_emulator

    with start_emulator(EmulatorConfig()) as emulator:
        if note is not None:
            note(SANDBOX_NOTE)
        yield ApiSettings(
            host=emulator.base_url,
            client_id=emulator.client_id,
            client_secret=emulator.client_secret,
            timeout=timeout,
        )


@contextmanager
def api_settings(
    sandbox: bool, timeout: float, given: ApiSettings | None = None, *, note: Notice | None = None
) -> Iterator[ApiSettings]:
    """The API to talk to: given, the in-process emulator (`sandbox`), or the environment's org."""
    if given is not None:
        yield given
    elif sandbox:
        with sandbox_settings(timeout, note=note) as settings:
            yield settings
    else:
        yield settings_from_env(os.environ, timeout=timeout)


def new_client(api: ApiSettings, throttle: Throttle, pool_size: int = 8) -> GenesysClient:
    """The SDK client, its retries logged. The SDK is imported here, the first time a command
    needs the API: the import costs ~2.5 s and ~220 MB, which `status`, `report` and a rerun
    with nothing left to do never pay (benchmarks/RESULTS.md, target 4)."""
    from wrapup_batch.genesys import GenesysClient

    return GenesysClient(api, throttle=throttle, pool_size=pool_size, on_retry=log_retry)


def hide_secrets(api: ApiSettings) -> None:
    """From now on, the client secret and the access token are *** in every log and message."""
    REDACT.add(api.client_secret)
    REDACT.add(api.access_token)


def client(api: ApiSettings, rate_limit: float) -> GenesysClient:
    """A client of its own throttle, for a command's few requests (`codes`, `check`)."""
    hide_secrets(api)
    return new_client(api, Throttle(rate_limit))


def read_codes(api_client: GenesysClient) -> list[WrapupCode]:
    """Every wrap-up code; a 403 is an AuthError naming the permission (exit 3)."""
    try:
        return api_client.list_wrapup_codes()
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


# -- starting a run -----------------------------------------------------------------------------


def start(
    ledger: Ledger,
    options: RunOptions,
    client_factory: ClientFactory,
    *,
    spec: SourceSpec | None = None,
    revert_of: int | None = None,
    **hooks: Unpack[RunHooks],
) -> RunResult:
    """Run the batch read from `spec`, or revert run `revert_of`, on an open ledger."""
    if spec is not None:
        return run_batch(ledger, spec, options, client_factory, **hooks)
    if revert_of is None:
        raise ValueError("start needs a source spec or the run to revert")
    return revert_batch(ledger, revert_of, options, client_factory, **hooks)


@dataclass(frozen=True)
class Batch:
    """A run to execute, checked: its ledger, options, input (or the run it reverts), and
    the files to write after it."""

    ledger: str
    options: RunOptions
    spec: SourceSpec | None = None
    revert_of: int | None = None
    sandbox: bool = False
    results: Path | None = None
    summary_json: Path | None = None

    @property
    def description(self) -> str:
        if self.spec is not None:
            return describe_source(self.spec)
        return f"revert of run {self.revert_of}"


def prepare(params: Mapping[str, Any], *, revert_of: int | None = None) -> Batch:
    """A Batch from parameters by their command-line names, checked before anything is
    created: the input (a mistyped path: exit 2 before the ledger exists), then the output
    files, then the options."""
    spec: SourceSpec | None = None
    if revert_of is None:
        spec = source_spec(
            params["input_path"],
            params["query"],
            params["query_file"],
            params["source_url"],
            params["columns"],
            params["encoding"],
            params["sheet"],
        )
        check_source(spec)
    results = Path(params["results"]) if params.get("results") else None
    summary_json = Path(params["summary_json"]) if params.get("summary_json") else None
    if results is not None:
        check_writable(results, "--results")
    if summary_json is not None:
        check_writable(summary_json, "--summary-json", in_place=True)
    return Batch(
        ledger=params["ledger"],
        options=run_options(params),
        spec=spec,
        revert_of=revert_of,
        sandbox=bool(params.get("sandbox")),
        results=results,
        summary_json=summary_json,
    )


@dataclass
class Outcome:
    """What a face reports after `execute`: the run's result, the ledger it is recorded in,
    whether the results file was written, and the files that could not be (their messages)."""

    result: RunResult
    ledger_display: str
    results_written: bool = False
    unwritten: list[str] = field(default_factory=list)


def execute(
    batch: Batch,
    *,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    settings: ApiSettings | None = None,
    note: Notice | None = None,
    during: AbstractContextManager[Any] | None = None,
) -> Outcome:
    """Run (or revert) a prepared batch and write its files.

    `settings`: the API to use (default: the emulator for a sandbox batch, else the
    environment's org); `note` hears what the person should know before the work (the
    sandbox's note); `during` is entered around the work once the API is known (the command
    line's Ctrl-C handling)."""
    LogContext.run_id = None
    ledger = Ledger.open(batch.ledger)
    try:
        with (
            api_settings(batch.sandbox, batch.options.request_timeout, settings, note=note) as api,
            during if during is not None else nullcontext(),
        ):
            hide_secrets(api)
            log.info(
                "run starting: %s, ledger %s",
                batch.description,
                ledger.display,
                extra={"source": batch.description},
            )

            def client_factory(throttle: Throttle) -> GenesysClient:
                current = ledger.get_run()  # the last run: this one, unless another started since
                LogContext.run_id = current.id if current is not None else None
                return new_client(api, throttle, pool_size=batch.options.concurrency + 2)

            result = start(
                ledger,
                batch.options,
                client_factory,
                spec=batch.spec,
                revert_of=batch.revert_of,
                progress=progress,
                stop=stop,
                api=api,
            )
        LogContext.run_id = result.run_id
        outcome = Outcome(result, ledger.display)
        _write_files(batch, ledger, outcome)
    finally:
        ledger.close()
    log.info(
        "run %d: %s",
        result.run_id,
        result.message,
        extra={"run_id": result.run_id, "exit_code": result.exit_code, "counts": result.counts},
    )
    for text in outcome.unwritten:
        log.error("%s", text, extra={"file_only": True})
    return outcome


def _write_files(batch: Batch, ledger: Ledger, outcome: Outcome) -> None:
    """The results and summary files. Checked writable before the work; a failure now (a full
    disk) is kept in `outcome.unwritten`, reported after the summary, the exit code the work's."""
    if batch.results is not None:
        try:
            write_results(ledger, outcome.result.run_id, batch.results)
            outcome.results_written = True
        except UsageError as err:
            outcome.unwritten.append(str(err))
    if batch.summary_json is not None:
        try:
            write_summary_json(batch.summary_json, outcome.result.summary)
        except UsageError as err:
            outcome.unwritten.append(str(err))


def join(
    ledger_target: str,
    run_id: int,
    options: RunOptions,
    *,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    summary_json: Path | None = None,
    during: AbstractContextManager[Any] | None = None,
) -> RunResult:
    """Work on run `run_id` of an existing ledger as one more worker, with the environment's
    OAuth client, until none of its rows is left; then write this worker's summary."""
    LogContext.run_id = run_id
    ledger = Ledger.open(ledger_target, create=False)
    try:
        with (
            api_settings(False, options.request_timeout) as api,
            during if during is not None else nullcontext(),
        ):
            REDACT.add(api.client_secret)
            log.info("worker joining run %d, ledger %s", run_id, ledger.display)

            def client_factory(throttle: Throttle) -> GenesysClient:
                return new_client(api, throttle, pool_size=options.concurrency + 2)

            result = join_run(
                ledger, run_id, options, client_factory, progress=progress, stop=stop, api=api
            )
        if summary_json is not None:
            write_summary_json(summary_json, result.summary)
    finally:
        ledger.close()
    log.info(
        "worker on run %d: %s",
        result.run_id,
        result.message,
        extra={"run_id": result.run_id, "exit_code": result.exit_code, "counts": result.counts},
    )
    return result
