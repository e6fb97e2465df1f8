"""Templates: Jinja2 with autoescaping on, so that everything shown is escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from wrapup_batch.models import FINE, NOT_FINE, UNFINISHED, Status

TEMPLATES = Path(__file__).parent / "templates"

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _kind(status: str) -> str:
    try:
        found = Status(status)
    except ValueError:
        return "other"
    if found in FINE:
        return "fine"
    if found in UNFINISHED:
        return "unfinished"
    return "bad" if found in NOT_FINE else "other"


def _when(stamp: str | None) -> str:
    """An ISO time from the ledger as `2026-12-03 09:59 UTC`."""
    if not stamp:
        return "—"
    return stamp[:16].replace("T", " ") + " UTC"


_env.filters["duration"] = _duration
_env.filters["when"] = _when
_env.filters["kind"] = _kind
_env.filters["num"] = lambda n: f"{int(n):,}"


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    from wrapup_batch.web.auth import current_user, ensure_csrf

    user = current_user(request)
    full = {
        "request": request,
        "user": user,
        "csrf": ensure_csrf(request),
        "no_auth": request.app.state.auth.no_auth,
        "sandbox": request.app.state.sandbox,
        **context,
    }
    return HTMLResponse(_env.get_template(name).render(full), status_code=status)
