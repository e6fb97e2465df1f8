"""The emulator's aiohttp application: the Platform API routes, faults, rate limit and stats.

Behaviours that are UNCONFIRMED assumptions about the real Genesys Cloud API (nothing here was
tried against a live org; see shared/reference/genesys-api.md):
- OAuth: a wrong client id or secret answers 401 `{"error":"invalid_client",...}`; a grant type
  other than client_credentials answers 400 `{"error":"unsupported_grant_type",...}`.
- A missing bearer token answers 401 `authentication.required`; an unknown one 401
  `bad.credentials` "Invalid login credentials."; an expired one 401 `credentials.expired`
  (the code public clients have seen; the message is a guess).
- A missing permission answers 403 `missing.permissions` "Unable to perform the requested
  action. You are missing the following permission(s): [...]"; a route that accepts any of
  several answers 403 `missing.any.permissions` naming them all. Permissions: conversation GET
  needs conversation:communication:view, wrap-up POST conversation:participant:wrapup, codes
  routing:wrapupCode:view, analytics analytics:conversationDetail:view or
  analytics:agentConversationDetail:view (any). The wrap-up GET needs none (as the SDK
  documents it), but the conversation's division must still be visible.
- Wrap-up codes: pageSize above 100 is clamped to 100; pageSize or pageNumber below 1 or not a
  number → 400 `bad.request`; `name` filters by case-insensitive substring (a `*` is ignored);
  pageCount is 0 when nothing matches; a pageNumber past the end gives an empty page; `sortBy`
  is `name` or `id` (anything else → 400 `bad.request`) and, as the SDK documents, is ignored
  unless `name` is given (then the codes come by name); `sortOrder` always applies.
- A malformed conversation id answers 404 like an unknown one.
- A conversation is visible when any of its divisions is visible to the client; an invisible
  one answers 403 `not.authorized` "Access to Conversation <id> is forbidden." on every route.
- Unknown participant or communication (also a communication of another participant) → 404
  `not.found`.
- Wrap-up POST: the media in the path must be the communication's (400
  `conversations.error.media.type.mismatch`); the communication must be disconnected or
  terminated (400 `conversations.error.communication.not.ended`); the participant must be a
  user with a userId (400 `conversations.error.participant.not.user`); the code must be an id
  visible to the client (400 `conversations.error.wrapup.code.not.found`); the code need not be
  one of the queue's codes; a body that is not a JSON object, lacks `code` or has a field of
  the wrong type → 400 `bad.request`; an existing wrap-up is overwritten (202); there is no
  time limit after the end of the communication; the stored `name` is the code's name; a
  missing `endTime` becomes the time of the POST.
- Wrap-up GET on a communication without one → 404 `not.found`; `provisional=true` reads the
  provisional wrap-up (one POSTed with `provisional: true`), otherwise only a final one is
  read (a provisional one alone → 404).
- Media: all eight wrap-up paths (calls, callbacks, emails, messages, socials, videos,
  cobrowsesessions, screenshares); a social expression's analytics `mediaType` is `unknown`
  (the SDK's AnalyticsSession has no `social`). Emails and messages are never `terminated`.
- After-call work: a communication may carry `afterCallWork` {state, startTime, endTime}; a
  POST while it is `pending` is accepted (the race the tool avoids); in analytics, pending
  after-call work is an open wrapup segment without a code.
- System codes (`ININ-WRAP-UP-TIMEOUT`, `ININ-WRAP-UP-SKIPPED`, `ININ-WRAP-UP-DELETED`,
  `ININ-OUTBOUND-*`) appear as the code of a seeded wrap-up, by that name, in both APIs; they
  are not in the code list and cannot be POSTed.
- A participant's own `wrapup` is the wrap-up most recently set on any of its communications;
  a conversation's `endTime` is absent until every communication has ended.
- Analytics multi-get: more than 100 ids (or none) → 400 `bad.request`; unknown ids, ids in
  invisible divisions and ids analytics has not caught up with are simply absent;
  `sessionId` is the communication id; a wrap-up appears as a `wrapup` segment after the
  interact segment, with `wrapUpCode` and `wrapUpNote`.
- Rate limit: counts admitted /api/v2 requests per token in a rolling 60 s window (a new
  token starts an empty window; Genesys may count per client instead); UNCONFIRMED which:
  `rate_limit_scope = "client"` counts every token of one OAuth client in one window, as the
  Genesys docs' "per OAuth client" suggests; 401s and 429s are
  not counted; `Retry-After` is the whole seconds (at least 1) until the oldest
  request in the window leaves it. /oauth/token is not limited.
- Injected 5xx bodies: 503 `service.unavailable`, 502 `bad.gateway`, 504 `gateway.timeout`,
  500 `internal.server.error`, each with a Genesys error body.
- `GET /api/v2/organizations/me` needs no permission (for a client or a user) and answers the
  Organization model's fields for `config.org_id` / `config.org_name`.
- `GET /api/v2/users/me` with a client-credentials token answers 400 `bad.request` ("requires
  a user context"); with a user's token, that user.
- A user's token (`state.issue_user_token`, `POST /__emulator__/user-tokens`) acts as the
  user with every permission the tool needs in the default client's divisions; it expires
  after its lifetime and can be revoked; nothing renews it (a 401 like any unknown token).
- `GET /api/v2/conversations/{id}/participants/{pid}/wrapupcodes` needs
  conversation:communication:view and lists the codes of the participant's queue that the
  caller can see; a participant without a queue, or a queue without a list, gets every code.
  Real orgs accept a code outside that list on the POST (so does the emulator) unless
  `queue_codes_only` is on: then 400 `conversations.error.wrapup.code.not.in.queue`.
- `refuse_wrapups` (a code): every wrap-up POST to a communication that exists answers 400
  with that code, after the permission check, as an org that refuses these credentials
  wrap-ups would (the real status, code and message are unknown).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import BasicAuth, web
from aiohttp.web_urldispatcher import AbstractRoute

from wrapup_batch.emulator.config import EmulatorConfig
from wrapup_batch.emulator.login import (
    LOGIN_KEY,
    add_login_routes,
    authorization_code_grant,
    login_users_me,
)
from wrapup_batch.emulator.model import (
    ANALYTICS_PERMISSIONS,
    MEDIA_TYPES,
    PERM_VIEW_CODES,
    PERM_VIEW_CONVERSATION,
    PERM_WRAPUP,
    Communication,
    Conversation,
    OAuthClient,
    Participant,
    Wrapup,
)
from wrapup_batch.emulator.seed import iso_ms, now_iso
from wrapup_batch.emulator.state import EmulatorState
from wrapup_batch.emulator.views import (
    analytics_json,
    code_json,
    conversation_json,
    error_body,
)

STATE_KEY = web.AppKey("state", EmulatorState)
ROUTE_KEYS = web.AppKey("route_keys", dict[AbstractRoute, str])
CLIENT_KEY = web.RequestKey("client", OAuthClient)
WRAPUP_ROUTE = (
    "/api/v2/conversations/{media:" + "|".join(MEDIA_TYPES) + "}/{conversationId}"
    "/participants/{participantId}/communications/{communicationId}/wrapup"
)
POST_WRAPUP_KEY = (
    "POST /api/v2/conversations/{media}/{conversationId}/participants/{participantId}"
    "/communications/{communicationId}/wrapup"
)
_FAULTS = (
    (503, "service.unavailable", "Service Unavailable"),
    (502, "bad.gateway", "Bad Gateway"),
    (504, "gateway.timeout", "The request timed out."),
)
_dumps = partial(json.dumps, separators=(",", ":"))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DroppedConnection(Exception):
    """Raised after the transport was closed on purpose: no response is written."""


# ---------------------------------------------------------------------------------------------
# Responses


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def genesys_error(
    status: int,
    code: str,
    message: str,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = error_body(status, code, message, params)
    all_headers = {"ININ-Correlation-Id": body["contextId"], **(headers or {})}
    return json_response(body, status, all_headers)


def rate_limited(retry_after: int) -> web.Response:
    return genesys_error(
        429,
        "too.many.requests.retry.after",
        f"Rate limit exceeded the maximum. Retry the request in [{retry_after}] seconds",
        {"0": str(retry_after)},
        {"Retry-After": str(retry_after)},
    )


def missing_permission(permission: str) -> web.Response:
    return genesys_error(
        403,
        "missing.permissions",
        "Unable to perform the requested action. You are missing the following "
        f"permission(s): [{permission}]",
        {"permissions": permission},
    )


def missing_any_permission(permissions: tuple[str, ...]) -> web.Response:
    listed = ", ".join(permissions)
    return genesys_error(
        403,
        "missing.any.permissions",
        "Unable to perform the requested action. You must have at least one of the following "
        f"permissions assigned: [{listed}]",
        {"permissions": listed},
    )


def bad_request(message: str, code: str = "bad.request") -> web.Response:
    return genesys_error(400, code, message)


def not_found(message: str) -> web.Response:
    return genesys_error(404, "not.found", message)


# ---------------------------------------------------------------------------------------------
# Middleware: stats for every route; latency, auth, storm, rate limit, drops and faults for
# /api/v2.


def route_key(request: web.Request) -> str:
    """`METHOD /path/template` of the matched route, `METHOD (unmatched)` otherwise."""
    route = request.match_info.route
    cache = request.app[ROUTE_KEYS]
    found = cache.get(route)
    if found is None:
        resource = route.resource
        if resource is None:
            return f"{request.method} (unmatched)"
        found = cache[route] = f"{request.method} {resource.canonical}"
    return found


@web.middleware
async def emulator_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if path.startswith("/__emulator__/"):
        return await handler(request)
    state = request.app[STATE_KEY]
    route = route_key(request)
    if route == POST_WRAPUP_KEY:
        comm_id = request.match_info.get("communicationId", "").lower()
        state.stats.post_attempts_per_communication[comm_id] += 1
    try:
        if path.startswith("/api/v2/"):
            response = await _api_pipeline(request, handler, state)
        else:
            response = await handler(request)
    except DroppedConnection:
        state.stats.count(route, "dropped")
        state.stats.dropped += 1
        # Nothing reaches the client: the transport is already aborted.
        return web.Response(status=500)
    except web.HTTPException as exc:
        response = _http_exception_as_genesys(exc)
    state.stats.count(route, response.status)
    if response.status == 429:
        state.stats.throttled += 1
    return response


async def _api_pipeline(
    request: web.Request, handler: Handler, state: EmulatorState
) -> web.StreamResponse:
    config = state.config
    delay = config.latency_ms
    if state.chance(config.latency_spike_rate):
        delay += config.latency_spike_ms
    if delay > 0:
        if request.can_read_body:
            # The request has arrived whole; it is the processing that is slow. A client that
            # gives up meanwhile does not stop it (aiohttp does not cancel the handler), so a
            # slow wrap-up POST still lands after its client timed out, as on a real server.
            await request.read()
        await asyncio.sleep(delay / 1000)
    token, client = _authenticate(request, state)
    if client is None:
        return _unauthorized(token, expired=token in state.expired_tokens)
    storm_left = config.storm_until - time.monotonic()
    if storm_left > 0:
        return rate_limited(config.storm_retry_after or max(1, math.ceil(storm_left)))
    retry_after = state.admit(client.client_id if config.rate_limit_scope == "client" else token)
    if retry_after:
        state.stats.throttled_by_client[client.client_id] += 1
        return rate_limited(retry_after)
    state.stats.admitted_by_client[client.client_id] += 1
    if state.chance(config.drop_rate):
        _drop(request)
    if state.chance(config.fault_rate):
        status, code, message = _FAULTS[state.rng.randrange(len(_FAULTS))]
        state.stats.faults += 1
        return genesys_error(status, code, message)
    request[CLIENT_KEY] = client
    response = await handler(request)
    if state.chance(config.drop_after_rate):
        _drop(request)  # handled (a wrap-up stored), then the connection dies mid-response
    return response


def _authenticate(request: web.Request, state: EmulatorState) -> tuple[str, OAuthClient | None]:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "", None
    token = token.strip()
    return token, state.client_for(token)


def _unauthorized(token: str, *, expired: bool = False) -> web.Response:
    if not token:
        return genesys_error(
            401,
            "authentication.required",
            "No authentication bearer token specified in authorization header.",
        )
    if expired:
        return genesys_error(401, "credentials.expired", "The access token has expired.")
    return genesys_error(401, "bad.credentials", "Invalid login credentials.")


def _drop(request: web.Request) -> None:
    """Close the connection without answering (the client sees the connection reset)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise DroppedConnection


def _http_exception_as_genesys(exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        return not_found("The requested resource could not be found.")
    if exc.status == 405:
        return genesys_error(405, "method.not.allowed", "HTTP method not allowed.")
    return genesys_error(exc.status, "bad.request", exc.reason)


# ---------------------------------------------------------------------------------------------
# OAuth


async def oauth_token(request: web.Request) -> web.StreamResponse:
    """`POST /oauth/token`: client credentials with HTTP Basic auth (or, for a user signing
    in, the authorization-code grant with PKCE: `login.authorization_code_grant`)."""
    state = request.app[STATE_KEY]
    try:
        basic: BasicAuth | None = BasicAuth.decode(request.headers.get("Authorization", ""))
    except ValueError:
        basic = None
    form = await request.post()
    if form.get("grant_type") == "authorization_code":  # a user signing in (login.py)
        return authorization_code_grant(request.app[LOGIN_KEY], state, form)
    client = state.clients.get(basic.login) if basic is not None else None
    if (
        basic is None
        or client is None
        or not secrets.compare_digest(client.client_secret.encode(), basic.password.encode())
    ):
        return json_response(
            {
                "error": "invalid_client",
                "description": "authentication failed",
                "error_description": "authentication failed",
            },
            401,
        )
    if form.get("grant_type") != "client_credentials":
        return json_response(
            {
                "error": "unsupported_grant_type",
                "description": "grant type not supported",
                "error_description": "grant type not supported",
            },
            400,
        )
    token = state.issue_token(client)
    return json_response(
        {"access_token": token, "token_type": "bearer", "expires_in": state.config.token_ttl}
    )


# ---------------------------------------------------------------------------------------------
# Wrap-up codes


def _int_param(request: web.Request, name: str, default: int) -> int | web.Response:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return bad_request(f"Invalid value for {name}: {raw}")
    if value < 1:
        return bad_request(f"{name} must be at least 1")
    return value


def _multi(request: web.Request, name: str) -> list[str]:
    """A multi-valued query parameter, repeated or comma-separated (the SDK joins with ,)."""
    return [v.strip() for raw in request.query.getall(name, []) for v in raw.split(",") if v]


async def get_wrapupcodes(request: web.Request) -> web.StreamResponse:
    """`GET /api/v2/routing/wrapupcodes`: one page of the codes the client may see."""
    state = request.app[STATE_KEY]
    client = request[CLIENT_KEY]
    if PERM_VIEW_CODES not in client.permissions:
        return missing_permission(PERM_VIEW_CODES)
    page_size = _int_param(request, "pageSize", 25)
    if isinstance(page_size, web.Response):
        return page_size
    page_number = _int_param(request, "pageNumber", 1)
    if isinstance(page_number, web.Response):
        return page_number
    page_size = min(page_size, state.config.max_page_size)
    sort_order = request.query.get("sortOrder", "ascending").lower()
    if sort_order not in ("asc", "ascending", "desc", "descending"):
        return bad_request(f"Invalid value for sortOrder: {sort_order}")
    sort_by = request.query.get("sortBy", "name")
    if sort_by not in ("name", "id"):
        return bad_request(f"Invalid value for sortBy: {sort_by}")

    codes = [c for c in state.seed.codes if c.division_id in client.division_ids]
    name = request.query.get("name", "").replace("*", "").strip().lower()
    if name:
        codes = [c for c in codes if name in c.name.lower()]
    else:
        sort_by = "name"  # "'Sort by' param is ignored unless [name] is provided" (the SDK)
    ids = {i.lower() for i in _multi(request, "id")}
    if ids:
        codes = [c for c in codes if c.id in ids]
    division_ids = set(_multi(request, "divisionId"))
    if division_ids:
        codes = [c for c in codes if c.division_id in division_ids]
    sort_keys: dict[str, Callable[[Any], str]] = {
        "name": lambda c: c.name.lower(),
        "id": lambda c: c.id,
    }
    codes.sort(key=sort_keys[sort_by], reverse=sort_order.startswith("desc"))

    total = len(codes)
    page_count = math.ceil(total / page_size)
    first = (page_number - 1) * page_size
    divisions = state.seed.divisions
    entities = [
        code_json(c, divisions[c.division_id].name) for c in codes[first : first + page_size]
    ]
    extra = {k: request.query[k] for k in ("name", "sortBy", "sortOrder") if k in request.query}

    def uri(number: int) -> str:
        query = "&".join(f"{k}={v}" for k, v in extra.items())
        base = f"/api/v2/routing/wrapupcodes?pageSize={page_size}&pageNumber={number}"
        return f"{base}&{query}" if query else base

    body: dict[str, Any] = {
        "entities": entities,
        "pageSize": page_size,
        "pageNumber": page_number,
        "total": total,
        "firstUri": uri(1),
        "selfUri": uri(page_number),
        "lastUri": uri(max(1, page_count)),
        "pageCount": page_count,
    }
    if page_number < page_count:
        body["nextUri"] = uri(page_number + 1)
    if 1 < page_number <= page_count + 1:
        body["previousUri"] = uri(page_number - 1)
    return json_response(body)


# ---------------------------------------------------------------------------------------------
# Conversations


def _visible_conversation(
    state: EmulatorState, client: OAuthClient, conversation_id: str
) -> Conversation | web.Response:
    conv = state.conversation(conversation_id)
    if conv is None:
        return not_found(f"Conversation {conversation_id} not found.")
    if not state.can_see(client, conv):
        return genesys_error(
            403,
            "not.authorized",
            f"Access to Conversation {conversation_id} is forbidden.",
            {"conversationId": conversation_id},
        )
    return conv


async def get_conversation(request: web.Request) -> web.StreamResponse:
    """`GET /api/v2/conversations/{conversationId}`."""
    state = request.app[STATE_KEY]
    client = request[CLIENT_KEY]
    if PERM_VIEW_CONVERSATION not in client.permissions:
        return missing_permission(PERM_VIEW_CONVERSATION)
    conv = _visible_conversation(state, client, request.match_info["conversationId"])
    if isinstance(conv, web.Response):
        return conv
    return json_response(conversation_json(conv, state.wrapups, state.seed.queues))


def _locate(
    request: web.Request, state: EmulatorState, client: OAuthClient
) -> tuple[Conversation, Participant, Communication] | web.Response:
    """The conversation, participant and communication named by a wrap-up path."""
    info = request.match_info
    conv = _visible_conversation(state, client, info["conversationId"])
    if isinstance(conv, web.Response):
        return conv
    participant_id = info["participantId"]
    participant = conv.participant(participant_id.lower())
    if participant is None:
        return not_found(f"Participant {participant_id} not found in conversation {conv.id}.")
    communication_id = info["communicationId"].lower()
    comm = next((c for c in participant.communications if c.id == communication_id), None)
    if comm is None:
        return not_found(
            f"Communication {info['communicationId']} not found for participant {participant.id}."
        )
    if comm.media != info["media"]:
        return bad_request(
            f"Communication {comm.id} is not a {info['media']} communication (it is {comm.media}).",
            "conversations.error.media.type.mismatch",
        )
    return conv, participant, comm


async def get_participant_wrapupcodes(request: web.Request) -> web.StreamResponse:
    """`GET /api/v2/conversations/{id}/participants/{pid}/wrapupcodes`: the queue's codes."""
    state = request.app[STATE_KEY]
    client = request[CLIENT_KEY]
    if PERM_VIEW_CONVERSATION not in client.permissions:
        return missing_permission(PERM_VIEW_CONVERSATION)
    conv = _visible_conversation(state, client, request.match_info["conversationId"])
    if isinstance(conv, web.Response):
        return conv
    participant_id = request.match_info["participantId"]
    participant = conv.participant(participant_id.lower())
    if participant is None:
        return not_found(f"Participant {participant_id} not found in conversation {conv.id}.")
    divisions = state.seed.divisions
    return json_response(
        [
            code_json(c, divisions[c.division_id].name)
            for c in state.queue_codes(client, participant)
        ]
    )


async def get_wrapup(request: web.Request) -> web.StreamResponse:
    """`GET .../communications/{communicationId}/wrapup[?provisional=true]`: the
    AssignedWrapupCode. No permission needed (the SDK: "requires no permissions")."""
    state = request.app[STATE_KEY]
    client = request[CLIENT_KEY]
    provisional = request.query.get("provisional", "false").lower()
    if provisional not in ("true", "false"):
        return bad_request(f"Invalid value for provisional: {provisional}")
    located = _locate(request, state, client)
    if isinstance(located, web.Response):
        return located
    comm = located[2]
    wrapup = state.wrapups.get(comm.id)
    if wrapup is None or wrapup.provisional != (provisional == "true"):
        kind = "provisional wrap-up" if provisional == "true" else "wrap-up"
        return not_found(f"No {kind} assigned to communication {comm.id}.")
    body: dict[str, Any] = {"code": wrapup.code}
    if wrapup.notes is not None:
        body["notes"] = wrapup.notes
    if wrapup.tags:
        body["tags"] = list(wrapup.tags)
    if wrapup.duration_seconds is not None:
        body["durationSeconds"] = wrapup.duration_seconds
    if wrapup.end_time is not None:
        body["endTime"] = wrapup.end_time
    return json_response(body)


def _parse_wrapup_input(body: Any) -> dict[str, Any] | web.Response:
    """Check a WrapupInput body; return its fields or a 400."""
    if not isinstance(body, dict):
        return bad_request("The request body must be a WrapupInput JSON object.")
    code = body.get("code")
    if code is None or code == "":
        return bad_request("The wrap-up code is required.")
    checks: dict[str, Callable[[Any], bool]] = {
        "code": lambda v: isinstance(v, str),
        "name": lambda v: isinstance(v, str),
        "notes": lambda v: isinstance(v, str),
        "tags": lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
        "durationSeconds": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "endTime": lambda v: isinstance(v, str) and _parse_time(v) is not None,
        "provisional": lambda v: isinstance(v, bool),
        "disableEndTimeUpdates": lambda v: isinstance(v, bool),
    }
    for name, ok in checks.items():
        value = body.get(name)
        if value is not None and not ok(value):
            return bad_request(f"Invalid value for {name}: {value!r}")
    return body


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def post_wrapup(request: web.Request) -> web.StreamResponse:
    """`POST .../communications/{communicationId}/wrapup`: 202 and the wrap-up is stored."""
    state = request.app[STATE_KEY]
    client = request[CLIENT_KEY]
    if PERM_WRAPUP not in client.permissions:
        return missing_permission(PERM_WRAPUP)
    located = _locate(request, state, client)
    if isinstance(located, web.Response):
        return located
    conv, participant, comm = located
    refused_with = state.config.refuse_wrapups
    if refused_with:
        return bad_request(
            f"The wrap-up of communication {comm.id} cannot be set by this client.",
            refused_with,
        )
    if conv.id in state.config.failing_conversations:
        return genesys_error(500, "internal.server.error", "The server encountered an error.")
    try:
        raw = await request.json()
    except ValueError:
        return bad_request("The request body is not valid JSON.")
    body = _parse_wrapup_input(raw)
    if isinstance(body, web.Response):
        return body
    refusal = _refuse(state, client, participant, comm, body["code"])
    if refusal is not None:
        return refusal
    code = state.codes_by_id[body["code"].lower()]
    end_time = _parse_time(body["endTime"]) if body.get("endTime") else None
    wrapup = Wrapup(
        code=code.id,
        name=code.name,
        notes=body.get("notes"),
        tags=tuple(body.get("tags") or ()),
        duration_seconds=body.get("durationSeconds"),
        end_time=iso_ms(int(end_time.timestamp() * 1000)) if end_time else now_iso(),
        provisional=bool(body.get("provisional", False)),
    )
    state.set_wrapup(comm.id, wrapup)
    state.stats.posts_per_communication[comm.id] += 1
    if state.chance(state.config.ghost_write_rate):
        state.stats.ghost_writes += 1
        return genesys_error(504, "gateway.timeout", "The request timed out.")
    return web.Response(status=202)


def _refuse(
    state: EmulatorState,
    client: OAuthClient,
    participant: Participant,
    comm: Communication,
    code_id: str,
) -> web.Response | None:
    """The 400 for a wrap-up that cannot be applied, or None."""
    if not participant.is_user:
        return bad_request(
            f"Participant {participant.id} is not a user participant; "
            "only user participants can be wrapped up.",
            "conversations.error.participant.not.user",
        )
    if not comm.ended:
        return bad_request(
            f"Communication {comm.id} has not ended (state {comm.state}).",
            "conversations.error.communication.not.ended",
        )
    if state.visible_code(client, code_id) is None:
        return bad_request(
            f"Wrap-up code {code_id} does not exist.",
            "conversations.error.wrapup.code.not.found",
        )
    if state.config.queue_codes_only and code_id.lower() not in {
        c.id for c in state.queue_codes(client, participant)
    }:
        return bad_request(
            f"Wrap-up code {code_id} is not one of the wrap-up codes of participant "
            f"{participant.id}'s queue.",
            "conversations.error.wrapup.code.not.in.queue",
        )
    return None


# ---------------------------------------------------------------------------------------------
# Organization and user


async def get_organization_me(request: web.Request) -> web.StreamResponse:
    """`GET /api/v2/organizations/me`: the org the token belongs to."""
    config = request.app[STATE_KEY].config
    return json_response(
        {
            "id": config.org_id,
            "name": config.org_name,
            "defaultLanguage": "en-us",
            "defaultCountryCode": "US",
            "thirdPartyOrgName": config.org_name.lower().replace(" ", "-"),
            "domain": "emulator.invalid",
            "version": 1,
            "state": "active",
            "voicemailEnabled": False,
            "productPlatform": "PureCloud",
            "selfUri": f"/api/v2/organizations/{config.org_id}",
        }
    )


async def get_users_me(request: web.Request) -> web.StreamResponse:
    """`GET /api/v2/users/me`: the user of a user's token (or of a login, `login.py`)."""
    signed_in = login_users_me(request)
    if signed_in is not None:
        return signed_in
    state = request.app[STATE_KEY]
    _, _, token = request.headers.get("Authorization", "").partition(" ")
    user_id = state.user_of(token.strip())
    if user_id is None:
        return bad_request(
            "This request requires a user context. Client credentials cannot be used for "
            "requests to this resource."
        )
    return json_response(
        {
            "id": user_id,
            "name": state.seed.users[user_id],
            "state": "active",
            "username": state.seed.users[user_id].lower().replace(" ", ".") + "@emulator.invalid",
            "version": 1,
            "selfUri": f"/api/v2/users/{user_id}",
        }
    )


# ---------------------------------------------------------------------------------------------
# Analytics


async def get_analytics_details(request: web.Request) -> web.StreamResponse:
    """`GET /api/v2/analytics/conversations/details?id=a,b`: several conversations at once."""
    state = request.app[STATE_KEY]
    client = request[CLIENT_KEY]
    if not client.permissions.intersection(ANALYTICS_PERMISSIONS):
        return missing_any_permission(ANALYTICS_PERMISSIONS)
    ids = list(dict.fromkeys(i.lower() for i in _multi(request, "id")))
    if not ids:
        return bad_request("At least one conversation id is required.")
    limit = state.config.analytics_max_ids
    if len(ids) > limit:
        return bad_request(f"At most {limit} conversation ids may be requested at once.")
    hidden = state.config.analytics_hidden
    conversations = []
    for cid in ids:
        conv = state.conversation(cid)
        if conv is None or cid in hidden or not state.can_see(client, conv):
            continue
        conversations.append(analytics_json(conv, _known_wrapups(state, conv)))
    return json_response({"conversations": conversations})


def _known_wrapups(state: EmulatorState, conv: Conversation) -> Mapping[str, Wrapup]:
    """The wrap-ups of a conversation that analytics has caught up with."""
    lag = state.config.analytics_wrapup_lag_s
    if lag <= 0:
        return state.wrapups
    horizon = time.time() - lag
    known: dict[str, Wrapup] = {}
    for p in conv.participants:
        for c in p.communications:
            w = state.wrapups.get(c.id)
            if w is not None and w.set_at <= horizon:
                known[c.id] = w
    return known


# ---------------------------------------------------------------------------------------------
# /__emulator__/ control routes (not part of the Platform API, never rate limited)


async def get_stats(request: web.Request) -> web.StreamResponse:
    """Counts; with `?detail=1` also the per-communication maps (big with many conversations)."""
    detail = request.query.get("detail", "0").lower() in ("1", "true", "yes")
    return json_response(request.app[STATE_KEY].stats_json(detail))


async def post_reset(request: web.Request) -> web.StreamResponse:
    """Reset the stats; `{"wrapups": true}` also restores the seed's wrap-ups,
    `{"rate_windows": true}` empties every token's rate-limit window."""
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return bad_request("expected a JSON object")
    state = request.app[STATE_KEY]
    state.reset(
        stats=True,
        wrapups=bool(body.get("wrapups", False)),
        windows=bool(body.get("rate_windows", False)),
    )
    return json_response({"reset": True})


async def get_config(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[STATE_KEY].config.knobs())


async def post_config(request: web.Request) -> web.StreamResponse:
    """Change live knobs: a JSON object of `EmulatorConfig` fields (and `storm_seconds`)."""
    config: EmulatorConfig = request.app[STATE_KEY].config
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object of knobs")
        config.update(body)
    except ValueError as exc:
        return bad_request(str(exc))
    return json_response(config.knobs())


async def post_user_token(request: web.Request) -> web.StreamResponse:
    """A user's token, as that user's login would give: JSON `{"userId": ..., "ttlSeconds":
    ...}` (both optional: the seed's first user, `token_ttl`)."""
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return bad_request("expected a JSON object")
    state = request.app[STATE_KEY]
    ttl = body.get("ttlSeconds")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0):
        return bad_request("ttlSeconds must be a number >= 0")
    try:
        token = state.issue_user_token(body.get("userId"), ttl)
    except ValueError as exc:
        return bad_request(str(exc))
    return json_response(
        {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": state.config.token_ttl if ttl is None else ttl,
            "userId": state.user_of(token),
        }
    )


async def post_revoke(request: web.Request) -> web.StreamResponse:
    """Revoke a token: JSON `{"token": ...}`."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("token"), str):
        return bad_request('expected a JSON object {"token": "..."}')
    return json_response({"revoked": request.app[STATE_KEY].revoke_token(body["token"])})


async def get_health(request: web.Request) -> web.StreamResponse:
    return json_response({"ok": True, "conversations": request.app[STATE_KEY].conversation_count})


def make_app(state: EmulatorState) -> web.Application:
    """The aiohttp application serving one emulator state."""
    app = web.Application(middlewares=[emulator_middleware])
    app[STATE_KEY] = state
    app[ROUTE_KEYS] = {}
    r = app.router
    r.add_post("/oauth/token", oauth_token)
    r.add_get("/api/v2/routing/wrapupcodes", get_wrapupcodes, allow_head=False)
    r.add_get("/api/v2/conversations/{conversationId}", get_conversation, allow_head=False)
    r.add_get(
        "/api/v2/conversations/{conversationId}/participants/{participantId}/wrapupcodes",
        get_participant_wrapupcodes,
        allow_head=False,
    )
    r.add_get("/api/v2/organizations/me", get_organization_me, allow_head=False)
    r.add_get("/api/v2/users/me", get_users_me, allow_head=False)
    r.add_get(WRAPUP_ROUTE, get_wrapup, allow_head=False)
    r.add_post(WRAPUP_ROUTE, post_wrapup)
    r.add_get("/api/v2/analytics/conversations/details", get_analytics_details, allow_head=False)
    add_login_routes(app, state.seed.login)
    r.add_get("/__emulator__/stats", get_stats, allow_head=False)
    r.add_post("/__emulator__/reset", post_reset)
    r.add_get("/__emulator__/config", get_config, allow_head=False)
    r.add_post("/__emulator__/config", post_config)
    r.add_get("/__emulator__/health", get_health, allow_head=False)
    r.add_post("/__emulator__/user-tokens", post_user_token)
    r.add_post("/__emulator__/revoke", post_revoke)
    return app
