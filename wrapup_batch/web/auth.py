"""Sign-in with Genesys Cloud, sessions and CSRF for the analysts' page.

- Sign-in: the authorization-code grant with PKCE (`wrapup_batch.signin`): `/login` sends the
  browser to the org's login host, `/auth/callback` trades the code for the user's identity and
  permissions; the user's token is not kept.
- Sessions: Starlette's signed cookie (itsdangerous), HttpOnly, SameSite=Lax, Secure when the
  page is served over https, expiring after `session_hours` (checked from the signed stamp).
- CSRF: every POST carries the session's token, as the form field `csrf_token` or the header
  `X-CSRF-Token`; a POST without it is refused (403) before anything happens.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from wrapup_batch.app import User
from wrapup_batch.errors import AuthError
from wrapup_batch.signin import authorize_url, exchange_code, new_verifier


@dataclass(frozen=True)
class AuthSettings:
    """How people sign in: against `api_host`'s login host with the PKCE client `client_id`;
    `no_auth` (loopback only) signs everyone in as `local` without asking."""

    api_host: str
    client_id: str
    no_auth: bool = False
    local: User | None = None
    session_hours: float = 8.0


def _now() -> float:
    return time.time()


def current_user(request: Request) -> User | None:
    settings: AuthSettings = request.app.state.auth
    if settings.no_auth and settings.local is not None:
        ensure_csrf(request)
        return settings.local
    data = request.session.get("user")
    if not isinstance(data, dict):
        return None
    if float(request.session.get("expires", 0)) < _now():
        request.session.clear()
        return None
    return User(str(data["id"]), str(data["name"]), bool(data["can_apply"]))


def ensure_csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 20:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def checked_form(request: Request) -> FormData:
    """The POST's form, after its CSRF token was checked (403 when missing or wrong)."""
    form = await request.form()
    expected = request.session.get("csrf")
    given = request.headers.get("x-csrf-token") or form.get("csrf_token")
    if (
        not isinstance(expected, str)
        or not isinstance(given, str)
        or not secrets.compare_digest(expected.encode(), given.encode())
    ):
        await form.close()
        raise HTTPException(
            403,
            "This form has expired or did not come from this page (missing CSRF token): "
            "reload the page and try again.",
        )
    return form


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host) is followed after sign-in."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


async def login(request: Request) -> Response:
    settings: AuthSettings = request.app.state.auth
    if settings.no_auth:
        return RedirectResponse("/", 303)
    verifier = new_verifier()
    state = secrets.token_urlsafe(24)
    request.session["pkce"] = {
        "verifier": verifier,
        "state": state,
        "next": _safe_next(request.query_params.get("next")),
    }
    redirect_uri = str(request.url_for("auth_callback"))
    return RedirectResponse(
        authorize_url(settings.api_host, settings.client_id, redirect_uri, verifier, state), 303
    )


async def auth_callback(request: Request) -> Response:
    settings: AuthSettings = request.app.state.auth
    pending: Any = request.session.pop("pkce", None)
    code = request.query_params.get("code")
    if (
        not isinstance(pending, dict)
        or not code
        or not secrets.compare_digest(
            str(pending.get("state", "")), request.query_params.get("state", "")
        )
    ):
        raise HTTPException(
            400, "This sign-in link is not the one this page started; sign in again."
        )
    redirect_uri = str(request.url_for("auth_callback"))
    try:
        who = await run_in_threadpool(
            exchange_code,
            settings.api_host,
            settings.client_id,
            str(pending["verifier"]),
            code,
            redirect_uri,
        )
    except AuthError as err:
        raise HTTPException(401, str(err)) from None
    request.session.clear()
    request.session["user"] = {"id": who.id, "name": who.name, "can_apply": who.can_apply}
    request.session["expires"] = _now() + settings.session_hours * 3600
    ensure_csrf(request)
    return RedirectResponse(_safe_next(str(pending.get("next") or "/")), 303)


async def logout(request: Request) -> Response:
    await checked_form(request)
    request.session.clear()
    return RedirectResponse("/signed-out", 303)
