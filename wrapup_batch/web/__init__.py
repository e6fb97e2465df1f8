"""The analysts' page (`wrapup-batch serve`): the only package that imports the web framework.

Starlette, Jinja2 templates, htmx (a pinned copy in `static/`, no CDN) and server-sent events
for progress; no build chain. `create_app(workspace, auth)` builds the ASGI application over
an `app.Workspace`; `server.serve` runs it with uvicorn.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wrapup_batch.app import PageError, Workspace
from wrapup_batch.web import pages
from wrapup_batch.web.auth import AuthSettings, auth_callback, current_user, login, logout
from wrapup_batch.web.render import render

__all__ = ["AuthSettings", "create_app"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
_OPEN_PATHS = ("/login", "/auth/callback", "/static/", "/signed-out", "/healthz")
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class _Gate(BaseHTTPMiddleware):
    """Nobody but a signed-in user past this point (the sign-in routes and static files aside);
    security headers on every answer."""

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if not path.startswith(_OPEN_PATHS) and current_user(request) is None:
            if request.method == "GET" and not path.startswith("/api/") and "events" not in path:
                target = path + (f"?{request.url.query}" if request.url.query else "")
                response: Response = RedirectResponse(f"/login?next={_quote(target)}", 303)
            else:
                response = JSONResponse({"error": "sign in first"}, status_code=401)
        else:
            response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if path.startswith(("/runs", "/api/")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="/")


async def _page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    return _error(request, exc.status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(request, exc.status_code, str(exc.detail))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("error on %s %s: %s", request.method, request.url.path, exc, exc_info=exc)
    return _error(
        request, 500, "Something went wrong on the server; the server log has the details."
    )


_TITLES = {
    400: "Cannot do that",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Busy",
    411: "Length required",
    413: "File too large",
}


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/") or "application/json" in request.headers.get(
        "accept", ""
    ):
        return JSONResponse({"error": message}, status_code=status)
    title = _TITLES.get(status, "Something went wrong")
    return render(request, "error.html", {"title": title, "message": message}, status)


def create_app(
    workspace: Workspace,
    auth: AuthSettings,
    *,
    session_secret: str | None = None,
    https: bool = False,
    sandbox: bool = False,
    sse_interval: float = 1.0,
) -> Starlette:
    """The page over `workspace`. `session_secret` signs the session cookies (random when not
    given: sessions then end when the server restarts); `https` marks the cookie Secure."""
    p = pages
    routes = [
        Route("/", p.home),
        Route("/uploads", p.post_upload, methods=["POST"]),
        Route("/runs", p.history),
        Route("/runs/{id}/preview", p.preview),
        Route("/runs/{id}/preview/progress", p.preview_progress),
        Route("/runs/{id}/sheet", p.post_sheet, methods=["POST"]),
        Route("/runs/{id}/columns", p.post_columns, methods=["POST"]),
        Route("/runs/{id}/sample", p.sample),
        Route("/runs/{id}/apply", p.post_apply, methods=["POST"]),
        Route("/runs/{id}/stop", p.post_stop, methods=["POST"]),
        Route("/runs/{id}/resume", p.post_resume, methods=["POST"]),
        Route("/runs/{id}/revert", p.post_revert, methods=["POST"]),
        Route("/runs/{id}/events", p.events),
        Route("/runs/{id}/results.csv", p.results_csv),
        Route("/runs/{id}/to-fix", p.rows_to_fix),
        Route("/runs/{id}/to-fix.csv", p.to_fix_csv),
        Route("/runs/{id}", p.run_page),
        Route("/api/runs/{id}", p.api_run),
        Route("/login", login),
        Route("/auth/callback", auth_callback, name="auth_callback"),
        Route("/logout", logout, methods=["POST"]),
        Route("/signed-out", p.signed_out),
        Route(
            "/healthz",
            lambda _r: JSONResponse({"ok": True, "codes_ready": workspace.codes_ready}),
        ),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=session_secret or secrets.token_urlsafe(32),
            session_cookie="wrapup_session",
            max_age=int(auth.session_hours * 3600),
            same_site="lax",
            https_only=https,
        ),
        Middleware(_Gate),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            PageError: _page_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.workspace = workspace
    app.state.auth = auth
    app.state.sandbox = sandbox
    app.state.sse_interval = sse_interval
    return app
