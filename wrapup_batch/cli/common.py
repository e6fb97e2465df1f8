"""What every command shares: errors as one line and an exit code, and the option blocks
several commands take (logs, throughput, deadline, lease, ledger).

Library errors (`errors.py`) become one line on stderr and the exit code the design names;
a bad option value (`OptionError`) is shown as click shows a bad parameter; an unexpected
exception becomes a short message pointing at the log, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from wrapup_batch.errors import OptionError, WrapupBatchError
from wrapup_batch.ledger import DEFAULT_LEASE_SECONDS, DEFAULT_LEDGER
from wrapup_batch.logs import REDACT
from wrapup_batch.runner import EXIT_INTERNAL, EXIT_STOPPED

log = logging.getLogger("wrapup_batch")

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    log.error("%s", message, extra={"exit_code": code, "file_only": True})
    click.echo(f"Error: {REDACT(message)}", err=True)
    sys.exit(code)


@contextmanager
def errors_reported(log_file: str | None, *, log_option: bool = True) -> Iterator[None]:
    """Library errors as one line and their exit code. `log_option`: the command has
    --log-file, so that an unexpected error may point at it."""
    try:
        yield
    except OptionError as err:
        raise click.BadParameter(err.detail, param_hint=err.option) from None
    except WrapupBatchError as err:
        fail(str(err), err.exit_code)
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
        fail(f"unexpected {type(exc).__name__}: {exc}{where}", EXIT_INTERNAL)


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user gave this parameter (on the command line), rather than its default."""
    return ctx.get_parameter_source(name) not in (
        None,
        ParameterSource.DEFAULT,
        ParameterSource.DEFAULT_MAP,
    )


def given_names(ctx: click.Context, params: Mapping[str, Any]) -> set[str]:
    """The names of the parameters the user gave (for `options.merge_job`)."""
    return {name for name in params if given(ctx, name)}


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click decorators as one, applied in the order listed (as if stacked)."""

    def apply(fn: F) -> F:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def log_options() -> list[Callable[[F], F]]:
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


def rate_limit_option(help_text: str, *, type_: Any = None) -> Callable[[F], F]:
    """`--rate-limit`, requests per minute, 300 by default."""
    return click.option(
        "--rate-limit",
        type=type_ or click.FloatRange(min=1),
        default=300,
        show_default=True,
        help=help_text,
    )


def concurrency_option(
    help_text: str = "Requests in flight at once.", *, most: int | None = 64
) -> Callable[[F], F]:
    """`--concurrency`, 4 by default."""
    return click.option(
        "--concurrency",
        type=click.IntRange(1, most),
        default=4,
        show_default=True,
        help=help_text,
    )


def throughput_options(rate_help: str) -> Sequence[Callable[[F], F]]:
    """`--rate-limit` and `--concurrency` of a command that applies wrap-ups."""
    return (rate_limit_option(rate_help), concurrency_option())


MAX_RUNTIME_OPTION = click.option(
    "--max-runtime", help="Stop cleanly after this long (45s, 90m, 2h); exit 4."
)
REQUEST_TIMEOUT_OPTION = click.option(
    "--request-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds before one HTTP request is abandoned and retried.",
)
QUIET_OPTION = click.option("--quiet", "-q", is_flag=True, help="No progress output.")
LEASE_OPTION = click.option(
    "--lease",
    "lease",
    type=click.FloatRange(min=5),
    default=DEFAULT_LEASE_SECONDS,
    show_default=True,
    help="Seconds a claim on a conversation lasts without a heartbeat: after a worker dies, "
    "another takes its rows over this long after its last heartbeat.",
)
LEDGER_OPTION = click.option(
    "--ledger",
    default=DEFAULT_LEDGER,
    show_default=True,
    help="The ledger: a SQLite file (or SQLAlchemy URL) that `run` wrote.",
)


def api_options(fn: F) -> F:
    """The options of a command that only reads the org (`codes`, `check`)."""
    return options(
        click.option("--sandbox", is_flag=True, help="Use the built-in emulator, not an org."),
        rate_limit_option("Requests per minute."),
        REQUEST_TIMEOUT_OPTION,
        *log_options(),
    )(fn)
