"""Logging for every face of the tool: redaction, the run-id context, text and JSON lines.

Every record passes through `REDACT` (the client secret, URL passwords, bearer tokens and
`access_token` values become `***`) before it is written anywhere. `setup_logging` sends
warnings (info with `verbose`) to stderr, one line each, and, with a log file, info (debug
with `verbose`) there as text or JSON lines (`log_format`), tracebacks included. `log_retry`
is the API client's retry notice as a log record. Nothing here imports click or a web
framework.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from wrapup_batch.errors import RateLimitedError, UsageError

if TYPE_CHECKING:
    from wrapup_batch.genesys import RetryNotice

#: The logger every record of the tool's own goes through (its name shows in text log lines).
log = logging.getLogger("wrapup_batch")

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


class Redactor:
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


#: The process's redactor: what a command learns is secret, every log line and message hides.
REDACT = Redactor()


class LogContext(logging.Filter):
    """Stamps the current run id on records that do not carry one."""

    run_id: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None and LogContext.run_id is not None:
            record.run_id = LogContext.run_id
        return True


class _NotFileOnly(logging.Filter):
    """Keeps off the console what the console already shows another way (the Error: line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


class _ConsoleFormatter(logging.Formatter):
    """The console gets one line per record; tracebacks go only to the log file."""

    def format(self, record: logging.LogRecord) -> str:
        return REDACT(f"{record.levelname} {record.getMessage()}")


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        run_id = getattr(record, "run_id", None)
        if run_id is not None:
            text += f" [run {run_id}]"
        return REDACT(text)


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
            "message": REDACT(record.getMessage()),
        }
        for name in LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = REDACT(value) if isinstance(value, str) else value
        if self.tracebacks and record.exc_info:
            data["traceback"] = REDACT(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False, default=str)


_OUR_HANDLERS: list[logging.Handler] = []


def begin_command() -> None:
    """A command's start: no secret known yet (the process may run several), console logs."""
    REDACT.secrets.clear()
    setup_logging(None, False)


def setup_logging(log_file: str | None, verbose: bool, log_format: str = "text") -> None:
    """Console: warnings (info with `verbose`), one line each. `log_file`: info (debug with
    `verbose`). `log_format` "json": JSON lines on both. UsageError when the file cannot be
    written."""
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
    LogContext.run_id = None
    for handler in handlers:
        handler.addFilter(LogContext())
        root.addHandler(handler)
        _OUR_HANDLERS.append(handler)
    # The lowest level any handler takes: records nobody writes are not even built (the runner
    # logs every row's outcome at info, which costs nothing without --log-file or -v).
    root.setLevel(min(handler.level for handler in handlers))
    for noisy in ("urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_CONVERSATION_IN_PATH = re.compile(r"/conversations/(?:[a-z]+/)?([0-9a-fA-F-]{36})")


def log_retry(notice: RetryNotice) -> None:
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
