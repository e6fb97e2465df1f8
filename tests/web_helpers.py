"""Shared by the page's tests: a page over a real emulator, and signing in through its login.

`web` (fixture): the page (`create_app`) over a `Workspace` on a ledger in tmp_path, with the
emulator as both the org API and its login host; `sign_in(web, email, password)` goes through
the real redirect dance (the page's /login, the emulator's login form, /auth/callback).
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import urllib3

from wrapup_batch.api_settings import ApiSettings
from wrapup_batch.app import Workspace
from wrapup_batch.emulator import EmulatorHandle
from wrapup_batch.web import AuthSettings, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx vs httpx2
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
RECLASSIFY = ROOT / "sample_data" / "reclassify.csv"
ANALYST = ("analyst@example.com", "analyst-password")
VIEWER = ("viewer@example.com", "viewer-password")
_http = urllib3.PoolManager(retries=False, timeout=10)


@dataclass
class Web:
    emulator: EmulatorHandle
    workspace: Workspace
    client: TestClient
    tmp: Path

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.db"


def make_web(
    emulator: EmulatorHandle, tmp: Path, *, rate_limit: float = 6000, max_upload: int = 10**7
) -> Web:
    workspace = Workspace(
        ledger=str(tmp / "ledger.db"),
        data_dir=tmp / "web",
        api=ApiSettings(emulator.base_url, emulator.client_id, emulator.client_secret, 10.0),
        rate_limit=rate_limit,
        max_upload=max_upload,
    )
    app = create_app(workspace, AuthSettings(emulator.base_url, "wrapup-batch-web"))
    app.state.sse_interval = 0.1
    client = TestClient(app, base_url="http://127.0.0.1")
    return Web(emulator, workspace, client, tmp)


@pytest.fixture
def web(emulator: EmulatorHandle, tmp_path: Path) -> Iterator[Web]:
    page = make_web(emulator, tmp_path)
    try:
        yield page
    finally:
        page.client.close()
        page.workspace.close()


def sign_in(web: Web, who: tuple[str, str] = ANALYST) -> Any:
    """Sign in through the emulator's login page, as a browser would (redirects by hand)."""
    start = web.client.get("/login", follow_redirects=False)
    assert start.status_code == 303
    authorize = start.headers["location"]
    assert authorize.startswith(web.emulator.base_url + "/oauth/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    assert query["code_challenge_method"] == "S256"
    answer = _http.request(
        "POST",
        web.emulator.base_url + "/oauth/authorize",
        fields={**query, "username": who[0], "password": who[1]},
        encode_multipart=False,
        redirect=False,
    )
    assert answer.status == 302, answer.data[:300]
    callback = web.client.get(answer.headers["Location"], follow_redirects=False)
    assert callback.status_code == 303, callback.text[:500]
    return callback


def csrf(web: Web) -> str:
    page = web.client.get("/")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def upload(web: Web, path: Path = RECLASSIFY, name: str | None = None, **extra: str) -> str:
    """Upload a file; return the preview's URL."""
    with path.open("rb") as handle:
        answer = web.client.post(
            "/uploads",
            data={"csrf_token": csrf(web), **extra},
            files={"file": (name or path.name, handle, "text/csv")},
            follow_redirects=False,
        )
    assert answer.status_code == 303, answer.text[:800]
    location = str(answer.headers["location"])
    assert re.fullmatch(r"/runs/[A-Za-z0-9_-]+/preview", location)
    return location


def token_of(preview_url: str) -> str:
    return preview_url.split("/")[2]


def apply(web: Web, token: str, **form: str) -> Any:
    return web.client.post(
        f"/runs/{token}/apply",
        data={"csrf_token": csrf(web), "on_existing": "skip", "participant": "last-agent", **form},
        follow_redirects=False,
    )


def wait_for_end(web: Web, run_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state: dict[str, Any] = web.client.get(f"/api/runs/{run_id}").json()
        if state["state"] != "applying":
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
