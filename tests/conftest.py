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
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import urllib3
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
