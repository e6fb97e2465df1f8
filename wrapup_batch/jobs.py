"""Job files: everything `wrapup-batch run` takes, in a TOML file, for scheduled runs.

A job file holds top-level keys named like `run`'s options (with `_` for `-`: `source_url`,
`summary_json`, `max_runtime`, ...; `input` for the INPUT argument) and a `[columns]` table
for the column mapping. `load_job` reads and checks it and returns the values under the names
of `run`'s parameters; the command line decides what it overrides.

- Unknown keys and values of the wrong type are refused with a `UsageError` (exit 2) naming the
  file, the key and the type expected.
- Relative paths (`input`, `query_file`, `ledger`, `results`, `summary_json`, `log_file`, and
  the file of a `sqlite:///` URL in `source_url` or `ledger`) resolve against the job file's
  folder, so a job runs the same from any working directory (cron starts in $HOME).
- Secrets never live in job files: credentials come from the environment, and the path and URL
  keys may name environment variables, `${NAME}` or `${NAME:-default}` (expanded when the file
  is loaded; a variable that is unset or empty, with no default, is an error naming it). A
  password that arrives that way is returned in `Job.secrets`, to be kept out of every output.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from wrapup_batch.errors import UsageError

__all__ = ["COLUMN_NAMES", "JOB_KEYS", "Job", "load_job", "parse_duration"]

COLUMN_NAMES = ("conversation_id", "wrapup_code", "notes", "agent_id")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Job:
    """A loaded job file: `params` under the names of `run`'s parameters."""

    path: Path
    params: dict[str, Any]
    secrets: tuple[str, ...] = ()


def parse_duration(value: str | float, *, allow_zero: bool = False) -> float:
    """Seconds from `45s`, `90m`, `2h` or a plain number of seconds; ValueError otherwise
    (and for zero, unless `allow_zero`)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; use e.g. 45s, 90m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        unit = text[-1:]
        scale = _DURATION_UNITS.get(unit, 1.0)
        number = text[:-1] if unit in _DURATION_UNITS else text
        try:
            seconds = float(number) * scale
        except ValueError:
            raise ValueError(f"{value!r} is not a duration; use e.g. 45s, 90m or 2h") from None
    if allow_zero and seconds == 0:
        return 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{value!r} is not a duration of more than zero")
    return seconds


# -- the keys ---------------------------------------------------------------------------------


class _Bad(Exception):
    """A value of the wrong type or out of range: the message says what was expected."""


class _Context:
    def __init__(self, path: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.folder = path.absolute().parent
        self.env = env
        self.secrets: list[str] = []

    def where(self, key: str) -> str:
        return f"job file {self.path}: key {key!r}"

    def expand(self, key: str, text: str) -> str:
        """`${NAME}` and `${NAME:-default}` replaced from the environment."""

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = self.env.get(name)
            if value:
                return value
            if default is not None:
                return default
            raise UsageError(
                f"{self.where(key)} refers to ${{{name}}}, which is not set in the environment; "
                f"set {name} (for cron or systemd: in the job's environment file), or write "
                f"${{{name}:-default}}"
            )

        expanded = _ENV_REF.sub(substitute, text)
        leftover = _ENV_REF.sub("", text)
        if "${" in leftover:
            raise UsageError(
                f"{self.where(key)} has a malformed ${{...}}: use ${{NAME}} or "
                "${NAME:-default}, where NAME is letters, digits and _"
            )
        return expanded

    def path_of(self, text: str) -> str:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.folder / path
        return os.path.normpath(path)

    def url_of(self, text: str) -> str:
        """A URL with a relative SQLite file made absolute; its password remembered."""
        try:
            url = make_url(text)
        except ArgumentError:
            return text  # the source reports what is wrong with it, masked
        if isinstance(url.password, str) and url.password:
            self.secrets.append(url.password)
        database = url.database
        if (
            url.get_backend_name() == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
            and not os.path.isabs(os.path.expanduser(database))
        ):
            return url.set(database=self.path_of(database)).render_as_string(hide_password=False)
        return text


Convert = Callable[[_Context, str, Any], Any]


def _string(ctx: _Context, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("a string")
    return value


def _path(ctx: _Context, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("a string: a file path (relative to the job file's folder)")
    return ctx.path_of(ctx.expand(key, value))


def _source_url(ctx: _Context, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad('a string: a SQLAlchemy URL such as "sqlite:///crm.sqlite" or "${CRM_DB_URL}"')
    return ctx.url_of(ctx.expand(key, value))


def _ledger(ctx: _Context, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("a string: a SQLite file path or a SQLAlchemy URL")
    text = ctx.expand(key, value)
    return ctx.url_of(text) if "://" in text else ctx.path_of(text)


def _boolean(ctx: _Context, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("a boolean (true or false)")
    return value


def _choice(*choices: str) -> Convert:
    expected = "a string, one of " + ", ".join(f'"{c}"' for c in choices)

    def convert(ctx: _Context, key: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Bad(expected)
        return value

    return convert


def _integer(low: int, high: int) -> Convert:
    def convert(ctx: _Context, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Bad(f"an integer from {low} to {high}")
        return int(value)

    return convert


def _number(low: float, what: str) -> Convert:
    def convert(ctx: _Context, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
            raise _Bad(f"a number ({what}, at least {low:g})")
        return float(value)

    return convert


def _duration(ctx: _Context, key: str, value: Any) -> float:
    expected = 'a duration: a string such as "45s", "90m" or "2h", or a number of seconds'
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(expected)
    try:
        return parse_duration(value)
    except ValueError:
        raise _Bad(expected) from None


def _settle(ctx: _Context, key: str, value: Any) -> float:
    expected = 'a duration: a string such as "30m" or "2h", or a number of seconds (0 allowed)'
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(expected)
    try:
        return parse_duration(value, allow_zero=True)
    except ValueError:
        raise _Bad(expected) from None


def _sheet(ctx: _Context, key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise _Bad("a sheet name (a string) or a 0-based sheet index (an integer)")
    if isinstance(value, int) and value < 0:
        raise _Bad("a sheet name (a string) or a 0-based sheet index (an integer)")
    return str(value)


def _columns(ctx: _Context, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, dict):
        raise _Bad('a table of column = "header", e.g. [columns] then conversation_id = "ConvId"')
    pairs: list[str] = []
    for name, header in value.items():
        if name not in COLUMN_NAMES:
            raise UsageError(
                f"job file {ctx.path}: key 'columns.{name}' is not a column this tool reads; "
                "use conversation_id, wrapup_code, notes or agent_id"
            )
        if not isinstance(header, str) or not header.strip():
            raise UsageError(
                f"job file {ctx.path}: key 'columns.{name}' must be a string (the header of "
                f"that column in the input); got {_describe(header)}"
            )
        pairs.append(f"{name}={header}")
    return tuple(pairs)


@dataclass(frozen=True)
class _Key:
    param: str
    convert: Convert
    shows_value: bool = True  # False for keys whose value may hold a password


#: TOML key -> the `run` parameter it sets and how it is checked.
JOB_KEYS: dict[str, _Key] = {
    "input": _Key("input_path", _path),
    "query": _Key("query", _string),
    "query_file": _Key("query_file", _path),
    "source_url": _Key("source_url", _source_url, shows_value=False),
    "columns": _Key("columns", _columns),
    "encoding": _Key("encoding", _string),
    "sheet": _Key("sheet", _sheet),
    "ledger": _Key("ledger", _ledger, shows_value=False),
    "results": _Key("results", _path),
    "summary_json": _Key("summary_json", _path),
    "dry_run": _Key("dry_run", _boolean),
    "on_existing": _Key("on_existing", _choice("skip", "replace")),
    "participant": _Key("participant", _choice("last-agent", "all-agents")),
    "rate_limit": _Key("rate_limit", _number(1, "requests per minute")),
    "concurrency": _Key("concurrency", _integer(1, 64)),
    "max_runtime": _Key("max_runtime", _duration),
    "limit": _Key("limit", _integer(1, 2**31 - 1)),
    "stop_after_refusals": _Key("stop_after_refusals", _integer(0, 2**31 - 1)),
    "request_timeout": _Key("request_timeout", _number(0.1, "seconds")),
    "lookup": _Key("lookup", _choice("conversations", "analytics")),
    "lookup_batch": _Key("lookup_batch", _integer(1, 100)),
    "analytics_settle": _Key("analytics_settle", _settle),
    "lease": _Key("lease", _number(5, "seconds")),
    "sandbox": _Key("sandbox", _boolean),
    "log_file": _Key("log_file", _path),
    "log_format": _Key("log_format", _choice("text", "json")),
    "quiet": _Key("quiet", _boolean),
    "verbose": _Key("verbose", _boolean),
}


def _describe(value: Any) -> str:
    """A TOML value's type, and the value when it is short and plain."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value:g}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'the string "{shown}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    return type(value).__name__


def _kind(value: Any) -> str:
    """A TOML value's type only (for keys whose value is not shown)."""
    described = _describe(value)
    for prefix, kind in (("the string", "a string"), ("the integer", "an integer")):
        if described.startswith(prefix):
            return kind
    return "a number" if described.startswith("the number") else described


def load_job(path: Path, env: Mapping[str, str] | None = None) -> Job:
    """Read and check a job file; UsageError (exit 2) names the file, the key and the type."""
    environment = os.environ if env is None else env
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"job file {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"job file {path}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"job file {path}: is not valid TOML: {exc}") from None
    ctx = _Context(path, environment)
    params: dict[str, Any] = {}
    for key, value in data.items():
        spec = JOB_KEYS.get(key)
        if spec is None:
            raise UsageError(_unknown_key(path, key))
        try:
            params[spec.param] = spec.convert(ctx, key, value)
        except _Bad as bad:
            got = _describe(value) if spec.shows_value else _kind(value)
            raise UsageError(f"{ctx.where(key)} must be {bad}; got {got}") from None
    if "query" in params and "query_file" in params:
        raise UsageError(f"job file {path}: give either query or query_file, not both")
    if "input_path" in params and ("query" in params or "query_file" in params):
        raise UsageError(f"job file {path}: give either input or query/query_file, not both")
    return Job(path=path, params=params, secrets=tuple(ctx.secrets))


def _unknown_key(path: Path, key: str) -> str:
    message = f"job file {path}: unknown key {key!r}"
    close = difflib.get_close_matches(key.replace("-", "_"), list(JOB_KEYS), n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {close[0]!r}?"
    return message + " (known keys: " + ", ".join(sorted(JOB_KEYS)) + ")"
