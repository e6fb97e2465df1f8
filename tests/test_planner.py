"""The planner: parsing both conversation views, and choosing what to wrap up."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapup_batch.models import Status
from wrapup_batch.planner import (
    ANALYTICS_PURPOSES,
    MEDIA_TYPES,
    NON_AGENT_PURPOSES,
    Communication,
    ConversationView,
    OnExisting,
    Participant,
    ParticipantMode,
    Plan,
    Target,
    conversation_from_analytics,
    conversation_from_json,
    parse_time,
    plan,
)

CODE = "9b0f5c39-1c84-4a4e-8a3c-0d3b6a1f7e01"  # the code the row asks for
OTHER = "9b0f5c39-1c84-4a4e-8a3c-0d3b6a1f7e02"  # some other code
ALICE = "11111111-aaaa-4aaa-8aaa-000000000001"
BOB = "22222222-bbbb-4bbb-8bbb-000000000002"
CAROL = "33333333-cccc-4ccc-8ccc-000000000003"
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)

# =============================================================================================
# A compact spec of a conversation, rendered as both API shapes
# =============================================================================================

_JSON_KEY = {media: media for media in MEDIA_TYPES} | {"socials": "socialExpressions"}
_ANALYTICS_TYPE = {
    "calls": "voice",
    "callbacks": "callback",
    "emails": "email",
    "messages": "message",
    "socials": "unknown",  # UNCONFIRMED: analytics has no `social` media type
    "videos": "video",
    "cobrowsesessions": "cobrowse",
    "screenshares": "screenshare",
}


@dataclass
class C:
    """A communication: minutes after T0; `end=None` means still connected."""

    media: str = "calls"
    start: float = 0
    end: float | None = 5
    code: str | None = None
    notes: str | None = None


@dataclass
class P:
    purpose: str
    user: str | None = None
    comms: list[C] = field(default_factory=list)


def agent(user: str, *comms: C) -> P:
    return P("agent", user, list(comms))


def customer(end: float | None = 30) -> P:
    return P("customer", None, [C(end=end)])


def _ts(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def pid(i: int) -> str:
    return f"aaaaaaaa-0000-4000-8000-{i:012d}"


def cid(i: int, j: int) -> str:
    return f"cccccccc-0000-4000-8000-{i:06d}{j:06d}"


def _all_ended(parts: list[P]) -> bool:
    return all(c.end is not None for p in parts for c in p.comms)


def to_json(parts: list[P], conv_id: str = "conv-1") -> dict[str, Any]:
    """The spec as `GET /api/v2/conversations/{id}` would return it."""
    participants = []
    for i, p in enumerate(parts):
        raw: dict[str, Any] = {"id": pid(i), "purpose": p.purpose, "startTime": _ts(0)}
        if p.user:
            raw["userId"] = p.user
            raw["name"] = f"Agent {p.user[:4]}"
        for j, c in enumerate(p.comms):
            comm: dict[str, Any] = {
                "id": cid(i, j),
                "state": "connected" if c.end is None else "disconnected",
                "connectedTime": _ts(c.start),
            }
            if c.end is not None:
                comm["disconnectedTime"] = _ts(c.end)
                comm["disconnectType"] = "peer"
            if c.code:
                comm["wrapup"] = {"code": c.code, "notes": c.notes, "durationSeconds": 30}
                comm["wrapup"]["endTime"] = _ts(c.end + 1)  # as the analytics wrapup segment
            raw.setdefault(_JSON_KEY[c.media], []).append(comm)
        participants.append(raw)
    data: dict[str, Any] = {"id": conv_id, "startTime": _ts(0), "participants": participants}
    if _all_ended(parts):
        data["endTime"] = _ts(max((c.end or 0 for p in parts for c in p.comms), default=0))
    return data


def to_analytics(parts: list[P], conv_id: str = "conv-1") -> dict[str, Any]:
    """The spec as one `conversations[]` element of the analytics details query."""
    participants = []
    for i, p in enumerate(parts):
        raw: dict[str, Any] = {"participantId": pid(i), "purpose": p.purpose, "sessions": []}
        if p.user:
            raw["userId"] = p.user
            raw["participantName"] = f"Agent {p.user[:4]}"
        for j, c in enumerate(p.comms):
            interact: dict[str, Any] = {
                "segmentStart": _ts(c.start + 0.1),
                "segmentType": "interact",
            }
            segments: list[dict[str, Any]] = [
                {
                    "segmentStart": _ts(c.start),
                    "segmentEnd": _ts(c.start + 0.1),
                    "segmentType": "alert",
                },
                interact,
            ]
            if c.end is not None:
                interact["segmentEnd"] = _ts(c.end)
                interact["disconnectType"] = "peer"
                if c.code:
                    wrap = {"segmentStart": _ts(c.end), "segmentEnd": _ts(c.end + 1)}
                    wrap |= {"segmentType": "wrapup", "wrapUpCode": c.code}
                    if c.notes:
                        wrap["wrapUpNote"] = c.notes
                    segments.append(wrap)
            session = {"sessionId": cid(i, j), "mediaType": _ANALYTICS_TYPE[c.media]}
            raw["sessions"].append(session | {"direction": "inbound", "segments": segments})
        participants.append(raw)
    data: dict[str, Any] = {"conversationId": conv_id, "conversationStart": _ts(0)}
    data["participants"] = participants
    if _all_ended(parts):
        data["conversationEnd"] = _ts(max((c.end or 0 for p in parts for c in p.comms), default=0))
    return data


# =============================================================================================
# plan(): the rules, table-driven
# =============================================================================================


@dataclass
class Case:
    name: str
    parts: list[P]
    status: Status | None
    # (participant index, communication index, action) for every target, in order
    targets: list[tuple[int, int, str]]
    agent_id: str | None = None
    participant: ParticipantMode = "last-agent"
    on_existing: OnExisting = "skip"
    message_has: tuple[str, ...] = ()


CASES = [
    Case("single agent", [customer(), P("acd", None, [C(end=1)]), agent(ALICE, C())],
         None, [(2, 0, "apply")]),
    Case("blind transfer: the second agent ended last",
         [customer(), agent(ALICE, C(end=5)), agent(BOB, C(start=5, end=20))],
         None, [(2, 0, "apply")]),
    Case("consult: the later-listed agent left first",
         [customer(), agent(ALICE, C(end=30)), agent(BOB, C(start=10, end=15))],
         None, [(1, 0, "apply")]),
    Case("email", [customer(), agent(ALICE, C(media="emails"))], None, [(1, 0, "apply")]),
    Case("message", [customer(), agent(ALICE, C(media="messages"))], None, [(1, 0, "apply")]),
    Case("callback", [customer(), agent(ALICE, C(media="callbacks"))], None, [(1, 0, "apply")]),
    Case("purpose user (a direct call) counts as an agent",
         [customer(), P("user", ALICE, [C()])], None, [(1, 0, "apply")]),
    Case("agent_id picks that user even when another ended later",
         [customer(), agent(ALICE, C(end=5)), agent(BOB, C(start=5, end=20))],
         None, [(1, 0, "apply")], agent_id=ALICE),
    Case("agent_id in another spelling",
         [customer(), agent(ALICE, C(end=5)), agent(BOB, C(start=5, end=20))],
         None, [(1, 0, "apply")], agent_id="{" + ALICE.upper() + "}"),
    Case("agent_id: the user's communication that ended last (transferred back)",
         [customer(), agent(ALICE, C(end=5)), agent(BOB, C(end=10)), agent(ALICE, C(end=25))],
         None, [(3, 0, "apply")], agent_id=ALICE),
    Case("agent_id of a user not in the conversation",
         [customer(), agent(ALICE, C())], Status.NO_AGENT, [], agent_id=CAROL,
         message_has=(CAROL, ALICE)),
    Case("all-agents", [customer(), agent(ALICE, C(end=5)), agent(BOB, C(end=20))],
         None, [(1, 0, "apply"), (2, 0, "apply")], participant="all-agents"),
    Case("all-agents with agent_id: every communication of that user",
         [customer(), agent(ALICE, C(end=5)), agent(BOB, C(end=10)), agent(ALICE, C(end=25))],
         None, [(1, 0, "apply"), (3, 0, "apply")], agent_id=ALICE, participant="all-agents"),
    Case("not ended", [customer(end=None), agent(ALICE, C(end=None))], Status.NOT_ENDED, [],
         message_has=(pid(1), "connected")),
    Case("not ended: an earlier agent is still on while a later one has left",
         [customer(), agent(ALICE, C(end=None)), agent(BOB, C(end=20))], Status.NOT_ENDED, []),
    Case("not ended, all-agents", [customer(), agent(ALICE, C(end=5)), agent(BOB, C(end=None))],
         Status.NOT_ENDED, [], participant="all-agents"),
    Case("agent_id ignores another agent still connected",
         [customer(end=None), agent(ALICE, C(end=5)), agent(BOB, C(end=None))],
         None, [(1, 0, "apply")], agent_id=ALICE),
    Case("a customer still connected does not matter",
         [customer(end=None), agent(ALICE, C(end=5))], None, [(1, 0, "apply")]),
    Case("IVR only", [customer(), P("ivr", None, [C()])], Status.NO_AGENT, [],
         message_has=("no agent participant", "customer, ivr")),
    Case("customer and ACD only", [customer(), P("acd", None, [C()])], Status.NO_AGENT, [],
         message_has=("customer, acd",)),
    Case("an agent purpose without a userId is no agent",
         [customer(), P("agent", None, [C()])], Status.NO_AGENT, []),
    Case("a voicemail participant with a userId is no agent",
         [customer(), P("voicemail", ALICE, [C()])], Status.NO_AGENT, []),
    Case("an agent without communications is no agent",
         [customer(), P("agent", ALICE, [])], Status.NO_AGENT, [],
         message_has=("can be wrapped up",)),
    Case("no participants at all", [], Status.NO_AGENT, []),
    Case("already has the target code", [customer(), agent(ALICE, C(code=CODE))],
         Status.UNCHANGED, [(1, 0, "unchanged")], message_has=(CODE,)),
    Case("another code: skipped", [customer(), agent(ALICE, C(code=OTHER))],
         Status.SKIPPED, [(1, 0, "skip")],
         message_has=(f"already wrapped up with {OTHER}", "--on-existing replace")),
    Case("another code with replace: applied", [customer(), agent(ALICE, C(code=OTHER))],
         None, [(1, 0, "apply")], on_existing="replace"),
    Case("target code with replace: still unchanged", [customer(), agent(ALICE, C(code=CODE))],
         Status.UNCHANGED, [(1, 0, "unchanged")], on_existing="replace"),
    Case("a timed-out wrap-up is no wrap-up",
         [customer(), agent(ALICE, C(code="ININ-WRAP-UP-TIMEOUT"))], None, [(1, 0, "apply")]),
    Case("the earlier agent's code does not matter in last-agent mode",
         [customer(), agent(ALICE, C(end=5, code=OTHER)), agent(BOB, C(end=20))],
         None, [(2, 0, "apply")]),
    Case("mixed all-agents: one to apply",
         [customer(), agent(ALICE, C(end=5, code=CODE)), agent(BOB, C(end=10)),
          agent(CAROL, C(end=15, code=OTHER))],
         None, [(1, 0, "unchanged"), (2, 0, "apply"), (3, 0, "skip")],
         participant="all-agents", message_has=("applying to 1 of 3", OTHER)),
    Case("mixed all-agents: unchanged and skipped is skipped",
         [customer(), agent(ALICE, C(end=5, code=CODE)), agent(CAROL, C(end=15, code=OTHER))],
         Status.SKIPPED, [(1, 0, "unchanged"), (2, 0, "skip")], participant="all-agents"),
    Case("all-agents, all unchanged",
         [customer(), agent(ALICE, C(end=5, code=CODE)), agent(BOB, C(end=9, code=CODE))],
         Status.UNCHANGED, [(1, 0, "unchanged"), (2, 0, "unchanged")], participant="all-agents"),
    Case("two media for one agent: the one that ended last",
         [customer(), agent(ALICE, C(media="emails", end=40), C(media="calls", end=10))],
         None, [(1, 0, "apply")]),
    Case("ties go to the later listed", [customer(), agent(ALICE, C(end=9)), agent(BOB, C(end=9))],
         None, [(2, 0, "apply")]),
]  # fmt: skip


def _check(result: Plan, case: Case, parts: list[P]) -> None:
    assert result.status == case.status, result.message
    got = [(t.participant_id, t.communication_id, t.action) for t in result.targets]
    assert got == [(pid(i), cid(i, j), action) for i, j, action in case.targets]
    for target in result.targets:
        i = int(target.participant_id[-12:])
        j = int(target.communication_id[-6:])
        assert target.user_id == parts[i].user
        assert target.media == parts[i].comms[j].media
        assert target.previous_code == parts[i].comms[j].code
    assert result.to_apply == tuple(t for t in result.targets if t.action == "apply")
    assert (result.status is None) == bool(result.to_apply)
    for text in case.message_has:
        assert text in result.message


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("parse", [conversation_from_json, conversation_from_analytics])
def test_plan(case: Case, parse: Any) -> None:
    view = parse(
        to_json(case.parts) if parse is conversation_from_json else to_analytics(case.parts)
    )
    result = plan(
        view,
        code_id=CODE,
        agent_id=case.agent_id,
        participant=case.participant,
        on_existing=case.on_existing,
    )
    _check(result, case, case.parts)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_both_views_of_a_conversation_give_the_same_plan(case: Case) -> None:
    for participant in ("last-agent", "all-agents"):
        for on_existing in ("skip", "replace"):
            kwargs: dict[str, Any] = {"code_id": CODE, "agent_id": case.agent_id}
            kwargs |= {"participant": participant, "on_existing": on_existing}
            from_json = plan(conversation_from_json(to_json(case.parts)), **kwargs)
            from_analytics = plan(conversation_from_analytics(to_analytics(case.parts)), **kwargs)
            assert from_json == from_analytics


def test_missing_disconnected_time_loses_to_a_known_one() -> None:
    early = Communication("c1", "calls", "disconnected", None, T0, None, None)
    unknown = Communication("c2", "calls", "disconnected", None, None, None, None)
    view = ConversationView(
        "x",
        (
            Participant("p1", "agent", ALICE, None, (early,)),
            Participant("p2", "agent", BOB, None, (unknown,)),
        ),
        True,
    )
    assert [t.communication_id for t in plan(view, code_id=CODE).targets] == ["c1"]


def test_an_agent_who_only_rang_loses_to_one_who_answered() -> None:
    answered = Communication(
        "c1", "calls", "disconnected", T0, T0 + timedelta(minutes=5), None, None
    )
    rang = Communication("c2", "calls", "disconnected", None, T0 + timedelta(minutes=9), None, None)
    view = ConversationView(
        "x",
        (
            Participant("p1", "agent", ALICE, None, (answered,)),
            Participant("p2", "agent", BOB, None, (rang,)),
        ),
        True,
    )
    assert [t.communication_id for t in plan(view, code_id=CODE).targets] == ["c1"]


def test_terminated_counts_as_ended() -> None:
    comm = Communication("c1", "calls", "terminated", None, T0, None, None)
    view = ConversationView("x", (Participant("p1", "agent", ALICE, None, (comm,)),), True)
    assert plan(view, code_id=CODE).status is None


def test_skipped_message_names_the_code_when_a_namer_is_given() -> None:
    view = conversation_from_json(to_json([customer(), agent(ALICE, C(code=OTHER))]))
    names = {OTHER: "Sale Lost"}
    result = plan(view, code_id=CODE, name_of=lambda c: names.get(c, c))
    assert result.message == (
        f'already wrapped up with "Sale Lost" ({OTHER}); use --on-existing replace to change it'
    )


def test_bad_modes_are_refused() -> None:
    view = conversation_from_json(to_json([customer(), agent(ALICE, C())]))
    with pytest.raises(ValueError, match="participant"):
        plan(view, code_id=CODE, participant="first-agent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_existing"):
        plan(view, code_id=CODE, on_existing="overwrite")  # type: ignore[arg-type]


# =============================================================================================
# Parsing
# =============================================================================================

CONV_ID = "d4a1c7e2-5b3f-4e8a-9c6d-1f2e3a4b5c6d"
CUSTOMER_PID = "0a1b2c3d-0000-4000-8000-000000000001"
ACD_PID = "0a1b2c3d-0000-4000-8000-000000000002"
ALICE_PID = "0a1b2c3d-0000-4000-8000-000000000003"
BOB_PID = "0a1b2c3d-0000-4000-8000-000000000004"
ALICE_CALL = "5e6f7a8b-0000-4000-8000-000000000003"
BOB_CALL = "5e6f7a8b-0000-4000-8000-000000000004"

# A consult, as GET /api/v2/conversations/{id} returns it: Alice takes the call from the queue,
# consults Bob, Bob drops after five minutes, Alice finishes with the customer.
CONSULT_JSON: dict[str, Any] = {
    "id": CONV_ID,
    "startTime": "2026-11-20T10:00:00.000Z",
    "endTime": "2026-11-20T10:30:12.345Z",
    "address": "+15551230000",
    "divisions": [{"division": {"id": "d1"}, "entities": []}],
    "recordingState": "none",
    "selfUri": f"/api/v2/conversations/{CONV_ID}",
    "participants": [
        {
            "id": CUSTOMER_PID,
            "startTime": "2026-11-20T10:00:00.000Z",
            "endTime": "2026-11-20T10:30:12.345Z",
            "purpose": "customer",
            "ani": "tel:+15557654321",
            "dnis": "tel:+15551230000",
            "wrapupRequired": False,
            "attributes": {},
            "calls": [
                {
                    "state": "disconnected",
                    "id": "5e6f7a8b-0000-4000-8000-000000000001",
                    "direction": "inbound",
                    "recording": False,
                    "disconnectType": "peer",
                    "held": False,
                    "connectedTime": "2026-11-20T10:00:00.100Z",
                    "disconnectedTime": "2026-11-20T10:30:12.345Z",
                    "provider": "Edge",
                }
            ],
        },
        {
            "id": ACD_PID,
            "startTime": "2026-11-20T10:00:05.000Z",
            "endTime": "2026-11-20T10:00:40.000Z",
            "connectedTime": "2026-11-20T10:00:05.000Z",
            "name": "Support Queue",
            "queueId": "q-1",
            "queueName": "Support",
            "purpose": "acd",
            "wrapupRequired": False,
            "calls": [
                {
                    "state": "disconnected",
                    "id": "5e6f7a8b-0000-4000-8000-000000000002",
                    "disconnectType": "transfer",
                    "connectedTime": "2026-11-20T10:00:05.000Z",
                    "disconnectedTime": "2026-11-20T10:00:40.000Z",
                }
            ],
        },
        {
            "id": ALICE_PID,
            "startTime": "2026-11-20T10:00:40.000Z",
            "endTime": "2026-11-20T10:30:12.345Z",
            "connectedTime": "2026-11-20T10:00:45.000Z",
            "name": "Alice Example",
            "userId": ALICE,
            "queueId": "q-1",
            "purpose": "agent",
            "wrapupRequired": True,
            "wrapupPrompt": "mandatory",
            "wrapupTimeoutMs": 60000,
            "wrapup": {
                "code": OTHER,
                "notes": "first pass",
                "durationSeconds": 12,
                "endTime": "2026-11-20T10:30:24.345Z",
            },
            "calls": [
                {
                    "state": "disconnected",
                    "id": ALICE_CALL,
                    "direction": "inbound",
                    "disconnectType": "client",
                    "held": False,
                    "connectedTime": "2026-11-20T10:00:45.000Z",
                    "disconnectedTime": "2026-11-20T10:30:12.345Z",
                    "provider": "Edge",
                    "peerId": "5e6f7a8b-0000-4000-8000-000000000001",
                }
            ],
        },
        {
            "id": BOB_PID,
            "startTime": "2026-11-20T10:10:00.000Z",
            "endTime": "2026-11-20T10:15:00.000Z",
            "connectedTime": "2026-11-20T10:10:03Z",
            "name": "Bob Example",
            "userId": BOB,
            "purpose": "agent",
            "consultParticipantId": ALICE_PID,
            "wrapupRequired": True,
            "calls": [
                {
                    "state": "disconnected",
                    "id": BOB_CALL,
                    "direction": "outbound",
                    "disconnectType": "client",
                    "connectedTime": "2026-11-20T10:10:03Z",
                    "disconnectedTime": "2026-11-20T10:15:00Z",
                    "wrapup": {
                        "code": CODE,
                        "notes": "consulted",
                        "endTime": "2026-11-20T10:15:20.000Z",
                    },
                }
            ],
        },
    ],
}

# The same conversation as the analytics conversation details describe it.
CONSULT_ANALYTICS: dict[str, Any] = {
    "conversationId": CONV_ID,
    "conversationStart": "2026-11-20T10:00:00.000Z",
    "conversationEnd": "2026-11-20T10:30:12.345Z",
    "originatingDirection": "inbound",
    "divisionIds": ["d1"],
    "participants": [
        {
            "participantId": CUSTOMER_PID,
            "purpose": "customer",
            "sessions": [
                {
                    "sessionId": "5e6f7a8b-0000-4000-8000-000000000001",
                    "mediaType": "voice",
                    "direction": "inbound",
                    "ani": "tel:+15557654321",
                    "segments": [
                        {
                            "segmentStart": "2026-11-20T10:00:00.000Z",
                            "segmentEnd": "2026-11-20T10:30:12.345Z",
                            "segmentType": "interact",
                        }
                    ],
                }
            ],
        },
        {
            "participantId": ACD_PID,
            "participantName": "Support Queue",
            "purpose": "acd",
            "sessions": [
                {
                    "sessionId": "5e6f7a8b-0000-4000-8000-000000000002",
                    "mediaType": "voice",
                    "segments": [
                        {
                            "segmentStart": "2026-11-20T10:00:05.000Z",
                            "segmentEnd": "2026-11-20T10:00:40.000Z",
                            "segmentType": "interact",
                            "queueId": "q-1",
                        }
                    ],
                }
            ],
        },
        {
            "participantId": ALICE_PID,
            "participantName": "Alice Example",
            "purpose": "agent",
            "userId": ALICE,
            "sessions": [
                {
                    "sessionId": ALICE_CALL,
                    "mediaType": "voice",
                    "metrics": [{"name": "tHandle", "value": 1777345}],
                    "segments": [
                        {
                            "segmentStart": "2026-11-20T10:00:40.000Z",
                            "segmentEnd": "2026-11-20T10:00:45.000Z",
                            "segmentType": "alert",
                        },
                        {
                            "segmentStart": "2026-11-20T10:00:45.000Z",
                            "segmentEnd": "2026-11-20T10:30:12.345Z",
                            "segmentType": "interact",
                            "disconnectType": "client",
                        },
                        {
                            "segmentStart": "2026-11-20T10:30:12.345Z",
                            "segmentEnd": "2026-11-20T10:30:24.345Z",
                            "segmentType": "wrapup",
                            "wrapUpCode": OTHER,
                            "wrapUpNote": "first pass",
                        },
                    ],
                }
            ],
        },
        {
            "participantId": BOB_PID,
            "participantName": "Bob Example",
            "purpose": "agent",
            "userId": BOB,
            "sessions": [
                {
                    "sessionId": BOB_CALL,
                    "mediaType": "voice",
                    "segments": [
                        {
                            "segmentStart": "2026-11-20T10:10:00.000Z",
                            "segmentEnd": "2026-11-20T10:10:03.000Z",
                            "segmentType": "alert",
                        },
                        {
                            "segmentStart": "2026-11-20T10:10:03.000Z",
                            "segmentEnd": "2026-11-20T10:15:00.000Z",
                            "segmentType": "interact",
                        },
                        {
                            "segmentStart": "2026-11-20T10:15:00.000Z",
                            "segmentEnd": "2026-11-20T10:15:20.000Z",
                            "segmentType": "wrapup",
                            "wrapUpCode": CODE,
                            "wrapUpNote": "consulted",
                        },
                    ],
                }
            ],
        },
    ],
}


def test_conversation_from_json_reads_the_consult() -> None:
    view = conversation_from_json(CONSULT_JSON)
    assert view.id == CONV_ID
    assert view.ended is True
    assert [(p.id, p.purpose, p.user_id) for p in view.participants] == [
        (CUSTOMER_PID, "customer", None),
        (ACD_PID, "acd", None),
        (ALICE_PID, "agent", ALICE),
        (BOB_PID, "agent", BOB),
    ]
    alice = view.participants[2]
    assert alice.name == "Alice Example"
    assert alice.communications == (
        Communication(
            id=ALICE_CALL,
            media="calls",
            state="disconnected",
            connected_time=datetime(2026, 11, 20, 10, 0, 45, tzinfo=UTC),
            disconnected_time=datetime(2026, 11, 20, 10, 30, 12, 345000, tzinfo=UTC),
            wrapup_code=OTHER,  # inherited from the participant: its only communication
            wrapup_notes="first pass",
            wrapup_end=datetime(2026, 11, 20, 10, 30, 24, 345000, tzinfo=UTC),
        ),
    )
    bob_call = view.participants[3].communications[0]
    assert bob_call.disconnected_time == datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
    assert (bob_call.wrapup_code, bob_call.wrapup_notes) == (CODE, "consulted")
    assert bob_call.ended


def test_conversation_from_analytics_reads_the_consult() -> None:
    view = conversation_from_analytics(CONSULT_ANALYTICS)
    assert view.id == CONV_ID
    assert view.ended is True
    assert [(p.id, p.purpose, p.user_id, p.name) for p in view.participants][2:] == [
        (ALICE_PID, "agent", ALICE, "Alice Example"),
        (BOB_PID, "agent", BOB, "Bob Example"),
    ]
    assert view.participants[2].communications == (
        Communication(
            id=ALICE_CALL,
            media="calls",
            state="disconnected",
            connected_time=datetime(2026, 11, 20, 10, 0, 40, tzinfo=UTC),  # the alert's start
            # the end of the interaction, not of the wrap-up segment
            disconnected_time=datetime(2026, 11, 20, 10, 30, 12, 345000, tzinfo=UTC),
            wrapup_code=OTHER,
            wrapup_notes="first pass",
            wrapup_end=datetime(2026, 11, 20, 10, 30, 24, 345000, tzinfo=UTC),
        ),
    )


@pytest.mark.parametrize("on_existing", ["skip", "replace"])
@pytest.mark.parametrize("participant", ["last-agent", "all-agents"])
def test_the_consult_plans_the_same_from_both_apis(
    participant: ParticipantMode, on_existing: OnExisting
) -> None:
    from_json = plan(
        conversation_from_json(CONSULT_JSON),
        code_id=CODE,
        participant=participant,
        on_existing=on_existing,
    )
    from_analytics = plan(
        conversation_from_analytics(CONSULT_ANALYTICS),
        code_id=CODE,
        participant=participant,
        on_existing=on_existing,
    )
    assert from_json == from_analytics
    if participant == "last-agent":
        # Alice ended last though Bob is listed after her
        assert from_json.targets == (
            Target(ALICE_PID, ALICE_CALL, "calls", ALICE, OTHER, "first pass",
                   "skip" if on_existing == "skip" else "apply",
                   datetime(2026, 11, 20, 10, 30, 24, 345000, tzinfo=UTC)),
        )  # fmt: skip
    else:
        assert [t.action for t in from_json.targets] == [
            "skip" if on_existing == "skip" else "apply",
            "unchanged",
        ]


def test_participant_wrapup_is_not_inherited_by_one_of_several_communications() -> None:
    data = {
        "id": "x",
        "participants": [
            {
                "id": "p",
                "purpose": "agent",
                "userId": ALICE,
                "wrapup": {"code": OTHER},
                "calls": [{"id": "c1", "state": "disconnected"}],
                "emails": [{"id": "c2", "state": "disconnected"}],
            }
        ],
    }
    comms = conversation_from_json(data).participants[0].communications
    assert [(c.id, c.media, c.wrapup_code) for c in comms] == [
        ("c1", "calls", None),
        ("c2", "emails", None),
    ]


def test_own_wrapup_beats_the_participant_wrapup() -> None:
    data = {
        "participants": [
            {
                "id": "p",
                "userId": ALICE,
                "purpose": "agent",
                "wrapup": {"code": OTHER, "notes": "participant"},
                "messages": [{"id": "m", "state": "DISCONNECTED", "wrapup": {"code": CODE}}],
            }
        ],
    }
    comm = conversation_from_json(data).participants[0].communications[0]
    assert (comm.media, comm.state, comm.wrapup_code, comm.wrapup_notes) == (
        "messages",
        "disconnected",
        CODE,
        None,
    )
    assert comm.ended


def test_every_media_array_and_chats_left_out() -> None:
    keys = ["calls", "callbacks", "emails", "messages", "socialExpressions", "videos"]
    keys += ["cobrowsesessions", "screenshares", "chats"]
    raw: dict[str, Any] = {"id": "p", "purpose": "agent", "userId": ALICE}
    for key in keys:
        raw[key] = [{"id": f"c-{key}", "state": "disconnected"}]
    comms = conversation_from_json({"participants": [raw]}).participants[0].communications
    assert [c.media for c in comms] == list(MEDIA_TYPES)
    assert "c-chats" not in [c.id for c in comms]


def test_an_agent_with_only_a_chat_has_nothing_to_wrap_up() -> None:
    data = {
        "participants": [
            {"id": "c", "purpose": "customer", "chats": [{"id": "x", "state": "disconnected"}]},
            {
                "id": "a",
                "purpose": "agent",
                "userId": ALICE,
                "chats": [{"id": "y", "state": "disconnected"}],
            },
        ]
    }
    result = plan(conversation_from_json(data), code_id=CODE)
    assert result.status is Status.NO_AGENT
    assert "can be wrapped up" in result.message


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"participants": None},
        {"participants": [None, "x", {"calls": None}]},
        {"participants": [{"id": "p", "purpose": None, "userId": 5, "calls": [{"state": 3}]}]},
    ],
)
def test_garbled_conversation_json_does_not_crash(data: dict[str, Any]) -> None:
    view = conversation_from_json(data)
    assert plan(view, code_id=CODE).status is Status.NO_AGENT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-20T10:15:30.123Z", datetime(2026, 11, 20, 10, 15, 30, 123000, tzinfo=UTC)),
        ("2026-11-20T10:15:30Z", datetime(2026, 11, 20, 10, 15, 30, tzinfo=UTC)),
        ("2026-11-20T11:15:30+01:00", datetime(2026, 11, 20, 10, 15, 30, tzinfo=UTC)),
        ("2026-11-20T10:15:30", datetime(2026, 11, 20, 10, 15, 30, tzinfo=UTC)),
        ("garbled", None),
        ("2026-13-45T99:00:00Z", None),
        ("", None),
        (None, None),
        (1763633730, None),
    ],
)
def test_parse_time(value: object, expected: datetime | None) -> None:
    parsed = parse_time(value)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == timedelta(0)


def test_garbled_times_sort_as_unknown() -> None:
    good = {"id": "c1", "state": "disconnected", "disconnectedTime": "2026-11-20T10:05:00Z"}
    bad = {"id": "c2", "state": "disconnected", "disconnectedTime": "yesterday"}
    data = {
        "participants": [
            {"id": "a", "purpose": "agent", "userId": ALICE, "calls": [good]},
            {"id": "b", "purpose": "agent", "userId": BOB, "calls": [bad]},
        ]
    }
    view = conversation_from_json(data)
    assert view.participants[1].communications[0].disconnected_time is None
    assert [t.communication_id for t in plan(view, code_id=CODE).targets] == ["c1"]


def _session(segments: list[dict[str, Any]], media: str = "voice") -> dict[str, Any]:
    return {
        "conversationId": "x",
        "participants": [
            {
                "participantId": "p",
                "purpose": "agent",
                "userId": ALICE,
                "sessions": [{"sessionId": "s", "mediaType": media, "segments": segments}],
            }
        ],
    }


def test_analytics_open_segment_means_connected() -> None:
    data = _session([{"segmentStart": "2026-11-20T10:00:00Z", "segmentType": "interact"}])
    comm = conversation_from_analytics(data).participants[0].communications[0]
    assert comm.state == "connected"
    assert comm.disconnected_time is None
    assert plan(conversation_from_analytics(data), code_id=CODE).status is Status.NOT_ENDED


def test_analytics_conversation_end_ends_every_session() -> None:
    data = _session([{"segmentStart": "2026-11-20T10:00:00Z", "segmentType": "interact"}])
    data["conversationEnd"] = "2026-11-20T10:09:00Z"
    view = conversation_from_analytics(data)
    assert view.ended
    assert view.participants[0].communications[0].state == "disconnected"


def test_analytics_session_without_segments_is_not_ended() -> None:
    comm = conversation_from_analytics(_session([])).participants[0].communications[0]
    assert comm.state == "connected"


def test_analytics_wrapup_is_the_last_segment_with_a_code() -> None:
    data = _session(
        [
            {"segmentStart": "2026-11-20T10:00:00Z", "segmentEnd": "2026-11-20T10:05:00Z",
             "segmentType": "interact"},
            {"segmentStart": "2026-11-20T10:05:00Z", "segmentEnd": "2026-11-20T10:06:00Z",
             "segmentType": "wrapup", "wrapUpCode": OTHER, "wrapUpNote": "old"},
            {"segmentStart": "2026-11-20T10:06:00Z", "segmentEnd": "2026-11-20T10:07:00Z",
             "segmentType": "wrapup", "wrapUpCode": CODE},
            {"segmentStart": "2026-11-20T10:07:00Z", "segmentEnd": "2026-11-20T10:07:30Z",
             "segmentType": "wrapup"},
        ]
    )  # fmt: skip
    comm = conversation_from_analytics(data).participants[0].communications[0]
    assert (comm.wrapup_code, comm.wrapup_notes) == (CODE, None)
    assert comm.disconnected_time == datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
    assert comm.connected_time == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("media_type", "media"),
    [
        ("voice", "calls"),
        ("callback", "callbacks"),
        ("email", "emails"),
        ("message", "messages"),
        ("social", None),  # not a media type of the SDK's AnalyticsSession
        ("video", "videos"),
        ("cobrowse", "cobrowsesessions"),
        ("screenshare", "screenshares"),
        ("chat", None),
        ("internalmessage", None),
        ("screenmonitoring", None),
        ("unknown", None),
    ],
)
def test_analytics_media_types(media_type: str, media: str | None) -> None:
    segments = [{"segmentStart": "2026-11-20T10:00:00Z", "segmentEnd": "2026-11-20T10:01:00Z"}]
    view = conversation_from_analytics(_session(segments, media_type))
    assert [c.media for c in view.participants[0].communications] == ([media] if media else [])
    # a media type that may hide a wrap-up path (unknown, or one the SDK does not list) sends
    # the conversation to the Conversations API; those known to have none do not
    without_wrapup = ("chat", "internalmessage", "screenmonitoring")
    assert view.incomplete is (media is None and media_type not in without_wrapup)


# =============================================================================================
# Properties
# =============================================================================================

_PURPOSES = ["agent", "user", "customer", "acd", "ivr", "external", "voicemail", "workflow"]
_times = st.none() | st.integers(0, 20).map(lambda m: T0 + timedelta(minutes=m))


@st.composite
def _communications(draw: st.DrawFn, prefix: str) -> tuple[Communication, ...]:
    count = draw(st.integers(0, 3))
    return tuple(
        Communication(
            id=f"{prefix}-c{k}",
            media=draw(st.sampled_from(MEDIA_TYPES)),
            state=draw(
                st.sampled_from(["disconnected", "terminated", "connected", "alerting", ""])
            ),
            connected_time=None,
            disconnected_time=draw(_times),
            wrapup_code=draw(st.sampled_from([None, CODE, OTHER])),
            wrapup_notes=None,
        )
        for k in range(count)
    )


@st.composite
def _conversations(draw: st.DrawFn) -> ConversationView:
    participants = tuple(
        Participant(
            id=f"p{i}",
            purpose=draw(st.sampled_from(_PURPOSES)),
            user_id=draw(st.sampled_from([None, ALICE, BOB, CAROL])),
            name=None,
            communications=draw(_communications(f"p{i}")),
        )
        for i in range(draw(st.integers(0, 5)))
    )
    return ConversationView("x", participants, draw(st.booleans()))


def _is_agent(p: Participant) -> bool:
    return p.user_id is not None and p.purpose not in NON_AGENT_PURPOSES


@settings(max_examples=300, deadline=None)
@given(
    view=_conversations(),
    agent_id=st.sampled_from([None, ALICE, BOB]),
    participant=st.sampled_from(["last-agent", "all-agents"]),
    on_existing=st.sampled_from(["skip", "replace"]),
)
def test_plan_properties(
    view: ConversationView,
    agent_id: str | None,
    participant: ParticipantMode,
    on_existing: OnExisting,
) -> None:
    result = plan(
        view, code_id=CODE, agent_id=agent_id, participant=participant, on_existing=on_existing
    )
    pool = [
        (p, c)
        for p in view.participants
        if _is_agent(p) and (agent_id is None or p.user_id == agent_id)
        for c in p.communications
    ]
    by_id = {c.id: (p, c) for p, c in pool}
    # never a communication that has not ended, never one of a non-agent
    for target in result.targets:
        assert target.communication_id in by_id
        assert by_id[target.communication_id][1].ended
    if not pool:
        assert result.status is Status.NO_AGENT
    elif not all(c.ended for _, c in pool):
        assert result.status is Status.NOT_ENDED
        assert result.targets == ()
    elif participant == "all-agents":
        assert {t.communication_id for t in result.targets} == set(by_id)
    else:
        (target,) = result.targets
        chosen = by_id[target.communication_id][1].disconnected_time
        known = [c.disconnected_time for _, c in pool if c.disconnected_time is not None]
        if known:
            assert chosen == max(known)
        else:
            assert chosen is None
    assert (result.status is None) == any(t.action == "apply" for t in result.targets)
    for target in result.targets:
        if target.previous_code == CODE:
            assert target.action == "unchanged"
        elif target.previous_code == OTHER:
            assert target.action == ("skip" if on_existing == "skip" else "apply")
        else:
            assert target.action == "apply"


# =============================================================================================
# A real org's details: after-call work, end times, purposes, system codes (issue 9)
# =============================================================================================


def _one_agent(comm: dict[str, Any], **participant: Any) -> dict[str, Any]:
    return {
        "id": "conv",
        "endTime": "2026-11-20T10:05:00.000Z",
        "participants": [
            {"id": "cust", "purpose": "customer", "calls": [{"id": "k", "state": "disconnected"}]},
            {"id": "p", "purpose": "agent", "userId": ALICE, "name": "Alice", "calls": [comm]}
            | participant,
        ],
    }


_ENDED = {"id": "c", "state": "disconnected", "disconnectedTime": "2026-11-20T10:05:00.000Z"}


@pytest.mark.parametrize("media_key", ["calls", "emails"])
def test_an_agent_still_in_after_call_work_is_not_ended(media_key: str) -> None:
    data = _one_agent(_ENDED | {"afterCallWork": {"state": "pending"}})
    data["participants"][1][media_key] = data["participants"][1].pop("calls")
    result = plan(conversation_from_json(data), code_id=CODE)
    assert result.status is Status.NOT_ENDED
    assert "still in after-call work" in result.message
    assert "next run tries again" in result.message
    assert result.targets == ()


@pytest.mark.parametrize("state", ["complete", "skipped", "notApplicable", "unknown", None])
def test_after_call_work_in_any_other_state_is_applied(state: str | None) -> None:
    comm = _ENDED | ({"afterCallWork": {"state": state}} if state else {})
    assert plan(conversation_from_json(_one_agent(comm)), code_id=CODE).status is None


def test_an_earlier_agent_in_after_call_work_does_not_hold_back_the_last_agent() -> None:
    data = _one_agent(_ENDED | {"disconnectedTime": "2026-11-20T10:09:00.000Z"})
    data["participants"].append(
        {
            "id": "p0",
            "purpose": "agent",
            "userId": BOB,
            "calls": [_ENDED | {"id": "c0", "afterCallWork": {"state": "pending"}}],
        }
    )
    result = plan(conversation_from_json(data), code_id=CODE)
    assert [t.communication_id for t in result.to_apply] == ["c"]
    everyone = plan(conversation_from_json(data), code_id=CODE, participant="all-agents")
    assert everyone.status is Status.NOT_ENDED


def test_analytics_shows_after_call_work_as_an_open_wrapup_segment() -> None:
    data = _session(
        [
            {"segmentStart": "2026-11-20T10:00:00Z", "segmentEnd": "2026-11-20T10:05:00Z",
             "segmentType": "interact"},
            {"segmentStart": "2026-11-20T10:05:00Z", "segmentType": "wrapup"},
        ]
    )  # fmt: skip
    data["conversationEnd"] = "2026-11-20T10:05:00Z"
    view = conversation_from_analytics(data)
    assert view.incomplete  # the runner asks the Conversations API
    assert plan(view, code_id=CODE).status is Status.NOT_ENDED


_T = "2026-11-20T10:{}:00.000Z".format


_ACW_08 = {"afterCallWork": {"state": "complete", "endTime": _T("08")}}


@pytest.mark.parametrize(
    ("comm", "participant", "expected"),
    [
        # the existing wrap-up's end wins over everything
        ({"wrapup": {"code": "ININ-WRAP-UP-TIMEOUT", "endTime": _T("07")}},
         {"endAcwTime": _T("06")}, _T("07")),
        # then the participant's end of after-call work
        (_ACW_08, {"endAcwTime": _T("06")}, _T("06")),
        # then the communication's own after-call work
        (_ACW_08, {}, _T("08")),
        # else the end of the communication: no after-call work at all
        ({}, {}, _T("05")),
        # a time before the communication ended is not believed
        ({}, {"endAcwTime": _T("01")}, _T("05")),
    ],
)  # fmt: skip
def test_the_end_time_keeps_the_after_call_work_where_it_was(
    comm: dict[str, Any], participant: dict[str, Any], expected: str
) -> None:
    data = _one_agent(_ENDED | comm, **participant)
    (target,) = plan(conversation_from_json(data), code_id=CODE).to_apply
    assert target.end_time == parse_time(expected)


def test_the_participants_end_of_after_call_work_belongs_to_its_last_communication() -> None:
    data = _one_agent(_ENDED, endAcwTime=_T("12"))
    data["participants"][1]["calls"].append(
        {"id": "c2", "state": "disconnected", "disconnectedTime": "2026-11-20T10:10:00.000Z"}
    )
    targets = plan(conversation_from_json(data), code_id=CODE, participant="all-agents").targets
    assert [(t.communication_id, t.end_time) for t in targets] == [
        ("c", parse_time(_T("05"))),
        ("c2", parse_time(_T("12"))),
    ]


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("ININ-WRAP-UP-TIMEOUT", "apply"),  # no agent chose: after-call work timed out
        ("ININ-WRAP-UP-SKIPPED", "apply"),  # no agent chose: the agent skipped it
        ("ININ-WRAP-UP-DELETED", "skip"),  # a code was chosen, then deleted
        ("ININ-OUTBOUND-MACHINE", "skip"),  # the dialer's outcome: campaigns rely on it
        ("ININ-OUTBOUND-TRANSFERRED-TO-QUEUE", "skip"),
    ],
)
def test_system_codes_apply_or_skip(code: str, action: str) -> None:
    data = _one_agent(_ENDED | {"wrapup": {"code": code}})
    (target,) = plan(conversation_from_json(data), code_id=CODE).targets
    assert (target.action, target.previous_code) == (action, code)
    (replaced,) = plan(conversation_from_json(data), code_id=CODE, on_existing="replace").targets
    assert replaced.action == "apply"


def test_non_agent_purposes_are_every_sdk_purpose_but_agent_and_user() -> None:
    from PureCloudPlatformClientV2.models.analytics_participant import AnalyticsParticipant

    setter = inspect.getsource(AnalyticsParticipant.purpose.fset)
    listed = re.search(r"allowed_values = (\[.*?\])", setter)
    assert listed is not None
    assert set(json.loads(listed.group(1))) == ANALYTICS_PURPOSES
    assert ANALYTICS_PURPOSES - {"agent", "user"} == NON_AGENT_PURPOSES
    sdk = AnalyticsParticipant()
    sdk.purpose = "no-such-purpose"
    assert sdk.purpose == "outdated_sdk_version"  # the SDK enforces that list


@pytest.mark.parametrize("purpose", sorted(NON_AGENT_PURPOSES))
def test_a_participant_of_a_non_agent_purpose_with_a_user_id_is_no_agent(purpose: str) -> None:
    data = _one_agent(_ENDED)
    data["participants"][1]["purpose"] = purpose
    assert plan(conversation_from_json(data), code_id=CODE).status is Status.NO_AGENT
