"""The only module that talks HTTP to Genesys Cloud.

Built on the official SDK (`PureCloudPlatformClientV2`) with its transport replaced through
`ApiClient.set_http_client`: the SDK's own transport retries 429s and POSTs silently and has no
timeout, so `Transport` sends each request exactly once, with a timeout, after the shared
throttle allows it, and reports every response's status and `Retry-After` to the throttle.

`GenesysClient` adds the policy on top: client-credentials auth (a new token on a 401, and one
retry), retries of transient failures with exponential backoff and jitter (tenacity, at most
`max_attempts`), 429s waited out through the throttle, and Genesys errors mapped to the
project's exception tree (`errors.py`). A wrap-up POST whose outcome is unknown (timeout,
dropped connection, 5xx) is never resent blind: the wrap-up is read back first.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from wrapup_batch.api_settings import (
    ENV_ACCESS_TOKEN,
    ENV_API_HOST,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_REGION,
    ApiSettings,
)
from wrapup_batch.codes import WrapupCode, code_from_json
from wrapup_batch.errors import (
    ApiError,
    AuthError,
    RateLimitedError,
    RequestRejectedError,
    TransientApiError,
    UnreachableError,
)
from wrapup_batch.sdk import (
    AbstractHttpClient,
    ApiClient,
    ApiException,
    ConversationsApi,
    HttpRequestOptions,
    RESTResponse,
    RoutingApi,
    WrapupInput,
)
from wrapup_batch.throttle import Throttle, ThrottleStopped, WriteNotSent

log = logging.getLogger(__name__)

T = TypeVar("T")


#: Media whose wrap-up the tool can set: path segment -> SDK method infix.
MEDIA_METHODS: Mapping[str, str] = {
    "calls": "call",
    "callbacks": "callback",
    "emails": "email",
    "messages": "message",
    "socials": "social",
    "videos": "video",
    "cobrowsesessions": "cobrowsesession",
    "screenshares": "screenshare",
}

# -- transport ------------------------------------------------------------------------------


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Transport(AbstractHttpClient):  # type: ignore[misc]
    """Sends each request once, with a timeout, paced by the throttle (token calls excepted)."""

    def __init__(self, *, timeout: float, throttle: Throttle | None, pool_size: int) -> None:
        super().__init__()
        self.timeout = timeout
        self.throttle = throttle
        self.pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max(1, pool_size),
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=min(10.0, timeout), read=timeout),
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )

    def request(self, http_request_options: HttpRequestOptions) -> RESTResponse:
        opts = http_request_options
        is_token_call = opts.url.endswith("/oauth/token")
        if self.throttle is not None and not is_token_call:
            self.throttle.acquire()
        try:
            raw = self._send(opts)
        except urllib3.exceptions.SSLError as exc:
            self._observe(0, None, is_token_call)
            raise ApiError(
                f"TLS certificate verification failed for {_host_of(opts.url)}: {exc}",
                method=opts.method,
                path=_path_of(opts.url),
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            self._observe(0, None, is_token_call)
            not_sent = isinstance(
                exc, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
            )
            raise (RequestNotSentError if not_sent else TransientApiError)(
                f"{_describe_connection_error(exc)} on {opts.method} {_path_of(opts.url)}",
                method=opts.method,
                path=_path_of(opts.url),
            ) from None
        response = RESTResponse(raw)
        response.data = raw.data.decode("utf-8", errors="replace")
        self._observe(response.status, _retry_after(raw.headers), is_token_call)
        if not 200 <= response.status <= 205:
            raise ApiException(http_resp=response)
        return response

    def _observe(self, status: int, retry_after: float | None, is_token_call: bool) -> None:
        if self.throttle is not None and not is_token_call:
            self.throttle.on_response(status, retry_after)

    def _send(self, opts: HttpRequestOptions) -> urllib3.BaseHTTPResponse:
        headers = dict(opts.headers or {})
        headers.setdefault("Content-Type", "application/json")
        url = opts.url
        if opts.method in ("GET", "HEAD", "DELETE"):
            return self.pool.request(opts.method, url, fields=opts.query_params, headers=headers)
        if opts.query_params:
            url += "?" + urlencode(opts.query_params)
        if headers["Content-Type"] == "application/x-www-form-urlencoded":
            return self.pool.request(
                opts.method, url, fields=opts.post_params, encode_multipart=False, headers=headers
            )
        body = None if opts.body is None else json.dumps(opts.body)
        return self.pool.request(opts.method, url, body=body, headers=headers)


class RequestNotSentError(TransientApiError):
    """No connection could be made: the request never reached the server."""


def _path_of(url: str) -> str:
    return urlsplit(url).path


def _host_of(url: str) -> str:
    return urlsplit(url).netloc


def _describe_connection_error(exc: Exception) -> str:
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError too
        return "could not connect"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "timed out"
    return "connection failed"


# -- errors ---------------------------------------------------------------------------------


def map_api_exception(exc: ApiException, method: str, path: str) -> ApiError:
    """A Genesys error response as the project's exception, keeping code and contextId."""
    status = int(exc.status or 0)
    body = _error_body(exc.body)
    code = _str_or_none(body.get("code"))
    context_id = _str_or_none(body.get("contextId"))
    message = _str_or_none(body.get("message")) or _str_or_none(exc.reason) or "no message"
    text = f"{method} {path} answered {status}: {message}"
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "context_id": context_id,
        "method": method,
        "path": path,
    }
    if status == 429:
        retry_after = _retry_after(exc.headers) or 1.0
        return RateLimitedError(text, retry_after=retry_after, **kwargs)
    if status >= 500 or status in (0, 408):
        return TransientApiError(text, **kwargs)
    err = RequestRejectedError(text, **kwargs)
    err.message = message
    return err


def _error_body(raw: object) -> dict[str, Any]:
    if not isinstance(raw, str | bytes) or not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    if "code" not in data and "error" in data:  # OAuth errors: {"error": ..., "description": ...}
        data = {"code": data.get("error"), "message": data.get("description") or data["error"]}
    return data


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


# -- retries --------------------------------------------------------------------------------


class _AttemptBudget:
    """Stop after `max_attempts` failures that were not 429s; 429s are waited out by the throttle
    (bounded by `max_rate_limited`, so that a permanent storm still ends)."""

    def __init__(self, max_attempts: int, max_rate_limited: int = 50) -> None:
        self.max_attempts = max_attempts
        self.max_rate_limited = max_rate_limited
        self.failures = 0
        self.rate_limited = 0

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError):
            self.rate_limited += 1
        else:
            self.failures += 1
        return self.failures >= self.max_attempts or self.rate_limited >= self.max_rate_limited


class _Backoff:
    def __init__(self, initial: float, maximum: float) -> None:
        self._exp = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError):
            return 0.0  # the throttle holds every worker until Retry-After has passed
        return float(self._exp(state))


# -- the client -----------------------------------------------------------------------------


@dataclass
class RetryNotice:
    """What `on_retry` hears before a retry."""

    method: str
    path: str
    attempt: int
    wait_seconds: float
    error: ApiError


class GenesysClient:
    """The Genesys Cloud calls the tool needs, over the SDK, with the retry policy above."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        throttle: Throttle | None = None,
        pool_size: int = 8,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        settle_seconds: float | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> None:
        self.settings = settings
        self.throttle = throttle
        self.max_attempts = max_attempts
        #: After a wrap-up POST got no answer at all (it timed out, or its connection died
        #: after it was sent), the server may still be processing it: the read-back before
        #: any resend waits this long (default: the request timeout), so that it sees a write
        #: still on its way instead of resending over it. UNCONFIRMED that Genesys finishes a
        #: request within one more request timeout; a longer value only makes such a retry
        #: slower. A request that never left (no connection) is retried without waiting.
        self.settle_seconds = settings.timeout if settle_seconds is None else settle_seconds
        self._backoff = (backoff_initial, backoff_max)
        self._on_retry = on_retry
        self.api_client = ApiClient(host=settings.host)
        self.api_client.set_http_client(
            Transport(timeout=settings.timeout, throttle=throttle, pool_size=pool_size)
        )
        self._conversations = ConversationsApi(self.api_client)
        self._routing = RoutingApi(self.api_client)
        self._auth_lock = threading.Lock()
        self._token_generation = 0
        self._count_lock = threading.Lock()
        self.writes_sent = 0  # wrap-up POSTs put on the wire, retries included

    def __repr__(self) -> str:
        return f"GenesysClient(host={self.settings.host!r}, client_id={self.settings.client_id!r})"

    # -- auth -------------------------------------------------------------------------------

    def authenticate(self) -> None:
        """Get a token; AuthError names the credential to check when it is refused."""
        with self._auth_lock:
            self._authenticate_locked()

    def _authenticate_locked(self) -> None:
        if self.settings.access_token:
            # A user's token: used as given; nothing can renew it (a 401 ends the run).
            self.api_client.access_token = self.settings.access_token
            self._token_generation += 1
            return
        try:
            self.api_client.get_client_credentials_token(
                self.settings.client_id, self.settings.client_secret
            )
        except ApiException as exc:
            err = map_api_exception(exc, "POST", "/oauth/token")
            raise AuthError(_auth_failure_message(err, self.settings), status=err.status) from None
        except TransientApiError as err:
            if err.status:  # 5xx or 429: reached, but not answering now
                raise UnreachableError(
                    f"{self.settings.host} answered {err.status} when asked for a token: "
                    f"{err.message}; Genesys Cloud may be unavailable: try again later"
                ) from None
            raise UnreachableError(
                f"could not reach {self.settings.host} to get a token ({err}); check the "
                f"network, a proxy (HTTPS_PROXY), and the region ({ENV_REGION} or "
                f"{ENV_API_HOST}); the credentials were not tried"
            ) from None
        except ApiError as err:
            raise AuthError(f"could not get a token: {err}", status=err.status) from None
        self._token_generation += 1

    def _refresh_token(self, seen_generation: int, err: RequestRejectedError) -> None:
        if self.settings.access_token:
            raise AuthError(
                f"the access token expired or was revoked: get a new one and set "
                f"{ENV_ACCESS_TOKEN} to it ({err.method} {err.path} answered 401: "
                f"{err.message}); nothing is lost: run again to resume",
                status=401,
                code=err.code,
                context_id=err.context_id,
            )
        with self._auth_lock:
            if self._token_generation == seen_generation:
                log.info("access token refused (401); getting a new one")
                try:
                    self._authenticate_locked()
                except UnreachableError as err:  # mid-run: retried like any lost request
                    raise TransientApiError(str(err), method="POST", path="/oauth/token") from None

    # -- calls ------------------------------------------------------------------------------

    def list_wrapup_codes(self) -> list[WrapupCode]:
        """Every wrap-up code the client can see, all pages."""
        codes: list[WrapupCode] = []
        page = 1
        while True:
            result = self._call(
                "GET",
                "/api/v2/routing/wrapupcodes",
                partial(self._routing.get_routing_wrapupcodes, page_size=100, page_number=page),
            )
            data = self.api_client.sanitize_for_serialization(result) or {}
            codes.extend(code_from_json(entity) for entity in data.get("entities") or [])
            page_count = int(data.get("pageCount") or 0)
            if page >= page_count or not data.get("entities"):
                return codes
            page += 1

    def get_organization(self) -> dict[str, Any]:
        """GET /api/v2/organizations/me: the org these credentials reach (id, name, ...)."""
        return self._get_json("/api/v2/organizations/me")

    def get_current_user(self) -> dict[str, Any]:
        """GET /api/v2/users/me: the user a user's token belongs to (id, name, ...)."""
        return self._get_json("/api/v2/users/me")

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        """GET /api/v2/conversations/{id}, as the API's camelCase JSON."""
        return self._get_json(
            "/api/v2/conversations/{conversationId}", path={"conversationId": conversation_id}
        )

    def get_conversation_details(self, conversation_ids: list[str]) -> list[dict[str, Any]]:
        """The analytics multi-get: the conversations analytics knows, as camelCase JSON."""
        data = self._get_json(
            "/api/v2/analytics/conversations/details", query={"id": conversation_ids}
        )
        return list(data.get("conversations") or [])

    def _get_json(
        self,
        template: str,
        *,
        path: Mapping[str, str] | None = None,
        query: Mapping[str, str | list[str]] | None = None,
    ) -> dict[str, Any]:
        """A GET through the SDK's `call_api` (auth, headers, transport) answered as plain JSON.

        The typed SDK methods (`get_conversation`, `get_analytics_conversations_details`) build
        model objects that the planner would only turn back into JSON: measured, that round
        trip was a fifth of the tool's CPU per row (benchmarks/RESULTS.md, target 5).
        """
        shown = template
        for key, value in (path or {}).items():
            shown = shown.replace("{" + key + "}", value)

        def get() -> Any:
            return self.api_client.call_api(
                template,
                "GET",
                path_params=dict(path or {}),
                query_params=dict(query or {}),
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                response_type="object",
                auth_settings=["PureCloud OAuth"],
            )

        data = self._call("GET", shown, get)
        return data if isinstance(data, dict) else {}

    def get_wrapup(
        self, media: str, conversation_id: str, participant_id: str, communication_id: str
    ) -> dict[str, Any] | None:
        """The communication's assigned wrap-up, or None when it has none (404)."""
        method = _wrapup_method(self._conversations, "get", media)
        path = _wrapup_path(media, conversation_id, participant_id, communication_id)
        try:
            result = self._call(
                "GET", path, lambda: method(conversation_id, participant_id, communication_id)
            )
        except RequestRejectedError as err:
            if err.status == 404:
                return None
            raise
        return self.api_client.sanitize_for_serialization(result)  # type: ignore[no-any-return]

    def post_wrapup(
        self,
        media: str,
        conversation_id: str,
        participant_id: str,
        communication_id: str,
        *,
        code_id: str,
        notes: str | None = None,
        end_time: str | None = None,
    ) -> None:
        """Apply a wrap-up. After an attempt whose outcome is unknown, read before resending.

        `end_time` (ISO-8601 UTC) is sent as `WrapupInput.endTime`: when the agent's after-call
        work ended, so that the backfill does not stretch it to the moment of the POST.
        """
        method = _wrapup_method(self._conversations, "post", media)
        body = WrapupInput()
        body.code = code_id
        if notes:
            body.notes = notes
        if end_time:
            body.end_time = end_time  # a string: the SDK sends it as given
        path = _wrapup_path(media, conversation_id, participant_id, communication_id)
        uncertain = False
        settle_until = 0.0

        def attempt() -> None:
            nonlocal uncertain, settle_until
            if uncertain:
                self._pause_until(settle_until)
                current = self.get_wrapup(media, conversation_id, participant_id, communication_id)
                if current is not None and current.get("code") == code_id:
                    log.info("%s: the earlier attempt had landed; not resending", path)
                    return
            with self._count_lock:
                self.writes_sent += 1
            try:
                method(conversation_id, participant_id, communication_id, body=body)
            except ThrottleStopped:
                with self._count_lock:
                    self.writes_sent -= 1  # stopped while waiting for its turn: not sent
                if not uncertain:  # no earlier attempt can have landed either
                    raise WriteNotSent from None
                raise
            except RateLimitedError:
                raise  # a 429 was not processed: resend after the wait
            except RequestNotSentError:
                raise  # it never reached the server: nothing to read back, nothing to wait for
            except (TransientApiError, ApiException) as exc:
                if isinstance(exc, TransientApiError) or int(exc.status or 0) >= 500:
                    uncertain = True
                if isinstance(exc, TransientApiError) and not exc.status:  # sent, no answer
                    settle_until = time.monotonic() + self.settle_seconds
                raise

        self._call("POST", path, attempt)

    def _pause_until(self, deadline: float) -> None:
        """Sleep until `deadline` (monotonic); a stopping run (throttle stopped) cuts it short."""
        while (left := deadline - time.monotonic()) > 0:
            if self.throttle is not None and self.throttle.stopped:
                raise ThrottleStopped
            time.sleep(min(left, 0.05))

    # -- policy -----------------------------------------------------------------------------

    def _call(self, method: str, path: str, fn: Callable[[], T]) -> T:
        retrying = Retrying(
            stop=_AttemptBudget(self.max_attempts),
            wait=_Backoff(*self._backoff),
            retry=retry_if_exception_type(TransientApiError),
            reraise=True,
            before_sleep=lambda state: self._notify_retry(method, path, state),
        )
        result: T = retrying(self._with_auth, method, path, fn)
        return result

    def _with_auth(self, method: str, path: str, fn: Callable[[], T]) -> T:
        generation = self._token_generation
        try:
            return self._once(method, path, fn)
        except RequestRejectedError as err:
            if err.status != 401:
                raise
            refused = err
        self._refresh_token(generation, refused)
        try:
            return self._once(method, path, fn)
        except RequestRejectedError as err:
            if err.status == 401:
                raise AuthError(
                    f"{method} {path} refused a fresh access token (401): {err.message}",
                    status=401,
                    code=err.code,
                    context_id=err.context_id,
                ) from None
            raise

    @staticmethod
    def _once(method: str, path: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ApiException as exc:
            raise map_api_exception(exc, method, path) from None

    def _notify_retry(self, method: str, path: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if not isinstance(exc, ApiError):
            return
        wait = state.next_action.sleep if state.next_action else 0.0
        log.debug("retrying %s %s after %s (attempt %d)", method, path, exc, state.attempt_number)
        if self._on_retry is not None:
            self._on_retry(RetryNotice(method, path, state.attempt_number, wait, exc))


def _wrapup_method(api: ConversationsApi, verb: str, media: str) -> Callable[..., Any]:
    """The SDK's own method for a media's wrap-up route, bound to `api`.

    SDK 269 marks the cobrowse and screenshare ones deprecated (they are still its only methods
    for those paths); its `@deprecated` wrapper resets the process's warning filters on every
    call and warns each time, so the method is called unwrapped.
    """
    name = f"{verb}_conversations_{MEDIA_METHODS[media]}_participant_communication_wrapup"
    function = getattr(type(api), name)
    return partial(getattr(function, "__wrapped__", function), api)


def _wrapup_path(media: str, conversation_id: str, participant_id: str, comm_id: str) -> str:
    return (
        f"/api/v2/conversations/{media}/{conversation_id}/participants/{participant_id}"
        f"/communications/{comm_id}/wrapup"
    )


def _auth_failure_message(err: ApiError, settings: ApiSettings) -> str:
    host = settings.host
    if err.status in (400, 401):
        return (
            f"the OAuth client {settings.client_id!r} was refused by {host} ({err.status}: "
            f"{err.message}); check {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET}, and that the "
            "client's grant type is Client Credentials"
        )
    if err.status == 403:
        return (
            f"the OAuth client {settings.client_id!r} may not get a token from {host} (403: "
            f"{err.message}); check that the client is active and has a role"
        )
    return f"could not get a token from {host}: {err}"
