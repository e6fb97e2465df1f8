"""A run's settings from plain parameters, whichever face gathered them.

`run_options` turns parameters (the command line's names: `rate_limit`, `max_runtime` "90m",
`analytics_settle` "1h" ...) into `RunOptions`; `source_spec` says where the rows come from
(a file, or a query on a database); `merge_job` fills in a `--job` file's parameters under
those the person gave (`given`: the names they set themselves, not defaults); `ledger_for`
picks the ledger a run uses (a `--sandbox` run never uses a real org's). A value that cannot
be used is an `OptionError` naming its option.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from wrapup_batch.errors import OptionError, UsageError
from wrapup_batch.jobs import load_job, parse_duration
from wrapup_batch.ledger import DEFAULT_LEASE_SECONDS, DEFAULT_LEDGER
from wrapup_batch.logs import REDACT
from wrapup_batch.refusals import DEFAULT_STOP_AFTER_REFUSALS
from wrapup_batch.runner import RunOptions
from wrapup_batch.sources import SourceSpec

#: `--sandbox` runs keep their own ledger: its `applied` rows are true of the emulator only.
SANDBOX_LEDGER = "wrapup-sandbox-ledger.db"
#: The parameters naming a run's input; one given by the person replaces the job's as a whole.
SOURCE_PARAMS = ("input_path", "query", "query_file")
#: The columns `--column NAME=HEADER` may map.
MAPPABLE_COLUMNS = ("conversation_id", "wrapup_code", "notes", "agent_id")


def max_runtime(value: str | float | None) -> float | None:
    """`--max-runtime` in seconds (45s, 90m, 2h); None for no deadline."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise OptionError("--max-runtime", str(exc)) from None


def analytics_settle(value: str | float) -> float:
    """`--analytics-settle` in seconds (0 allowed)."""
    try:
        return parse_duration(value, allow_zero=True)
    except ValueError as exc:
        raise OptionError("--analytics-settle", str(exc)) from None


def parse_columns(values: Sequence[str]) -> dict[str, str]:
    """`--column NAME=HEADER` values as {canonical name: header}."""
    mapping: dict[str, str] = {}
    for value in values:
        name, sep, header = value.partition("=")
        name = name.strip().lower()
        if not sep or not header.strip():
            raise OptionError(
                "--column", f"{value!r}: use NAME=HEADER, e.g. conversation_id=ConvId"
            )
        if name not in MAPPABLE_COLUMNS:
            raise OptionError(
                "--column",
                f"{name!r} is not a column this tool reads; use conversation_id, wrapup_code, "
                "notes or agent_id",
            )
        mapping[name] = header.strip()
    return mapping


def run_options(params: Mapping[str, Any]) -> RunOptions:
    """RunOptions from parameters by their command-line names; a missing one keeps its
    default (`work` gives only its own: rate limit, concurrency, deadline, timeout, lease)."""
    defaults = RunOptions()
    return RunOptions(
        dry_run=params.get("dry_run", defaults.dry_run),
        on_existing=params.get("on_existing", defaults.on_existing),
        participant=params.get("participant", defaults.participant),
        rate_limit=params.get("rate_limit", defaults.rate_limit),
        concurrency=params.get("concurrency", defaults.concurrency),
        max_runtime=max_runtime(params.get("max_runtime")),
        request_timeout=params.get("request_timeout", defaults.request_timeout),
        lookup=params.get("lookup", defaults.lookup),
        lookup_batch=params.get("lookup_batch", defaults.lookup_batch),
        analytics_settle=analytics_settle(params.get("analytics_settle", "1h")),
        stop_after_refusals=params.get("stop_after_refusals", DEFAULT_STOP_AFTER_REFUSALS),
        limit=params.get("limit"),
        lease_seconds=params.get("lease") or DEFAULT_LEASE_SECONDS,
    )


def source_spec(
    input_path: str | None,
    query: str | None,
    query_file: str | None,
    source_url: str | None,
    columns: Sequence[str],
    encoding: str | None,
    sheet: str | None,
) -> SourceSpec:
    """Where a run's rows come from: an INPUT file, or `--query`/`--query-file` on
    `--source-url`; UsageError when the combination does not name exactly one."""
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
        columns=parse_columns(columns),
    )


def merge_job(params: Mapping[str, Any], given: Collection[str]) -> dict[str, Any]:
    """The parameters with those of `params["job"]` (a TOML job file) filled in where the
    person gave none; `given` holds the names of the parameters they gave themselves.

    An input given by the person (INPUT, --query or --query-file) replaces the job's input as
    a whole (an INPUT file also drops the job's `source_url`); `--column` mappings are added
    to the job's `[columns]`. The job's secrets (URL passwords) are redacted from then on.
    """
    if not params.get("job"):
        return dict(params)
    job = load_job(Path(params["job"]))
    for secret in job.secrets:
        REDACT.add(secret)
    merged = dict(params)
    own_source = any(name in given for name in SOURCE_PARAMS)
    for name, value in job.params.items():
        if name == "columns":
            merged["columns"] = (*value, *params.get("columns", ()))
        elif not (
            name in given
            or (own_source and name in SOURCE_PARAMS)
            or (name == "source_url" and "input_path" in given)
        ):
            merged[name] = value
    return merged


def ledger_for(params: Mapping[str, Any], *, given: bool) -> str:
    """The ledger a run uses. `--ledger` given by the person, as given (`given`); otherwise
    the job's ledger or the default, except that a `--sandbox` run never uses those: its
    applied rows are true of the emulator only. It gets `wrapup-sandbox-ledger.db`, or the
    job's ledger file with `-sandbox` added to its name (a URL is used as given: its org is
    checked)."""
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
