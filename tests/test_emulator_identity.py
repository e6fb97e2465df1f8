"""The emulator's org, users' tokens, queue wrap-up codes and refusal switches, through the SDK.

`GET /api/v2/organizations/me` (its id configurable: two emulators, two orgs), `GET
/api/v2/users/me`, users' access tokens (issued, expired, revoked), `GET
/api/v2/conversations/{id}/participants/{pid}/wrapupcodes`, and the `refuse_wrapups` and
`queue_codes_only` switches, each driven by the official SDK on a real emulator.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PureCloudPlatformClientV2 import (
    ApiClient,
    ConversationsApi,
    OrganizationApi,
    UsersApi,
)
from PureCloudPlatformClientV2.rest import ApiException
from test_emulator import (
    CODE_IDS,
    HTTP,
    VISIBLE_CODES,
    comm_id,
    conv_id,
    part_id,
    wrapup_input,
)

from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle
from wrapup_batch.emulator.__main__ import parse_args
from wrapup_batch.emulator.config import DEFAULT_ORG_ID, DEFAULT_ORG_NAME

MakeSdk = Callable[..., ApiClient]
ALICE = "b0000001-0000-4000-8000-000000000000"
OTHER = "0e000000-0000-4000-8000-0000000000b2"
RECLASSIFY = Path(__file__).resolve().parent.parent / "sample_data" / "reclassify.csv"
CAROL = "b0000003-0000-4000-8000-000000000000"
SUPPORT_QUEUE_CODES = {
    "Support - Billing",
    "Support - Technical",
    "Complaint",
    "No Answer",
    "Callback Scheduled",
    "Spam",
    "Wrong Number",
    "Follow-up Required",
}
SALES_QUEUE_CODES = {"Sales", "Sales - Upsell", "Complaint", "No answer", "Follow-up Required"}


def with_token(handle: EmulatorHandle, token: str) -> ApiClient:
    """An SDK client carrying this token as given (a user's token: nothing renews it)."""
    from conftest import NoRetryHttpClient

    api_client = ApiClient(host=handle.base_url)
    api_client.set_http_client(NoRetryHttpClient())
    api_client.access_token = token
    return api_client


def error_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def control(handle: EmulatorHandle, path: str, body: dict[str, Any]) -> Any:
    response = HTTP.request(
        "POST",
        handle.base_url + path,
        body=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    return response.status, json.loads(response.data)


# -- the org --------------------------------------------------------------------------------------


def test_organizations_me_names_the_configured_org(
    make_emulator: Callable[..., EmulatorHandle], sdk_client: MakeSdk
) -> None:
    first = make_emulator()
    other = make_emulator(EmulatorConfig(org_id=OTHER, org_name="B"))

    org = OrganizationApi(sdk_client(first)).get_organizations_me()
    second = OrganizationApi(sdk_client(other)).get_organizations_me()

    assert (org.id, org.name, org.state) == (DEFAULT_ORG_ID, DEFAULT_ORG_NAME, "active")
    assert (second.id, second.name) == (OTHER, "B")
    # no permission needed: the read-only client reads it too
    readonly = sdk_client(first, "wrapup-batch-readonly")
    assert OrganizationApi(readonly).get_organizations_me().id == DEFAULT_ORG_ID


# -- users' tokens -------------------------------------------------------------------------------


def test_a_users_token_acts_as_that_user_and_users_me_names_them(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    token = emulator.user_token(CAROL)
    api = with_token(emulator, token)

    me = UsersApi(api).get_users_me()
    conversation = ConversationsApi(api).get_conversation(conv_id(1))
    assert (me.id, me.name) == (CAROL, "Carol Agent")
    assert conversation.id == conv_id(1)
    assert OrganizationApi(api).get_organizations_me().id == DEFAULT_ORG_ID
    ConversationsApi(api).post_conversations_call_participant_communication_wrapup(
        conv_id(1), part_id(1, 3), comm_id(1, 3), body=wrapup_input(CODE_IDS["Sales"])
    )
    assert emulator.state.wrapups[comm_id(1, 3)].code == CODE_IDS["Sales"]
    # a client-credentials token has no user
    with pytest.raises(ApiException) as refused:
        UsersApi(sdk_client(emulator)).get_users_me()
    assert refused.value.status == 400
    assert "requires a user context" in error_of(refused.value)["message"]


def test_a_users_token_expires_and_can_be_revoked(emulator: EmulatorHandle) -> None:
    expired = with_token(emulator, emulator.user_token(ttl=0))
    token = emulator.user_token()
    live = with_token(emulator, token)
    assert UsersApi(live).get_users_me().id == ALICE  # the seed's first user by default

    with pytest.raises(ApiException) as gone:
        UsersApi(expired).get_users_me()
    assert gone.value.status == 401

    assert emulator.revoke_token(token) is True
    with pytest.raises(ApiException) as revoked:
        ConversationsApi(live).get_conversation(conv_id(1))
    assert revoked.value.status == 401
    assert error_of(revoked.value)["code"] in ("bad.credentials", "credentials.expired")
    assert emulator.revoke_token(token) is False


def test_users_tokens_over_the_control_routes(emulator: EmulatorHandle) -> None:
    status, issued = control(emulator, "/__emulator__/user-tokens", {"userId": CAROL})
    assert status == 200 and issued["userId"] == CAROL and issued["token_type"] == "bearer"
    api = with_token(emulator, issued["access_token"])
    assert UsersApi(api).get_users_me().id == CAROL

    status, revoked = control(emulator, "/__emulator__/revoke", {"token": issued["access_token"]})
    assert (status, revoked) == (200, {"revoked": True})
    with pytest.raises(ApiException) as refused:
        UsersApi(api).get_users_me()
    assert refused.value.status == 401

    assert control(emulator, "/__emulator__/user-tokens", {"userId": "nobody"})[0] == 400
    assert control(emulator, "/__emulator__/user-tokens", {"ttlSeconds": -1})[0] == 400
    assert control(emulator, "/__emulator__/revoke", {})[0] == 400


# -- a participant's queue wrap-up codes -------------------------------------------------------


def test_participant_wrapupcodes_lists_the_queue_codes(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api = ConversationsApi(sdk_client(emulator))

    support = api.get_conversation_participant_wrapupcodes(conv_id(1), part_id(1, 3))
    sales = api.get_conversation_participant_wrapupcodes(conv_id(5), part_id(5, 3))
    no_queue = api.get_conversation_participant_wrapupcodes(conv_id(14), part_id(14, 1))

    assert {c.name for c in support} == SUPPORT_QUEUE_CODES
    assert {c.name for c in sales} == SALES_QUEUE_CODES
    assert all(c.id == CODE_IDS[c.name] for c in support + sales)
    assert {c.name for c in no_queue} == VISIBLE_CODES  # UNCONFIRMED: no queue, every code
    with pytest.raises(ApiException) as unknown:
        api.get_conversation_participant_wrapupcodes(conv_id(1), part_id(1, 9))
    assert unknown.value.status == 404


# -- refusal switches ----------------------------------------------------------------------------


def post(api: ConversationsApi, media: str, n: int, code_name: str) -> None:
    method = getattr(api, f"post_conversations_{media}_participant_communication_wrapup")
    method(conv_id(n), part_id(n, 3), comm_id(n, 3), body=wrapup_input(CODE_IDS[code_name]))


def test_queue_codes_only_refuses_a_code_outside_the_queue(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api = ConversationsApi(sdk_client(emulator))
    post(api, "message", 5, "Support - Technical")  # switched off: any visible code goes

    emulator.config.queue_codes_only = True
    with pytest.raises(ApiException) as refused:
        post(api, "message", 5, "Support - Billing")  # a Support code for a Sales queue
    post(api, "message", 5, "Sales - Upsell")  # in the Sales queue's list

    body = error_of(refused.value)
    assert (refused.value.status, body["code"]) == (
        400,
        "conversations.error.wrapup.code.not.in.queue",
    )
    assert part_id(5, 3) in body["message"] and body["contextId"]
    assert emulator.state.wrapups[comm_id(5, 3)].code == CODE_IDS["Sales - Upsell"]


def test_refuse_wrapups_answers_every_post_with_the_code(
    emulator: EmulatorHandle, sdk_client: MakeSdk
) -> None:
    api = ConversationsApi(sdk_client(emulator))
    emulator.config.update({"refuse_wrapups": "wrapup.not.allowed.for.client"})

    for media, n in (("call", 1), ("email", 4), ("message", 5), ("callback", 6)):
        with pytest.raises(ApiException) as refused:
            post(api, media, n, "Complaint")
        body = error_of(refused.value)
        assert (refused.value.status, body["code"]) == (400, "wrapup.not.allowed.for.client")
    assert emulator.stats()["posts_accepted"] == 0

    emulator.config.update({"refuse_wrapups": ""})
    post(api, "call", 1, "Complaint")
    assert emulator.stats()["posts_accepted"] == 1


def test_the_switches_from_the_command_line() -> None:
    config = parse_args(
        [
            "--org-id",
            "o-1",
            "--org-name",
            "Org One",
            "--refuse-wrapups",
            "x.y",
            "--queue-codes-only",
        ]
    )
    assert (config.org_id, config.org_name) == ("o-1", "Org One")
    assert (config.refuse_wrapups, config.queue_codes_only) == ("x.y", True)
    defaults = parse_args([])
    assert (defaults.org_id, defaults.refuse_wrapups, defaults.queue_codes_only) == (
        DEFAULT_ORG_ID,
        "",
        False,
    )
    with pytest.raises(ValueError, match="only be set when the emulator starts"):
        defaults.update({"org_id": "other"})
    with pytest.raises(ValueError, match="true or false"):
        defaults.update({"queue_codes_only": "yes"})


def test_the_emulator_command_with_the_switches_and_a_users_token_end_to_end(
    tmp_path: Path,
) -> None:
    # Both sides as a user would start them: `wrapup-batch emulator ...` prints where it is
    # and a user's token; `wrapup-batch run` with that token meets an org that refuses.
    emulator = subprocess.Popen(
        [
            sys.executable, "-m", "wrapup_batch", "emulator", "--port", "0", "--org-id", OTHER,
            "--org-name", "Refusing Org", "--refuse-wrapups", "wrapup.refused", "--user-token",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert emulator.stdout is not None
        assert emulator.stdout.readline().startswith("emulator serving http://127.0.0.1:")
        printed = dict(
            emulator.stdout.readline().strip().removeprefix("export ").split("=", 1)
            for _ in range(4)
        )
        token = printed.pop("GENESYSCLOUD_ACCESS_TOKEN")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENESYSCLOUD_")}
        env.update(GENESYSCLOUD_API_HOST=printed["GENESYSCLOUD_API_HOST"])
        env.update(GENESYSCLOUD_ACCESS_TOKEN=token)
        ledger = tmp_path / "ledger.db"

        run = subprocess.run(
            [
                sys.executable, "-m", "wrapup_batch", "run", str(RECLASSIFY), "--ledger",
                str(ledger), "--stop-after-refusals", "2", "--rate-limit", "6000", "-q",
            ],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        emulator.terminate()
        assert emulator.wait(timeout=10) == 0

    assert run.returncode == 3, run.stderr
    assert "the first 2 wrap-up POSTs were all refused alike" in run.stderr
    assert 'Genesys answered 400 wrapup.refused: "' in run.stderr
    assert token not in run.stderr + run.stdout
    with sqlite3.connect(ledger) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'org_%'").fetchall())
    assert (meta["org_id"], meta["org_name"]) == (OTHER, "Refusing Org")
    assert meta["org_principal"] == f"user Alice Agent ({ALICE})"
