"""Running the emulator: in a background thread (`start_emulator`) or until interrupted."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from wrapup_batch.emulator.app import make_app
from wrapup_batch.emulator.config import EmulatorConfig
from wrapup_batch.emulator.model import OAuthClient
from wrapup_batch.emulator.seed import load_seed, with_worker_clients
from wrapup_batch.emulator.state import EmulatorState

T = TypeVar("T")
_STARTUP_TIMEOUT_S = 30.0


@dataclass
class EmulatorHandle:
    """A running emulator: where it listens, its default credentials, its live knobs and state.

    `config` is the object the server reads on every request: change a knob and the next
    request sees it. `state` is the server's own state (tokens, wrap-ups, counters); read it
    between requests, or go through `stats()`/`reset()`, which run on the server's loop.
    """

    base_url: str
    client_id: str
    client_secret: str
    config: EmulatorConfig = field(repr=False)
    state: EmulatorState = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(repr=False)

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def env(self) -> dict[str, str]:
        """The environment variables that point wrapup-batch at this emulator."""
        return {
            "GENESYSCLOUD_API_HOST": self.base_url,
            "GENESYSCLOUD_OAUTHCLIENT_ID": self.client_id,
            "GENESYSCLOUD_OAUTHCLIENT_SECRET": self.client_secret,
        }

    def client(self, client_id: str) -> OAuthClient:
        """A seeded OAuth client by id (its `client_secret`, divisions and permissions)."""
        return self.state.clients[client_id]

    def user_token(self, user_id: str | None = None, ttl: float | None = None) -> str:
        """A user's access token (for `GENESYSCLOUD_ACCESS_TOKEN`): the user (default: the
        seed's first) with every permission the tool needs, for `ttl` seconds."""
        return self._on_loop(lambda: self.state.issue_user_token(user_id, ttl))

    def revoke_token(self, token: str) -> bool:
        """Revoke a token: every later request with it answers 401."""
        return self._on_loop(lambda: self.state.revoke_token(token))

    def stats(self, detail: bool = True) -> dict[str, Any]:
        """What `GET /__emulator__/stats` answers (`?detail=1` when `detail`)."""
        return self._on_loop(lambda: self.state.stats_json(detail))

    def reset_stats(self) -> None:
        self.reset()

    def reset(self, *, wrapups: bool = False, rate_windows: bool = False) -> None:
        """Reset the counters (and re-seed the fault dice); optionally restore the seed's
        wrap-ups and empty the rate-limit windows."""
        self._on_loop(lambda: self.state.reset(wrapups=wrapups, windows=rate_windows))

    def _on_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        return future.result(timeout=_STARTUP_TIMEOUT_S)


@contextlib.contextmanager
def start_emulator(config: EmulatorConfig | None = None) -> Iterator[EmulatorHandle]:
    """Run an emulator on loopback in a background thread for the duration of the block.

    The config is copied (the handle's `config` is the live copy). Port 0 picks a free port.
    Raises (in the caller) whatever stops the server from starting: a bad seed, a busy port.
    """
    live = copy.deepcopy(config) if config is not None else EmulatorConfig()
    seed = load_seed(live.seed_path, live.generate)
    if live.worker_clients:
        seed = with_worker_clients(seed, live.worker_clients)
    state = EmulatorState(seed, live)
    sock = socket.socket(socket.AF_INET6 if ":" in live.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((live.host, live.port))
    except OSError:
        sock.close()
        raise
    port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[web.AppRunner] = concurrent.futures.Future()
    thread = threading.Thread(
        target=_run_loop, args=(loop, state, sock, started), name="wrapup-emulator", daemon=True
    )
    thread.start()
    try:
        runner = started.result(timeout=_STARTUP_TIMEOUT_S)
    except BaseException:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        sock.close()
        raise
    host = f"[{live.host}]" if ":" in live.host else live.host
    client = seed.default_client
    handle = EmulatorHandle(
        base_url=f"http://{host}:{port}",
        client_id=client.client_id,
        client_secret=client.client_secret,
        config=live,
        state=state,
        _loop=loop,
    )
    try:
        yield handle
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        sock.close()


def _run_loop(
    loop: asyncio.AbstractEventLoop,
    state: EmulatorState,
    sock: socket.socket,
    started: concurrent.futures.Future[web.AppRunner],
) -> None:
    asyncio.set_event_loop(loop)
    try:
        runner = web.AppRunner(
            make_app(state), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.SockSite(runner, sock, backlog=512).start())
    except BaseException as exc:
        started.set_exception(exc)
        loop.close()
        return
    started.set_result(runner)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def serve_forever(
    config: EmulatorConfig | None = None,
    on_ready: Callable[[EmulatorHandle], None] | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM; call `on_ready(handle)` once it listens.

    Prints nothing itself: the caller prints (e.g. `handle.env()`) from `on_ready`.
    Must be called from the main thread when SIGTERM is to stop it cleanly.
    """
    stop = threading.Event()
    previous: Any = None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with start_emulator(config) as handle:
            if on_ready is not None:
                on_ready(handle)
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.wait(0.5):
                    pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
