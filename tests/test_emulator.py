"""The Genesys Cloud API emulator, driven by the official SDK (PureCloudPlatformClientV2).

Every test runs a real aiohttp server on loopback (the `emulator` fixtures in conftest.py).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import urllib3
from PureCloudPlatformClientV2 import (
    AnalyticsApi,
    ApiClient,
    ConversationsApi,
    RoutingApi,
    WrapupInput,
)
from PureCloudPlatformClientV2.rest import ApiException

from wrapup_batch.emulator import (
    EmulatorConfig,
    EmulatorHandle,
    default_seed_path,
    generated_conversation_id,
    load_seed,
    worker_client_id,
    worker_client_secret,
)

REPO = Path(__file__).resolve().parent.parent
SEED = json.loads(default_seed_path().read_text(encoding="utf-8"))
HOME, SALES_DIV, RESTRICTED = (d["id"] for d in SEED["divisions"])
CODE_IDS = {c["name"]: c["id"] for c in SEED["wrapupCodes"]}
VISIBLE_CODES = {c["name"] for c in SEED["wrapupCodes"] if c["divisionId"] != RESTRICTED}
MEDIA = (
    "calls",
    "callbacks",
    "emails",
    "messages",
    "socials",
    "videos",
    "cobrowsesessions",
    "screenshares",
)
SDK_MEDIA = {
    "calls": "call",
    "callbacks": "callback",
    "emails": "email",
    "messages": "message",
    "socials": "social",
    "videos": "video",
    "cobrowsesessions": "cobrowsesession",
    "screenshares": "screenshare",
}
#: The participant's array of each media: in the seed / the API's JSON, and in the SDK's model.
JSON_ARRAY = {media: media for media in MEDIA} | {"socials": "socialExpressions"}
SDK_ARRAY = {media: media for media in MEDIA} | {"socials": "social_expressions"}
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ERROR_KEYS = {
    "message",
    "code",
    "status",
    "contextId",
    "details",
    "errors",
    "messageWithParams",
    "messageParams",
}

MakeSdk = Callable[..., ApiClient]
# Raw HTTP for what the SDK hides (headers, JSON text): no retries, a timeout.
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=10), maxsize=8)


def conv_id(n: int) -> str:
    return f"c00000{n:02d}-0000-4000-8000-000000000000"


def part_id(n: int, p: int) -> str:
    return f"a00000{n:02d}-0000-4000-8000-00000000000{p}"


def comm_id(n: int, p: int, c: int = 1) -> str:
    return f"e00000{n:02d}-0000-4000-8000-0000000000{p}{c}"


UNKNOWN_CONVERSATION = "c0000099-0000-4000-8000-000000000000"


def wrapup_input(code: str | None = None, notes: str | None = None) -> WrapupInput:
    body = WrapupInput()
    body.code = code
    body.notes = notes
    return body


def error_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    """The Genesys error body of an ApiException, checked for shape."""
    body: dict[str, Any] = json.loads(exc.value.body)
    assert body.keys() >= ERROR_KEYS
    assert body["status"] == exc.value.status
    uuid.UUID(body["contextId"])
    return body


def post_wrapup(
    api_client: ApiClient,
    media: str,
    conv: str,
    part: str,
    comm: str,
    code: str | None,
    notes: str | None = None,
) -> None:
    method = getattr(
        ConversationsApi(api_client),
        f"post_conversations_{SDK_MEDIA[media]}_participant_communication_wrapup",
    )
    method(conv, part, comm, body=wrapup_input(code, notes))


def get_wrapup(api_client: ApiClient, media: str, conv: str, part: str, comm: str) -> Any:
    method = getattr(
        ConversationsApi(api_client),
        f"get_conversations_{SDK_MEDIA[media]}_participant_communication_wrapup",
    )
    return method(conv, part, comm)


def token_for(handle: EmulatorHandle, client_id: str | None = None) -> str:
    cid = client_id or handle.client_id
    response = HTTP.request(
        "POST",
        f"{handle.base_url}/oauth/token",
        fields={"grant_type": "client_credentials"},
        encode_multipart=False,
        headers=urllib3.make_headers(basic_auth=f"{cid}:{handle.client(cid).client_secret}"),
    )
    assert response.status == 200
    token: str = response.json()["access_token"]
    return token


def raw(
    handle: EmulatorHandle, method: str, path: str, token: str | None = None, **kwargs: Any
) -> urllib3.BaseHTTPResponse:
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return HTTP.request(method, handle.base_url + path, headers=headers, **kwargs)


def seeded(n: int) -> dict[str, Any]:
    conversation: dict[str, Any] = next(c for c in SEED["conversations"] if c["id"] == conv_id(n))
    return conversation


# ---------------------------------------------------------------------------------------------
# Seed and package


def test_packaged_seed_is_the_sample_seed() -> None:
    sample = REPO / "sample_data" / "emulator_seed.json"
    assert default_seed_path().read_bytes() == sample.read_bytes()


def test_seed_covers_every_case() -> None:
    seed = load_seed()
    assert {d for c in seed.codes for d in [c.division_id]} == {HOME, SALES_DIV, RESTRICTED}
    assert set(seed.default_client.division_ids) == {HOME, SALES_DIV}
    media = {
        c.media
        for conv in seed.conversations.values()
        for p in conv.participants
        for c in p.communications
    }
    assert media == set(MEDIA)
    assert all("_comment" in c for c in SEED["conversations"])
    assert seed.conversations[conv_id(9)].end_time is None  # the active one


# ---------------------------------------------------------------------------------------------
# OAuth and 401s


def test_token_then_bad_secret_and_unknown_client_are_401(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api_client = sdk_client(emulator)
    assert api_client.access_token
    for cid, secret in ((emulator.client_id, "wrong"), ("nobody", "x")):
        with pytest.raises(ApiException) as exc:
            sdk_client(emulator, cid, secret)
        assert exc.value.status == 401
        assert json.loads(exc.value.body)["error"] == "invalid_client"


def test_token_response_shape_and_grant_type(emulator: EmulatorHandle) -> None:
    auth = urllib3.make_headers(basic_auth=f"{emulator.client_id}:{emulator.client_secret}")
    ok = raw(
        emulator,
        "POST",
        "/oauth/token",
        headers=dict(auth),
        fields={"grant_type": "client_credentials"},
        encode_multipart=False,
    )
    assert ok.status == 200
    assert ok.json()["token_type"] == "bearer"
    assert ok.json()["expires_in"] == 86400
    bad = raw(
        emulator,
        "POST",
        "/oauth/token",
        headers=dict(auth),
        fields={"grant_type": "password"},
        encode_multipart=False,
    )
    assert bad.status == 400


def test_missing_and_unknown_token_are_401(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    api = ConversationsApi(sdk_client(emulator, token=False))
    with pytest.raises(ApiException) as exc:
        api.get_conversation(conv_id(1))
    assert exc.value.status == 401
    assert error_of(exc)["code"] == "authentication.required"
    response = raw(emulator, "GET", f"/api/v2/conversations/{conv_id(1)}", token="not-a-token")
    assert response.status == 401
    assert response.json()["code"] == "bad.credentials"


def test_token_expires_after_ttl(
    make_emulator: Callable[..., EmulatorHandle], sdk_client: MakeSdk
) -> None:
    handle = make_emulator(EmulatorConfig(token_ttl=1))
    api_client = sdk_client(handle)
    api = ConversationsApi(api_client)
    assert api.get_conversation(conv_id(1)).id == conv_id(1)
    time.sleep(1.1)
    with pytest.raises(ApiException) as exc:
        api.get_conversation(conv_id(1))
    assert exc.value.status == 401
    # an expired token is told apart from one the server never issued (as public clients see)
    assert error_of(exc)["code"] == "credentials.expired"
    with pytest.raises(ApiException) as again:
        api.get_conversation(conv_id(1))
    assert error_of(again)["code"] == "credentials.expired"
    api_client.get_client_credentials_token(handle.client_id, handle.client_secret)
    assert api.get_conversation(conv_id(1)).id == conv_id(1)


# ---------------------------------------------------------------------------------------------
# Wrap-up codes


def all_code_pages(api_client: ApiClient, page_size: int) -> list[Any]:
    api = RoutingApi(api_client)
    pages = [api.get_routing_wrapupcodes(page_size=page_size, page_number=1)]
    while pages[-1].next_uri:
        pages.append(api.get_routing_wrapupcodes(page_size=page_size, page_number=len(pages) + 1))
    return pages


def test_codes_paging_with_small_pages(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    pages = all_code_pages(sdk_client(emulator), page_size=2)
    total = len(VISIBLE_CODES)
    assert len(pages) == (total + 1) // 2
    assert all(p.total == total and p.page_count == len(pages) for p in pages)
    assert [p.page_number for p in pages] == list(range(1, len(pages) + 1))
    assert all(len(p.entities) == 2 for p in pages[:-1])
    assert pages[-1].next_uri is None and pages[0].next_uri is not None
    names = [e.name for p in pages for e in p.entities]
    assert sorted(names) == sorted(VISIBLE_CODES)  # each once, hidden division left out
    assert names == sorted(names, key=str.lower)
    first = pages[0].entities[0]
    assert first.id == CODE_IDS[first.name]
    assert first.division.id in (HOME, SALES_DIV) and first.division.name


def test_codes_default_and_clamped_page_size(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    api = RoutingApi(sdk_client(emulator))
    default = api.get_routing_wrapupcodes()
    assert (default.page_size, default.page_count, len(default.entities)) == (25, 1, 11)
    clamped = api.get_routing_wrapupcodes(page_size=500)
    assert clamped.page_size == 100
    beyond = api.get_routing_wrapupcodes(page_size=5, page_number=9)
    assert beyond.entities == [] and beyond.next_uri is None
    with pytest.raises(ApiException) as exc:
        api.get_routing_wrapupcodes(page_size=0)
    assert exc.value.status == 400


def test_codes_name_filter_and_admin_sees_hidden(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api = RoutingApi(sdk_client(emulator))
    support = api.get_routing_wrapupcodes(name="support")
    assert sorted(e.name for e in support.entities) == ["Support - Billing", "Support - Technical"]
    assert api.get_routing_wrapupcodes(name="Escalation").total == 0
    admin = RoutingApi(sdk_client(emulator, "wrapup-batch-admin"))
    assert admin.get_routing_wrapupcodes(page_size=100).total == len(SEED["wrapupCodes"])


def test_codes_without_permission_is_403(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    api = RoutingApi(sdk_client(emulator, "wrapup-batch-nocodes"))
    with pytest.raises(ApiException) as exc:
        api.get_routing_wrapupcodes()
    body = error_of(exc)
    assert (exc.value.status, body["code"]) == (403, "missing.permissions")
    assert "routing:wrapupCode:view" in body["message"]


# ---------------------------------------------------------------------------------------------
# Conversations


def _iso(value: str | None) -> datetime | None:
    if value and value.startswith("now"):  # relative to the emulator's start: a recent time
        return None
    return datetime.fromisoformat(value) if value else None


@pytest.mark.parametrize("conversation", SEED["conversations"], ids=lambda c: c["id"][:8])
def test_sdk_keeps_every_field_the_tool_needs(
    emulator: EmulatorHandle, sdk_client: MakeSdk, conversation: dict[str, Any]
) -> None:
    api = ConversationsApi(sdk_client(emulator, "wrapup-batch-admin"))
    got = api.get_conversation(conversation["id"])
    assert got.id == conversation["id"]
    assert got.divisions[0].division.id == conversation["divisionIds"][0]
    assert [p.id for p in got.participants] == [p["id"] for p in conversation["participants"]]
    all_ended = True
    for want, have in zip(conversation["participants"], got.participants, strict=True):
        assert have.purpose == want["purpose"]
        assert have.user_id == want.get("userId")
        for media in MEDIA:
            comms = getattr(have, SDK_ARRAY[media])
            seeded_comms = want.get(JSON_ARRAY[media], [])
            assert [c.id for c in comms] == [c["id"] for c in seeded_comms]
            for c, w in zip(comms, seeded_comms, strict=True):
                assert c.state == w["state"]
                for have_time, want_time in (
                    (c.connected_time, w.get("connectedTime")),
                    (c.disconnected_time, w.get("disconnectedTime")),
                ):
                    if _iso(want_time) is not None or want_time is None:
                        assert have_time == _iso(want_time)
                    else:  # `now-5m` in the seed: some minutes before now
                        assert 0 < (datetime.now(UTC) - have_time).total_seconds() < 3600
                assert (c.wrapup.code if c.wrapup else None) == w.get("wrapup", {}).get("code")
                all_ended &= w["state"] in ("disconnected", "terminated")
    assert (got.end_time is not None) == all_ended
    assert got.start_time is not None


def test_conversation_json_uses_genesys_time_format(emulator: EmulatorHandle) -> None:
    token = token_for(emulator)
    body = raw(emulator, "GET", f"/api/v2/conversations/{conv_id(7)}", token).json()
    times = [body["startTime"], body["endTime"]]
    for p in body["participants"]:
        times += [p["startTime"], p.get("endTime")]
        times += [c[k] for c in p["calls"] for k in ("connectedTime", "disconnectedTime")]
    assert all(TIME_RE.match(t) for t in times if t)
    agent = body["participants"][2]
    assert agent["wrapup"]["code"] == CODE_IDS["Sales"]  # participant-level wrap-up
    assert agent["calls"][0]["wrapup"]["name"] == "Sales"
    assert agent["emails"] == [] and agent["userId"]


def test_unknown_malformed_and_hidden_conversations(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api = ConversationsApi(sdk_client(emulator))
    for missing in (UNKNOWN_CONVERSATION, "not-a-uuid"):
        with pytest.raises(ApiException) as exc:
            api.get_conversation(missing)
        assert (exc.value.status, error_of(exc)["code"]) == (404, "not.found")
    with pytest.raises(ApiException) as exc:
        api.get_conversation(conv_id(11))
    body = error_of(exc)
    assert (exc.value.status, body["code"]) == (403, "not.authorized")
    assert body["message"] == f"Access to Conversation {conv_id(11)} is forbidden."
    assert exc.value.headers["ININ-Correlation-Id"] == body["contextId"]


def test_every_error_has_a_fresh_context_id(emulator: EmulatorHandle) -> None:
    token = token_for(emulator)
    ids = {
        raw(emulator, "GET", f"/api/v2/conversations/{UNKNOWN_CONVERSATION}", token).json()[
            "contextId"
        ]
        for _ in range(3)
    }
    assert len(ids) == 3


# ---------------------------------------------------------------------------------------------
# Wrap-ups

# (media, conversation number, participant index) of an ended agent communication per media.
APPLY_CASES = [
    ("calls", 1, 3),
    ("emails", 4, 3),
    ("messages", 5, 3),
    ("callbacks", 6, 3),
    ("socials", 22, 3),
    ("videos", 23, 3),
    ("cobrowsesessions", 24, 3),
    ("screenshares", 25, 3),
]


def test_every_wrapup_media_of_the_sdk_is_served_and_seeded() -> None:
    """The eight wrap-up paths of the SDK: each has a route and a seeded conversation."""
    posts = {
        name.removeprefix("post_conversations_").removesuffix("_participant_communication_wrapup")
        for name in dir(ConversationsApi)
        if name.startswith("post_conversations_")
        and name.endswith("_participant_communication_wrapup")
    }
    assert posts == set(SDK_MEDIA.values())
    assert {media for media, _, _ in APPLY_CASES} == set(MEDIA)


#: The SDK marks these wrap-up methods deprecated (SDK 269); they are still its own methods for
#: those paths, and the tool calls them too (without the deprecation wrapper).
DEPRECATED_IN_SDK = ("cobrowsesessions", "screenshares")


@pytest.mark.parametrize(("media", "n", "p"), APPLY_CASES)
def test_post_then_get_wrapup_on_each_media(
    emulator: EmulatorHandle, sdk_client: MakeSdk, media: str, n: int, p: int
) -> None:
    api_client = sdk_client(emulator)
    code = CODE_IDS["Support - Technical"]
    ids = (conv_id(n), part_id(n, p), comm_id(n, p))
    warns = pytest.deprecated_call if media in DEPRECATED_IN_SDK else contextlib.nullcontext
    with warns():
        post_wrapup(api_client, media, *ids, code, "fixed it")
    assert ConversationsApi(api_client).api_client.last_response.status == 202
    assert ConversationsApi(api_client).api_client.last_response.data == ""
    with warns():
        got = get_wrapup(api_client, media, *ids)
    assert (got.code, got.notes) == (code, "fixed it")
    assert got.end_time is not None
    conversation = ConversationsApi(api_client).get_conversation(conv_id(n))
    agent = conversation.participants[p - 1]
    assert getattr(agent, SDK_ARRAY[media])[0].wrapup.code == code
    assert agent.wrapup.code == code
    assert emulator.stats()["wrapups"][comm_id(n, p)] == code


def test_existing_wrapup_is_overwritten(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    api_client = sdk_client(emulator)
    args = ("calls", conv_id(8), part_id(8, 3), comm_id(8, 3))
    assert get_wrapup(api_client, *args).code == CODE_IDS["Complaint"]
    post_wrapup(api_client, *args, CODE_IDS["Support - Billing"])
    assert get_wrapup(api_client, *args).code == CODE_IDS["Support - Billing"]
    post_wrapup(api_client, *args, CODE_IDS["Spam"])
    assert get_wrapup(api_client, *args).code == CODE_IDS["Spam"]
    assert emulator.stats()["posts_per_communication"] == {comm_id(8, 3): 2}


def test_wrapup_get_needs_no_permission_and_reads_the_provisional_one_on_request(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    args = ("calls", conv_id(1), part_id(1, 3), comm_id(1, 3))
    only_wrapup = sdk_client(emulator, "wrapup-batch-wrapup-only")
    with pytest.raises(ApiException) as exc:  # this client may not read the conversation...
        ConversationsApi(only_wrapup).get_conversation(conv_id(1))
    assert (exc.value.status, error_of(exc)["code"]) == (403, "missing.permissions")
    body = wrapup_input(CODE_IDS["Spam"], "a guess")
    body.provisional = True
    ConversationsApi(only_wrapup).post_conversations_call_participant_communication_wrapup(
        *args[1:], body=body
    )
    api = ConversationsApi(only_wrapup)  # ...but reads the wrap-up: it needs no permission
    provisional = api.get_conversations_call_participant_communication_wrapup(
        *args[1:], provisional=True
    )
    assert (provisional.code, provisional.notes) == (CODE_IDS["Spam"], "a guess")
    with pytest.raises(ApiException) as exc:  # no final wrap-up yet
        api.get_conversations_call_participant_communication_wrapup(*args[1:])
    assert exc.value.status == 404
    post_wrapup(only_wrapup, *args, CODE_IDS["Sales"])
    assert get_wrapup(only_wrapup, *args).code == CODE_IDS["Sales"]
    with pytest.raises(ApiException) as exc:
        api.get_conversations_call_participant_communication_wrapup(*args[1:], provisional=True)
    assert exc.value.status == 404


def test_get_wrapup_without_one_is_404(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    with pytest.raises(ApiException) as exc:
        get_wrapup(sdk_client(emulator), "calls", conv_id(1), part_id(1, 3), comm_id(1, 3))
    assert (exc.value.status, error_of(exc)["code"]) == (404, "not.found")


NO_CODE = "conversations.error.wrapup.code.not.found"
NOT_USER = "conversations.error.participant.not.user"
REFUSALS = [
    # (why, media, conversation, participant, communication, code, expected error code)
    ("media mismatch", "emails", 1, 3, (1, 3), "Sales", "conversations.error.media.type.mismatch"),
    ("not ended", "calls", 9, 3, (9, 3), "Sales", "conversations.error.communication.not.ended"),
    ("customer", "calls", 1, 1, (1, 1), "Sales", NOT_USER),
    ("ivr", "calls", 10, 2, (10, 2), "Sales", NOT_USER),
    ("unknown code", "calls", 1, 3, (1, 3), None, NO_CODE),
    ("hidden code", "calls", 1, 3, (1, 3), "Escalation - Legal", NO_CODE),
    ("missing code", "calls", 1, 3, (1, 3), "", "bad.request"),
]


@pytest.mark.parametrize(
    ("media", "n", "p", "comm", "code_name", "error_code"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_post_wrapup_refusals_are_400(
    emulator: EmulatorHandle,
    sdk_client: MakeSdk,
    media: str,
    n: int,
    p: int,
    comm: tuple[int, int],
    code_name: str | None,
    error_code: str,
) -> None:
    if code_name is None:
        code: str | None = str(uuid.uuid4())
    elif code_name == "":
        code = None
    else:
        code = CODE_IDS[code_name]
    with pytest.raises(ApiException) as exc:
        post_wrapup(sdk_client(emulator), media, conv_id(n), part_id(n, p), comm_id(*comm), code)
    assert (exc.value.status, error_of(exc)["code"]) == (400, error_code)
    stats = emulator.stats()
    assert stats["posts_per_communication"] == {}
    assert stats["post_attempts_per_communication"] == {comm_id(*comm): 1}


def test_post_wrapup_404s_and_403s(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    api_client = sdk_client(emulator)
    sales = CODE_IDS["Sales"]
    not_found = [
        (UNKNOWN_CONVERSATION, part_id(1, 3), comm_id(1, 3)),
        (conv_id(1), part_id(2, 3), comm_id(1, 3)),  # participant of another conversation
        (conv_id(1), part_id(1, 3), comm_id(1, 9)),
        (conv_id(1), part_id(1, 3), comm_id(1, 1)),  # the customer's communication
    ]
    for ids in not_found:
        with pytest.raises(ApiException) as exc:
            post_wrapup(api_client, "calls", *ids, sales)
        assert (exc.value.status, error_of(exc)["code"]) == (404, "not.found"), ids
    with pytest.raises(ApiException) as exc:
        post_wrapup(api_client, "calls", conv_id(11), part_id(11, 3), comm_id(11, 3), sales)
    assert (exc.value.status, error_of(exc)["code"]) == (403, "not.authorized")
    readonly = sdk_client(emulator, "wrapup-batch-readonly")
    with pytest.raises(ApiException) as exc:
        post_wrapup(readonly, "calls", conv_id(1), part_id(1, 3), comm_id(1, 3), sales)
    body = error_of(exc)
    assert (exc.value.status, body["code"]) == (403, "missing.permissions")
    assert "conversation:participant:wrapup" in body["message"]
    admin = sdk_client(emulator, "wrapup-batch-admin")
    post_wrapup(admin, "calls", conv_id(11), part_id(11, 3), comm_id(11, 3), sales)
    assert emulator.stats()["posts_per_communication"] == {comm_id(11, 3): 1}


def test_terminated_and_user_participants_can_be_wrapped(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api_client = sdk_client(emulator)
    post_wrapup(api_client, "calls", conv_id(15), part_id(15, 3), comm_id(15, 3), CODE_IDS["Spam"])
    post_wrapup(api_client, "calls", conv_id(14), part_id(14, 1), comm_id(14, 1), CODE_IDS["Spam"])
    assert emulator.stats()["posts_accepted"] == 2


# ---------------------------------------------------------------------------------------------
# Analytics


def test_analytics_matches_the_conversations_api(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api_client = sdk_client(emulator)
    code = CODE_IDS["Sales"]
    post_wrapup(api_client, "calls", conv_id(3), part_id(3, 3), comm_id(3, 3), code, "upsold")
    visible = [c["id"] for c in SEED["conversations"] if c["divisionIds"][0] != RESTRICTED]
    asked = [*visible, conv_id(11), UNKNOWN_CONVERSATION]
    result = AnalyticsApi(api_client).get_analytics_conversations_details(id=asked)
    by_id = {c.conversation_id: c for c in result.conversations}
    assert set(by_id) == set(visible)
    conversations = ConversationsApi(api_client)
    for cid in visible:
        view = conversations.get_conversation(cid)
        analytic = by_id[cid]
        assert (analytic.conversation_end is None) == (view.end_time is None)
        assert analytic.division_ids == [d.division.id for d in view.divisions]
        assert [p.participant_id for p in analytic.participants] == [
            p.id for p in view.participants
        ]
        for ap, vp in zip(analytic.participants, view.participants, strict=True):
            assert (ap.purpose, ap.user_id) == (vp.purpose, vp.user_id)
            comms = [c for m in MEDIA for c in getattr(vp, SDK_ARRAY[m])]
            assert sorted(s.session_id for s in ap.sessions) == sorted(c.id for c in comms)
            wrapped = {c.id: c.wrapup.code for c in comms if c.wrapup}
            codes = {
                s.session_id: seg.wrap_up_code
                for s in ap.sessions
                for seg in s.segments
                if seg.segment_type == "wrapup" and seg.wrap_up_code
            }
            assert codes == wrapped
    segments = by_id[conv_id(3)].participants[2].sessions[0].segments
    assert [s.segment_type for s in segments] == ["alert", "interact", "wrapup"]
    assert (segments[-1].wrap_up_code, segments[-1].wrap_up_note) == (code, "upsold")
    assert by_id[conv_id(5)].participants[0].sessions[0].media_type == "message"
    assert by_id[conv_id(1)].participants[0].sessions[0].media_type == "voice"


def test_analytics_accepts_either_permission_and_names_both_when_missing(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    agent_analytics = AnalyticsApi(sdk_client(emulator, "wrapup-batch-agent-analytics"))
    got = agent_analytics.get_analytics_conversations_details(id=[conv_id(1)])
    assert [c.conversation_id for c in got.conversations] == [conv_id(1)]
    with pytest.raises(ApiException) as exc:
        AnalyticsApi(
            sdk_client(emulator, "wrapup-batch-wrapup-only")
        ).get_analytics_conversations_details(id=[conv_id(1)])
    body = error_of(exc)
    assert (exc.value.status, body["code"]) == (403, "missing.any.permissions")
    assert "analytics:conversationDetail:view" in body["message"]
    assert "analytics:agentConversationDetail:view" in body["message"]


def test_analytics_media_types_are_the_sdks(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    """Every session's mediaType loads into the SDK's AnalyticsSession (no `social`)."""
    ids = [conv_id(n) for n in (1, 4, 5, 6, 22, 23, 24, 25)]
    got = AnalyticsApi(sdk_client(emulator)).get_analytics_conversations_details(id=ids)
    types = {c.conversation_id: c.participants[2].sessions[0].media_type for c in got.conversations}
    assert [types[i] for i in ids] == [
        "voice",
        "email",
        "message",
        "callback",
        "unknown",  # a social expression: UNCONFIRMED which type analytics gives it
        "video",
        "cobrowse",
        "screenshare",
    ]


def test_after_call_work_in_both_apis(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    api_client = sdk_client(emulator)
    for n, media in ((20, "calls"), (21, "emails")):
        agent = ConversationsApi(api_client).get_conversation(conv_id(n)).participants[2]
        comm = getattr(agent, media)[0]
        assert comm.state == "disconnected"
        assert comm.after_call_work.state == "pending"
        assert comm.after_call_work.end_time is None
        assert agent.start_acw_time is not None and agent.end_acw_time is None
        assert agent.wrapup_prompt == "mandatory"
    done = ConversationsApi(api_client).get_conversation(conv_id(1)).participants[2]
    assert done.calls[0].after_call_work.state == "complete"
    assert done.end_acw_time == datetime(2026, 11, 20, 8, 8, 30, 300000, tzinfo=UTC)
    details = AnalyticsApi(api_client).get_analytics_conversations_details(
        id=[conv_id(20), conv_id(1)]
    )
    by_id = {c.conversation_id: c for c in details.conversations}
    pending = by_id[conv_id(20)].participants[2].sessions[0].segments[-1]
    assert (pending.segment_type, pending.segment_end, pending.wrap_up_code) == (
        "wrapup",
        None,
        None,
    )
    complete = by_id[conv_id(1)].participants[2].sessions[0].segments[-1]
    assert complete.segment_type == "wrapup" and complete.wrap_up_code is None
    assert complete.segment_end == done.end_acw_time


def test_a_wrapup_segment_ends_at_the_end_time_given(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api_client = sdk_client(emulator)
    body = wrapup_input(CODE_IDS["Sales"])
    body.end_time = "2026-11-20T08:08:30.300Z"
    ConversationsApi(api_client).post_conversations_call_participant_communication_wrapup(
        conv_id(1), part_id(1, 3), comm_id(1, 3), body=body
    )
    post_wrapup(api_client, "calls", conv_id(2), part_id(2, 4), comm_id(2, 4), CODE_IDS["Sales"])
    got = AnalyticsApi(api_client).get_analytics_conversations_details(id=[conv_id(1), conv_id(2)])
    by_id = {c.conversation_id: c for c in got.conversations}
    given = by_id[conv_id(1)].participants[2].sessions[0].segments[-1]
    assert given.segment_start == datetime(2026, 11, 20, 8, 7, 45, 300000, tzinfo=UTC)
    assert given.segment_end == datetime(2026, 11, 20, 8, 8, 30, 300000, tzinfo=UTC)
    # UNCONFIRMED: with no endTime, the wrap-up ends at the time of the POST (today)
    stamped = by_id[conv_id(2)].participants[3].sessions[0].segments[-1]
    assert abs((datetime.now(UTC) - stamped.segment_end).total_seconds()) < 3600


def test_system_codes_show_by_name_in_both_apis(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api_client = sdk_client(emulator)
    expected = {
        26: "ININ-WRAP-UP-TIMEOUT",
        27: "ININ-WRAP-UP-SKIPPED",
        28: "ININ-WRAP-UP-DELETED",
        29: "ININ-OUTBOUND-PREVIEW-SKIPPED",
    }
    details = AnalyticsApi(api_client).get_analytics_conversations_details(
        id=[conv_id(n) for n in expected]
    )
    in_analytics = {
        c.conversation_id: c.participants[2].sessions[0].segments[-1].wrap_up_code
        for c in details.conversations
    }
    for n, code in expected.items():
        agent = ConversationsApi(api_client).get_conversation(conv_id(n)).participants[2]
        assert agent.wrapup.code == code
        assert in_analytics[conv_id(n)] == code
    with pytest.raises(ApiException) as exc:  # not a code of the org: it cannot be POSTed
        post_wrapup(api_client, "calls", conv_id(1), part_id(1, 3), comm_id(1, 3), expected[26])
    assert error_of(exc)["code"] == NO_CODE


def test_emails_and_messages_are_never_terminated(tmp_path: Path) -> None:
    for media in ("emails", "messages"):
        data = json.loads(json.dumps(SEED))
        conversation = next(c for c in data["conversations"] if media in c["participants"][2])
        conversation["participants"][2][media][0]["state"] = "terminated"
        path = tmp_path / f"{media}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ValueError, match="cannot be terminated"):
            load_seed(path)
    states = {
        c["state"]
        for conv in SEED["conversations"]
        for p in conv["participants"]
        for media in ("emails", "messages")
        for c in p.get(media, [])
    }
    assert "terminated" not in states


def test_codes_sort_only_by_name_or_id_and_only_with_a_name(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api = RoutingApi(sdk_client(emulator))
    by_name = [e.name for e in api.get_routing_wrapupcodes(page_size=100).entities]
    assert by_name == sorted(by_name, key=str.lower)
    # sortBy is ignored unless name is given
    ignored = api.get_routing_wrapupcodes(page_size=100, sort_by="id")
    assert [e.name for e in ignored.entities] == by_name
    with_name = api.get_routing_wrapupcodes(page_size=100, name="s", sort_by="id")
    assert [e.id for e in with_name.entities] == sorted(e.id for e in with_name.entities)
    descending = api.get_routing_wrapupcodes(page_size=100, sort_order="descending")
    assert [e.name for e in descending.entities] == sorted(by_name, key=str.lower, reverse=True)
    with pytest.raises(ApiException) as exc:
        api.get_routing_wrapupcodes(name="s", sort_by="dateCreated")
    assert (exc.value.status, error_of(exc)["code"]) == (400, "bad.request")


def test_analytics_lag_knobs_and_id_limit(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    api_client = sdk_client(emulator)
    analytics = AnalyticsApi(api_client)
    emulator.config.analytics_hidden = {conv_id(1)}
    got = analytics.get_analytics_conversations_details(id=[conv_id(1), conv_id(2)])
    assert [c.conversation_id for c in got.conversations] == [conv_id(2)]
    emulator.config.analytics_wrapup_lag_s = 30
    post_wrapup(api_client, "calls", conv_id(2), part_id(2, 4), comm_id(2, 4), CODE_IDS["Spam"])
    got = analytics.get_analytics_conversations_details(id=[conv_id(2)])
    segment_types = [
        s.segment_type for s in got.conversations[0].participants[3].sessions[0].segments
    ]
    assert "wrapup" not in segment_types
    emulator.config.analytics_wrapup_lag_s = 0
    got = analytics.get_analytics_conversations_details(id=[conv_id(2)])
    assert got.conversations[0].participants[3].sessions[0].segments[-1].wrap_up_code
    too_many = [str(uuid.uuid4()) for _ in range(101)]
    with pytest.raises(ApiException) as exc:
        analytics.get_analytics_conversations_details(id=too_many)
    assert exc.value.status == 400
    assert analytics.get_analytics_conversations_details(id=too_many[:100]).conversations == []


# ---------------------------------------------------------------------------------------------
# Rate limit, storms, faults, latency, drops


def test_rate_limit_429_with_retry_after_then_admitted_again(
    make_emulator: Callable[..., EmulatorHandle],
) -> None:
    """Retry-After is the whole seconds until the oldest request leaves the window. The
    bounds are worked out from the times measured around each request, so that a slow
    machine changes the expected value, never the verdict."""
    window = 4.0  # long enough that no stall between two requests lets one through
    handle = make_emulator(EmulatorConfig(rate_limit=5, rate_window_s=window))
    token = token_for(handle)
    path = f"/api/v2/conversations/{conv_id(1)}"
    before_first = time.monotonic()
    assert [raw(handle, "GET", path, token).status for _ in range(5)] == [200] * 5
    after_fifth = time.monotonic()

    def retry_after_within_bounds() -> int:
        asked = time.monotonic()
        limited = raw(handle, "GET", path, token)
        answered = time.monotonic()
        assert limited.status == 429
        seconds = int(limited.headers["Retry-After"])
        # the oldest admitted request left the emulator's window between these two moments
        low = math.ceil(max(0.0, before_first + window - answered))
        high = math.ceil(max(0.0, after_fifth + window - asked))
        assert max(1, low) <= seconds <= max(1, high), (low, seconds, high)
        body = limited.json()
        assert body["code"] == "too.many.requests.retry.after"
        assert body["message"] == (
            f"Rate limit exceeded the maximum. Retry the request in [{seconds}] seconds"
        )
        assert body.keys() >= ERROR_KEYS
        return seconds

    retry_after_within_bounds()
    # the token endpoint is not limited, and another token has its own window
    other = token_for(handle)
    assert raw(handle, "GET", path, other).status == 200
    seconds = retry_after_within_bounds()
    time.sleep(seconds + 0.05)
    assert raw(handle, "GET", path, token).status == 200
    stats = handle.stats(detail=False)
    assert stats["throttled"] == 2
    assert stats["requests"]["GET /api/v2/conversations/{conversationId}"] == {
        "200": 7,
        "429": 2,
    }


def test_rate_limit_per_client_counts_every_token_of_a_client_in_one_window(
    make_emulator: Callable[..., EmulatorHandle],
) -> None:
    handle = make_emulator(
        EmulatorConfig(
            rate_limit=4, rate_window_s=30.0, rate_limit_scope="client", worker_clients=2
        )
    )
    assert handle.client(worker_client_id(2)).client_secret == worker_client_secret(2)
    path = f"/api/v2/conversations/{conv_id(1)}"
    first, second = token_for(handle), token_for(handle)
    assert [raw(handle, "GET", path, t).status for t in (first, second, first, second)] == [200] * 4
    # a new token of the same client meets the same full window
    assert raw(handle, "GET", path, token_for(handle)).status == 429
    # another client (a worker client, a copy of the default one) has its own window
    worker = token_for(handle, worker_client_id(1))
    assert raw(handle, "GET", path, worker).status == 200
    by_client = handle.stats(detail=False)["by_client"]
    assert by_client == {
        handle.client_id: {"admitted": 4, "throttled": 1},
        worker_client_id(1): {"admitted": 1, "throttled": 0},
    }
    # switched back to per token at run time: a fresh token has a window of its own again
    response = raw(handle, "POST", "/__emulator__/config", json={"rate_limit_scope": "token"})
    assert response.status == 200
    assert raw(handle, "GET", path, token_for(handle)).status == 200
    refused = raw(handle, "POST", "/__emulator__/config", json={"rate_limit_scope": "org"})
    assert refused.status == 400
    assert "rate_limit_scope must be one of token, client" in refused.data.decode()


def test_storm_answers_429_until_it_ends(emulator: EmulatorHandle) -> None:
    token = token_for(emulator)
    path = f"/api/v2/conversations/{conv_id(1)}"
    emulator.config.start_storm(0.5, retry_after=7)
    response = raw(emulator, "GET", path, token)
    assert (response.status, response.headers["Retry-After"]) == (429, "7")
    time.sleep(0.55)
    assert raw(emulator, "GET", path, token).status == 200


def _statuses(handle: EmulatorHandle, token: str, count: int) -> list[int]:
    path = f"/api/v2/conversations/{conv_id(1)}"
    return [raw(handle, "GET", path, token).status for _ in range(count)]


def test_fault_injection_is_reproducible(make_emulator: Callable[..., EmulatorHandle]) -> None:
    handle = make_emulator(EmulatorConfig(fault_rate=0.5, random_seed=42))
    token = token_for(handle)
    first = _statuses(handle, token, 30)
    assert set(first) == {200, 502, 503, 504}
    assert handle.stats()["faults"] == sum(s != 200 for s in first)
    handle.reset()  # re-seeds the dice
    assert _statuses(handle, token, 30) == first
    other = make_emulator(EmulatorConfig(fault_rate=0.5, random_seed=42))
    assert _statuses(other, token_for(other), 30) == first
    handle.config.random_seed = 43
    assert _statuses(handle, token, 30) != first
    fault = raw(handle, "GET", f"/api/v2/conversations/{conv_id(1)}", token)
    while fault.status == 200:
        fault = raw(handle, "GET", f"/api/v2/conversations/{conv_id(1)}", token)
    assert fault.json().keys() >= ERROR_KEYS
    assert fault.json()["status"] == fault.status


def test_latency_is_added_without_blocking_the_server(
    make_emulator: Callable[..., EmulatorHandle],
) -> None:
    handle = make_emulator(EmulatorConfig(latency_ms=400))
    token = token_for(handle)
    durations: list[float] = []

    def one() -> None:
        start = time.monotonic()
        assert raw(handle, "GET", f"/api/v2/conversations/{conv_id(1)}", token).status == 200
        durations.append(time.monotonic() - start)

    start = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(durations) == 8 and min(durations) >= 0.4
    # eight 400 ms requests overlapped: one after the other they take 3.2 s (the margin is
    # for a busy machine)
    assert time.monotonic() - start < 2.4


def test_dropped_connection_then_normal_again(emulator: EmulatorHandle) -> None:
    token = token_for(emulator)
    path = f"/api/v2/conversations/{conv_id(1)}"
    emulator.config.drop_rate = 1.0
    with pytest.raises(urllib3.exceptions.HTTPError):
        raw(emulator, "GET", path, token)
    emulator.config.drop_rate = 0.0
    assert raw(emulator, "GET", path, token).status == 200
    stats = emulator.stats()
    assert stats["dropped"] == 1
    assert stats["requests"]["GET /api/v2/conversations/{conversationId}"] == {
        "dropped": 1,
        "200": 1,
    }


def test_failing_conversation_and_ghost_write(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api_client = sdk_client(emulator)
    emulator.config.failing_conversations = {conv_id(1)}
    with pytest.raises(ApiException) as exc:
        post_wrapup(api_client, "calls", conv_id(1), part_id(1, 3), comm_id(1, 3), CODE_IDS["Spam"])
    assert (exc.value.status, error_of(exc)["code"]) == (500, "internal.server.error")
    emulator.config.ghost_write_rate = 1.0
    with pytest.raises(ApiException) as exc:
        post_wrapup(api_client, "calls", conv_id(2), part_id(2, 4), comm_id(2, 4), CODE_IDS["Spam"])
    assert exc.value.status == 504
    emulator.config.ghost_write_rate = 0.0
    assert (
        get_wrapup(api_client, "calls", conv_id(2), part_id(2, 4), comm_id(2, 4)).code
        == CODE_IDS["Spam"]
    )
    stats = emulator.stats()
    assert stats["posts_per_communication"] == {comm_id(2, 4): 1}
    assert stats["ghost_writes"] == 1


def raw_spam_on_first_call(emulator: EmulatorHandle, **kwargs: Any) -> urllib3.BaseHTTPResponse:
    """POST "Spam" on the agent call of seeded conversation 1, once (no retries)."""
    path = (
        f"/api/v2/conversations/calls/{conv_id(1)}/participants/{part_id(1, 3)}"
        f"/communications/{comm_id(1, 3)}/wrapup"
    )
    return raw(
        emulator,
        "POST",
        path,
        token_for(emulator),
        body=json.dumps({"code": CODE_IDS["Spam"]}),
        headers={"Content-Type": "application/json"},
        retries=False,
        **kwargs,
    )


def test_a_slow_post_whose_client_gave_up_still_lands(emulator: EmulatorHandle) -> None:
    """Latency is processing time: the request has arrived; a client that times out does not
    stop it, so the wrap-up is stored after the client saw only a timeout (issue 5)."""
    emulator.config.latency_ms = 3000
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        raw_spam_on_first_call(emulator, timeout=0.1)
    assert emulator.stats()["posts_accepted"] == 0  # not yet ...
    deadline = time.monotonic() + 30
    while emulator.stats()["posts_accepted"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = emulator.stats(detail=True)
    assert stats["posts_per_communication"] == {comm_id(1, 3): 1}  # ... but then
    assert stats["wrapups"][comm_id(1, 3)] == CODE_IDS["Spam"]


def test_a_connection_dropped_mid_response_after_the_write(emulator: EmulatorHandle) -> None:
    emulator.config.drop_after_rate = 1.0
    with pytest.raises(urllib3.exceptions.HTTPError):
        raw_spam_on_first_call(emulator)
    emulator.config.drop_after_rate = 0.0
    stats = emulator.stats(detail=True)
    assert stats["posts_per_communication"] == {comm_id(1, 3): 1}  # stored ...
    assert stats["dropped"] == 1  # ... and the answer lost
    assert stats["requests"][
        "POST /api/v2/conversations/{media}/{conversationId}/participants/{participantId}"
        "/communications/{communicationId}/wrapup"
    ] == {"dropped": 1}


# ---------------------------------------------------------------------------------------------
# Stats, config and reset over HTTP


def test_stats_counts_and_detail(emulator: EmulatorHandle, sdk_client: MakeSdk) -> None:
    api_client = sdk_client(emulator)
    conversations = ConversationsApi(api_client)
    conversations.get_conversation(conv_id(1))
    with pytest.raises(ApiException):
        conversations.get_conversation(UNKNOWN_CONVERSATION)
    post_wrapup(api_client, "calls", conv_id(1), part_id(1, 3), comm_id(1, 3), CODE_IDS["Spam"])
    with pytest.raises(ApiException):
        post_wrapup(api_client, "calls", conv_id(9), part_id(9, 3), comm_id(9, 3), CODE_IDS["Spam"])
    summary = raw(emulator, "GET", "/__emulator__/stats").json()
    assert summary["requests"]["GET /api/v2/conversations/{conversationId}"] == {
        "200": 1,
        "404": 1,
    }
    post_key = next(k for k in summary["requests"] if k.startswith("POST /api/v2/conversations"))
    assert post_key.endswith("/communications/{communicationId}/wrapup")
    assert summary["requests"][post_key] == {"202": 1, "400": 1}
    assert summary["requests"]["POST /oauth/token"] == {"200": 1}
    assert (summary["posts_accepted"], summary["post_attempts"]) == (1, 2)
    assert "wrapups" not in summary and "posts_per_communication" not in summary
    detail = raw(emulator, "GET", "/__emulator__/stats?detail=1").json()
    assert detail["posts_per_communication"] == {comm_id(1, 3): 1}
    assert detail["post_attempts_per_communication"] == {comm_id(1, 3): 1, comm_id(9, 3): 1}
    assert detail["wrapups"][comm_id(1, 3)] == CODE_IDS["Spam"]
    assert detail["wrapups"][comm_id(7, 3)] == CODE_IDS["Sales"]  # seeded
    assert raw(emulator, "POST", "/__emulator__/reset", json={"wrapups": True}).status == 200
    after = emulator.stats()
    assert after["requests"] == {} and after["posts_per_communication"] == {}
    assert comm_id(1, 3) not in after["wrapups"] and comm_id(7, 3) in after["wrapups"]


def test_config_over_http(emulator: EmulatorHandle) -> None:
    token = token_for(emulator)
    changed = raw(emulator, "POST", "/__emulator__/config", json={"fault_rate": 1.0})
    assert changed.status == 200 and changed.json()["fault_rate"] == 1.0
    assert emulator.config.fault_rate == 1.0
    assert raw(emulator, "GET", f"/api/v2/conversations/{conv_id(1)}", token).status >= 500
    for bad in ({"nope": 1}, {"port": 1}, {"fault_rate": 2}, {"rate_limit": "x"}):
        assert raw(emulator, "POST", "/__emulator__/config", json=bad).status == 400, bad
    raw(emulator, "POST", "/__emulator__/config", json={"fault_rate": 0, "storm_seconds": 0.3})
    assert raw(emulator, "GET", f"/api/v2/conversations/{conv_id(1)}", token).status == 429
    knobs = raw(emulator, "GET", "/__emulator__/config").json()
    assert knobs["fault_rate"] == 0 and knobs["storm_seconds_left"] > 0


def test_config_update_validates_everything_first() -> None:
    config = EmulatorConfig()
    with pytest.raises(ValueError):
        config.update({"fault_rate": 0.5, "drop_rate": -1})
    assert config.fault_rate == 0.0
    config.update({"failing_conversations": [conv_id(1).upper()], "rate_limit": 0})
    assert config.failing_conversations == {conv_id(1)} and config.rate_limit == 0


# ---------------------------------------------------------------------------------------------
# Generated conversations and the command line


def test_generated_conversations(
    make_emulator: Callable[..., EmulatorHandle], sdk_client: MakeSdk
) -> None:
    ids = [generated_conversation_id(i) for i in range(1000)]
    assert ids == [generated_conversation_id(i) for i in range(1000)]
    assert len(set(ids)) == 1000 and all(str(uuid.UUID(i)) == i for i in ids)
    handle = make_emulator(EmulatorConfig(generate=1000))
    api_client = sdk_client(handle)
    conversations = ConversationsApi(api_client)
    media_seen = set()
    for i in (0, 7, 8, 9, 999):
        conv = conversations.get_conversation(ids[i])
        assert conv.end_time is not None
        agents = [p for p in conv.participants if p.purpose == "agent"]
        assert len(agents) == 1 and agents[0].user_id
        comms = [(m, c) for m in MEDIA for c in getattr(agents[0], SDK_ARRAY[m])]
        assert len(comms) == 1 and comms[0][1].wrapup is None
        media_seen.add(comms[0][0])
        assert conv.divisions[0].division.id in (HOME, SALES_DIV)
    assert media_seen == {"calls", "callbacks", "emails", "messages"}  # the generator's four
    with pytest.raises(ApiException) as exc:
        conversations.get_conversation(generated_conversation_id(1000))
    assert exc.value.status == 404
    conv = conversations.get_conversation(ids[3])
    agent = conv.participants[1]
    post_wrapup(api_client, "calls", conv.id, agent.id, agent.calls[0].id, CODE_IDS["Sales"])
    assert (
        conversations.get_conversation(ids[3]).participants[1].calls[0].wrapup.code
        == CODE_IDS["Sales"]
    )
    assert handle.stats()["conversations"] == 1000 + len(SEED["conversations"])


def test_module_command_prints_the_environment() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "wrapup_batch.emulator", "--port", "0", "--generate", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        env = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
        assert env["GENESYSCLOUD_OAUTHCLIENT_ID"] == "wrapup-batch-demo"
        assert env["GENESYSCLOUD_OAUTHCLIENT_SECRET"] == "demo-secret-change-me"
        health = urllib3.request("GET", env["GENESYSCLOUD_API_HOST"] + "/__emulator__/health")
        assert health.json() == {"ok": True, "conversations": 10 + len(SEED["conversations"])}
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_sample_inputs_point_at_seeded_conversations() -> None:
    seeded_ids = {c["id"] for c in SEED["conversations"]}
    with open(REPO / "sample_data" / "reclassify.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["conversation_id"] for r in rows} - seeded_ids == {UNKNOWN_CONVERSATION}
    with sqlite3.connect(REPO / "sample_data" / "crm.sqlite") as db:
        nightly = db.execute("SELECT conversation_id, wrapup_code FROM wrapup_backfill").fetchall()
    db.close()
    assert nightly and {cid.lower() for cid, _ in nightly} <= seeded_ids
    assert {code for _, code in nightly} <= VISIBLE_CODES
