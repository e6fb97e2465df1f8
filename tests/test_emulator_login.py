"""The emulator's login side, driven through the official SDK: login form, authorization code
with PKCE (`ApiClient.get_pkce_token`), and `users/me?expand=authorization`."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import urllib3
from PureCloudPlatformClientV2 import ConversationsApi, UsersApi
from PureCloudPlatformClientV2.rest import ApiException

from wrapup_batch.emulator import EmulatorHandle

CLIENT_ID = "wrapup-batch-web"
REDIRECT = "http://127.0.0.1:9999/auth/callback"
WRAPUP = "conversation:participant:wrapup"
http = urllib3.PoolManager(retries=False, timeout=10)


def authorize(
    emulator: EmulatorHandle,
    challenge: str,
    username: str = "analyst@example.com",
    password: str = "analyst-password",
    redirect_uri: str = REDIRECT,
) -> urllib3.BaseHTTPResponse:
    fields = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "xyz",
    }
    page = http.request("GET", f"{emulator.base_url}/oauth/authorize?{urlencode(fields)}")
    assert page.status == 200
    assert "name='username'" in page.data.decode() and "name='password'" in page.data.decode()
    return http.request(
        "POST",
        f"{emulator.base_url}/oauth/authorize",
        fields={**fields, "username": username, "password": password},
        encode_multipart=False,
        redirect=False,
    )


def sign_in(
    emulator: EmulatorHandle, sdk_client: Callable[..., Any], username: str, password: str
) -> Any:
    api = sdk_client(emulator, token=False)
    verifier = secrets.token_urlsafe(48)
    answer = authorize(emulator, api.compute_pkce_code_challenge(verifier), username, password)
    assert answer.status == 302
    location = urlsplit(answer.headers["Location"])
    assert location.path == "/auth/callback"
    query = parse_qs(location.query)
    assert query["state"] == ["xyz"]
    api.get_pkce_token(CLIENT_ID, verifier, query["code"][0], REDIRECT)
    return api


def test_analyst_signs_in_with_pkce_and_has_the_wrapup_permission(
    emulator: EmulatorHandle, sdk_client: Callable[..., Any]
) -> None:
    api = sign_in(emulator, sdk_client, "analyst@example.com", "analyst-password")
    me = UsersApi(api).get_users_me(expand=["authorization"])
    assert me.email == "analyst@example.com"
    assert me.name == "Ana Analyst"
    assert WRAPUP in me.authorization.permissions
    # the user's token works on the API with the user's permissions
    conversation = ConversationsApi(api).get_conversation("c0000001-0000-4000-8000-000000000000")
    assert conversation.id == "c0000001-0000-4000-8000-000000000000"


def test_viewer_lacks_the_wrapup_permission(
    emulator: EmulatorHandle, sdk_client: Callable[..., Any]
) -> None:
    api = sign_in(emulator, sdk_client, "viewer@example.com", "viewer-password")
    me = UsersApi(api).get_users_me(expand=["authorization"])
    assert me.name == "Victor Viewer"
    assert WRAPUP not in me.authorization.permissions
    assert "routing:wrapupCode:view" in me.authorization.permissions


def test_wrong_password_shows_the_form_again(emulator: EmulatorHandle) -> None:
    answer = authorize(emulator, "x" * 43, password="nope")
    assert answer.status == 401
    assert "Invalid email or password." in answer.data.decode()
    assert "Location" not in answer.headers


def test_unregistered_redirect_uri_is_refused(emulator: EmulatorHandle) -> None:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": "https://evil.example/cb",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        }
    )
    page = http.request("GET", f"{emulator.base_url}/oauth/authorize?{query}")
    assert page.status == 400
    assert "redirect_uri is not registered" in page.data.decode()


def _code(emulator: EmulatorHandle, verifier: str, api: Any) -> str:
    answer = authorize(emulator, api.compute_pkce_code_challenge(verifier))
    return parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]


def test_wrong_verifier_and_reused_code_are_refused(
    emulator: EmulatorHandle, sdk_client: Callable[..., Any]
) -> None:
    api = sdk_client(emulator, token=False)
    verifier = secrets.token_urlsafe(48)
    code = _code(emulator, verifier, api)
    with pytest.raises(ApiException) as wrong:
        api.get_pkce_token(CLIENT_ID, secrets.token_urlsafe(48), code, REDIRECT)
    assert wrong.value.status == 400
    assert "invalid_grant" in wrong.value.body
    # the code was spent by the failed attempt: the right verifier is now too late
    with pytest.raises(ApiException) as reused:
        api.get_pkce_token(CLIENT_ID, verifier, code, REDIRECT)
    assert reused.value.status == 400
    code = _code(emulator, verifier, api)
    with pytest.raises(ApiException) as other_redirect:
        api.get_pkce_token(CLIENT_ID, verifier, code, "http://127.0.0.1:9999/other")
    assert other_redirect.value.status == 400


def test_users_me_needs_a_user_token(
    emulator: EmulatorHandle, sdk_client: Callable[..., Any]
) -> None:
    api = sdk_client(emulator)  # client credentials
    with pytest.raises(ApiException) as refused:
        UsersApi(api).get_users_me(expand=["authorization"])
    assert refused.value.status == 400
    assert "user context" in refused.value.body
