"""Shared pytest fixtures.

Emulator fixtures (a real Genesys Cloud API emulator on loopback, see wrapup_batch.emulator):
- `emulator_config`: the EmulatorConfig the `emulator` fixture starts with; override it in a
  test module (or a class) to change the defaults.
- `emulator`: a running emulator (function scope: fresh state per test) → EmulatorHandle.
- `make_emulator`: a factory `make_emulator(config=None) -> EmulatorHandle` for tests that
  need a second emulator or a special config; each is stopped after the test.
- `sdk_client`: a factory `sdk_client(handle, client_id=None, client_secret=None, *,
  token=True) -> ApiClient` giving an SDK ApiClient on the emulator whose transport is
  `NoRetryHttpClient` (no silent retries of 429/5xx, a timeout), with a token unless
  token=False.

Ledger fixtures (see tests/postgres_server.py):
- `postgres_server`: one throwaway PostgreSQL server for the session (Debian's `postgresql`
  package, started on a free loopback port). Where it cannot start, the tests that need it
  are skipped, in one line of the summary saying why; with CI=true they fail instead.
- `postgres_url`: the SQLAlchemy URL of a new, empty database on it, dropped after the test.
- `ledger_target`: parametrised over both databases: what `--ledger` takes (a SQLite file
  path in tmp_path, or a PostgreSQL URL); test ids end in [sqlite] / [postgresql].
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import urllib3
from postgres_server import UNAVAILABLE, PostgresServer, PostgresUnavailable
from postgres_server import start as start_postgres
from PureCloudPlatformClientV2 import ApiClient
from PureCloudPlatformClientV2.abstract_http_client import AbstractHttpClient
from PureCloudPlatformClientV2.http_request_options import HttpRequestOptions
from PureCloudPlatformClientV2.rest import ApiException, RESTResponse

from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, start_emulator

# ---------------------------------------------------------------------------------------------
# Emulator fixtures


class NoRetryHttpClient(AbstractHttpClient):  # type: ignore[misc]
    """An SDK transport that never retries and always times out (the SDK's default does
    neither): every 429/5xx reaches the caller as an ApiException."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.pool = urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(total=timeout_s), maxsize=8
        )

    def request(self, options: HttpRequestOptions) -> RESTResponse:
        headers = dict(options.headers or {})
        method = options.method.upper()
        content_type = headers.setdefault("Content-Type", "application/json")
        if method in ("GET", "HEAD", "DELETE"):
            response = self.pool.request(
                method, options.url, fields=options.query_params or None, headers=headers
            )
        elif content_type == "application/x-www-form-urlencoded":
            response = self.pool.request(
                method,
                options.url,
                fields=options.post_params or {},
                encode_multipart=False,
                headers=headers,
            )
        else:
            url = options.url
            if options.query_params:
                url += "?" + urlencode(options.query_params)
            response = self.pool.request(
                method, url, body=json.dumps(options.body), headers=headers
            )
        rest = RESTResponse(response)
        rest.data = rest.data.decode("utf8")
        if not 200 <= rest.status <= 205:
            raise ApiException(http_resp=rest)
        return rest


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig()


@pytest.fixture
def emulator(emulator_config: EmulatorConfig) -> Iterator[EmulatorHandle]:
    with start_emulator(emulator_config) as handle:
        yield handle


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., EmulatorHandle]]:
    with contextlib.ExitStack() as stack:

        def make(config: EmulatorConfig | None = None) -> EmulatorHandle:
            return stack.enter_context(start_emulator(config))

        yield make


@pytest.fixture
def sdk_client() -> Callable[..., Any]:
    def make(
        handle: EmulatorHandle,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        token: bool = True,
    ) -> Any:
        api_client = ApiClient(host=handle.base_url)
        api_client.set_http_client(NoRetryHttpClient())
        if token:
            cid = client_id or handle.client_id
            secret = client_secret or handle.client(cid).client_secret
            api_client.get_client_credentials_token(cid, secret)
        return api_client

    return make


# ---------------------------------------------------------------------------------------------
# Ledger fixtures: SQLite and PostgreSQL

LEDGER_DATABASES = ("sqlite", "postgresql")
#: Where (the line of conftest.py) PostgreSQL tests were skipped, once they were.
_skipped_at = 0


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except PostgresUnavailable as why:
        reason = f"{UNAVAILABLE}: {why}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI=true: a PostgreSQL test must run)", pytrace=False)
        global _skipped_at
        _skipped_at = sys._getframe().f_lineno + 1  # the line below: see pytest_terminal_summary
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture(params=LEDGER_DATABASES)
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What `--ledger` (or `Ledger.open`) takes, on each database in turn."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "ledger.db")


@pytest.hookimpl(tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The PostgreSQL tests that did not run, in one line of the summary (`-ra`): their skips
    are reported where they come from (the `postgres_server` fixture), so pytest folds them
    into one "SKIPPED [n] tests/conftest.py:..: PostgreSQL tests not run: why" line."""
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple) and UNAVAILABLE in str(report.longrepr[2]):
            report.longrepr = (__file__, _skipped_at, report.longrepr[2])
