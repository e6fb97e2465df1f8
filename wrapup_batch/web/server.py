"""Running the page: `wrapup-batch serve` calls `serve(ServeOptions(...), on_ready)`."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from wrapup_batch.api_settings import ApiSettings, settings_from_env
from wrapup_batch.app import DEFAULT_MAX_UPLOAD, Workspace, local_user
from wrapup_batch.errors import UsageError
from wrapup_batch.execution import sandbox_settings
from wrapup_batch.ledger import ledger_url
from wrapup_batch.web import AuthSettings, create_app

ENV_LOGIN_CLIENT_ID = "WRAPUP_BATCH_LOGIN_CLIENT_ID"
ENV_SESSION_SECRET = "WRAPUP_BATCH_SESSION_SECRET"
#: The emulator's code-authorization client (sample_data/emulator_seed.json, loginClients).
SANDBOX_LOGIN_CLIENT = "wrapup-batch-web"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    ledger: str = "wrapup-ledger.db"
    data_dir: str | None = None
    sandbox: bool = False
    no_auth: bool = False
    max_upload: int = DEFAULT_MAX_UPLOAD
    login_client_id: str | None = None
    https: bool = False
    rate_limit: float = 300.0
    concurrency: int = 4


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check(options: ServeOptions) -> None:
    """Refuse what must not start: `--no-auth` anywhere but on loopback."""
    if options.no_auth and not is_loopback(options.host):
        raise UsageError(
            f"--no-auth is only allowed when the page listens on loopback (127.0.0.1, ::1 or "
            f"localhost), not on {options.host}: anyone who can reach it could apply codes. "
            "Drop --no-auth and let people sign in with Genesys Cloud."
        )


def data_dir_for(options: ServeOptions) -> Path:
    """Where uploads are kept: `--data-dir`, else beside a SQLite ledger, else ./wrapup-web."""
    if options.data_dir:
        return Path(options.data_dir)
    url = ledger_url(options.ledger)
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).with_suffix(".web")
    return Path("wrapup-web")


@contextlib.contextmanager
def _api(options: ServeOptions) -> Iterator[tuple[ApiSettings, str]]:
    """The server's API settings and the login client id."""
    if options.sandbox:
        with sandbox_settings(30.0) as settings:
            yield settings, options.login_client_id or SANDBOX_LOGIN_CLIENT
        return
    api = settings_from_env(os.environ)
    client_id = options.login_client_id or os.environ.get(ENV_LOGIN_CLIENT_ID, "")
    if not client_id and not options.no_auth:
        raise UsageError(
            f"set {ENV_LOGIN_CLIENT_ID} (or --login-client-id) to the id of a Code "
            "Authorization (PKCE) OAuth client of your org whose redirect URI is "
            "<this page's address>/auth/callback, so that people can sign in"
        )
    yield api, client_id


def serve(options: ServeOptions, on_ready: Callable[[str, ServeOptions], None]) -> None:
    """Serve the page until Ctrl-C; `on_ready(url, options)` once it listens."""
    check(options)
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host.strip("[]"), options.port))
        # listening before the address is printed: a browser (or a script) that connects at
        # once waits in the backlog until the page serves, instead of being refused
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {options.host}:{options.port}: {exc.strerror}"
        ) from None
    port = sock.getsockname()[1]
    with _api(options) as (api, client_id):
        data_dir = data_dir_for(options)
        workspace = Workspace(
            ledger=options.ledger,
            data_dir=data_dir,
            api=api,
            rate_limit=options.rate_limit,
            concurrency=options.concurrency,
            max_upload=options.max_upload,
        )
        workspace.warm_up()
        auth = AuthSettings(
            api_host=api.host,
            client_id=client_id,
            no_auth=options.no_auth,
            local=local_user() if options.no_auth else None,
        )
        app = create_app(
            workspace,
            auth,
            session_secret=os.environ.get(ENV_SESSION_SECRET) or None,
            https=options.https,
            sandbox=options.sandbox,
        )
        host = f"[{options.host}]" if ":" in options.host else options.host
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        )
        try:
            on_ready(f"http://{host}:{port}", options)
            server.run(sockets=[sock])
        finally:
            workspace.close()
            sock.close()
