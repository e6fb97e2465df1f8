"""Which communication(s) of a conversation to wrap up, or why there are none.

Pure functions, no I/O. A conversation is first parsed into a neutral view, either from
`GET /api/v2/conversations/{id}` (`conversation_from_json`) or from one conversation of the
analytics details multi-get (`conversation_from_analytics`); `plan` then picks the agent
communication(s) for a row and decides, for each, whether to apply the code.

Agent participants: a wrap-up belongs to a user participant, so an agent participant is any
participant with a `userId` whose purpose is not one of `NON_AGENT_PURPOSES` (every purpose the
SDK's `AnalyticsParticipant` lists but `agent` and `user`; a purpose this module has never seen
counts as an agent), and that has at least one communication of a media in `MEDIA_TYPES`.

Selection (`participant`):
- `last-agent` (default): the one communication that ended last by `disconnected_time` (not the
  last one listed: in a consult, the later-listed agent can leave first). Ties go to the one
  listed later; a communication without a `disconnected_time` loses to any with one. Every
  agent communication must have ended, since which ended last is not known before.
- `all-agents`: every agent communication; all must have ended.
An `agent_id` first narrows the agents to the participants of that user.

A selected communication whose `afterCallWork.state` is `pending` makes the row `not_ended`:
its agent is still wrapping up, and a POST now would race the agent's own choice.

Decision per selected communication: it already has the code -> `unchanged`; it has another
code -> `skip` (or `apply` with `on_existing="replace"`); it has none, or only a system
placeholder from `PLACEHOLDER_CODES` (no agent chose a code) -> `apply`. Every other system
code (`ININ-WRAP-UP-DELETED`, `ININ-OUTBOUND-*`, ...) counts as an existing wrap-up.

End time: a wrap-up is sent with the `endTime` that keeps the agent's after-call work where it
was (`Target.end_time`): the existing wrap-up's `endTime`, else the participant's `endAcwTime`
(when it is not before the communication's end), else the communication's
`afterCallWork.endTime`, else its `disconnectedTime`. Without it the server may end the
after-call work at the time of the backfill (UNCONFIRMED), days of after-call work in reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from wrapup_batch.models import Status

__all__ = [
    "AGENT_PURPOSES",
    "ANALYTICS_MEDIA",
    "ANALYTICS_PURPOSES",
    "ENDED_STATES",
    "MEDIA_TYPES",
    "NON_AGENT_PURPOSES",
    "PLACEHOLDER_CODES",
    "Action",
    "Communication",
    "ConversationView",
    "OnExisting",
    "Participant",
    "ParticipantMode",
    "Plan",
    "Target",
    "agent_participants",
    "conversation_from_analytics",
    "conversation_from_json",
    "format_time",
    "is_system_code",
    "parse_time",
    "plan",
]

# The path segment of the media's wrapup endpoint (SDK 269; `chats` was retired).
MEDIA_TYPES = (
    "calls",
    "callbacks",
    "emails",
    "messages",
    "socials",
    "videos",
    "cobrowsesessions",
    "screenshares",
)
ENDED_STATES = frozenset({"disconnected", "terminated"})
# Every participant purpose the SDK knows (`AnalyticsParticipant.purpose`, SDK 269; the
# Conversations API's `Participant.purpose` is a plain string with the same values).
ANALYTICS_PURPOSES = frozenset(
    {
        "acd",
        "agent",
        "api",
        "botflow",
        "campaign",
        "customer",
        "dialer",
        "external",
        "fax",
        "group",
        "inbound",
        "ivr",
        "manual",
        "outbound",
        "station",
        "user",
        "voicemail",
        "voicesurveyflow",
        "workflow",
    }
)
#: The purposes of user participants, the only ones a wrap-up belongs to.
AGENT_PURPOSES = frozenset({"agent", "user"})
# Purposes of participants that are never wrapped up, even when they carry a userId.
NON_AGENT_PURPOSES = ANALYTICS_PURPOSES - AGENT_PURPOSES
# System codes Genesys records when no agent chose a code: the after-call work timed out, or
# the agent skipped the wrap-up. They do not count as an existing wrap-up: the backfill applies
# over them even with on_existing="skip" (the previous code is still recorded). Every other
# system code (`is_system_code`) counts as a wrap-up that exists: `ININ-WRAP-UP-DELETED` (a code
# was chosen and later deleted) and the dialer's `ININ-OUTBOUND-*` outcomes (which campaign
# rules and reports rely on) are skipped unless --on-existing replace.
# UNCONFIRMED: seen as the analytics `wrapUpCode` value; whether the Conversations API shows
# these names or an id in `wrapup.code`, what DELETED stands for exactly, and whether a POST may
# overwrite any of them.
PLACEHOLDER_CODES = frozenset({"ININ-WRAP-UP-TIMEOUT", "ININ-WRAP-UP-SKIPPED"})
_SYSTEM_CODE_PREFIX = "ININ-"

Action = Literal["apply", "unchanged", "skip"]
ParticipantMode = Literal["last-agent", "all-agents"]
OnExisting = Literal["skip", "replace"]

# Conversations API media arrays -> wrapup endpoint media. `chats` has no wrapup endpoint any
# more: its communications are left out (they still count for the participant-wrapup rule).
_CONVERSATION_MEDIA = (
    ("calls", "calls"),
    ("callbacks", "callbacks"),
    ("emails", "emails"),
    ("messages", "messages"),
    ("socialExpressions", "socials"),
    ("videos", "videos"),
    ("cobrowsesessions", "cobrowsesessions"),
    ("screenshares", "screenshares"),
)
_UNSUPPORTED_MEDIA_KEYS = ("chats", "internalMessages", "screenMonitorings")

# Analytics `mediaType` (the SDK's `AnalyticsSession`: callback, chat, cobrowse, email,
# internalmessage, message, screenmonitoring, screenshare, unknown, video, voice) -> wrapup
# endpoint media, for each that has one. There is no `social`: UNCONFIRMED which mediaType a
# social expression has in analytics, so a session of any other type marks the conversation's
# analytics view `incomplete`, and the runner reads that conversation through the
# Conversations API instead. UNCONFIRMED against real orgs, like the whole analytics mapping.
ANALYTICS_MEDIA = {
    "voice": "calls",
    "callback": "callbacks",
    "email": "emails",
    "message": "messages",
    "video": "videos",
    "cobrowse": "cobrowsesessions",
    "screenshare": "screenshares",
}

_MEDIA_ORDER = {media: index for index, media in enumerate(MEDIA_TYPES)}
#: `afterCallWork.state` of a communication whose agent is still in after-call work.
ACW_PENDING = "pending"
_NEVER = datetime.min.replace(tzinfo=UTC)
_REPLACE_HINT = "use --on-existing replace to change it"


@dataclass(frozen=True, slots=True)
class Communication:
    id: str
    media: str
    state: str
    connected_time: datetime | None
    disconnected_time: datetime | None
    wrapup_code: str | None
    wrapup_notes: str | None
    #: The existing wrap-up's `endTime` (analytics: its wrapup segment's end).
    wrapup_end: datetime | None = None
    #: `afterCallWork.state` (unknown, notApplicable, skipped, pending, complete) and `endTime`.
    acw_state: str | None = None
    acw_end: datetime | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def in_after_call_work(self) -> bool:
        return self.acw_state == ACW_PENDING


@dataclass(frozen=True, slots=True)
class Participant:
    id: str
    purpose: str
    user_id: str | None
    name: str | None
    communications: tuple[Communication, ...]
    #: When the participant's after-call work ended (`endAcwTime`).
    end_acw: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConversationView:
    id: str
    participants: tuple[Participant, ...]
    ended: bool
    #: When the conversation ended (analytics `conversationEnd`, Conversations API `endTime`).
    end_time: datetime | None = None
    #: Analytics only: some session could not be mapped to a wrap-up media, or shows after-call
    #: work still open: the Conversations API must be asked instead.
    incomplete: bool = False


@dataclass(frozen=True, slots=True)
class Target:
    participant_id: str
    communication_id: str
    media: str
    user_id: str | None
    previous_code: str | None
    previous_notes: str | None
    action: Action
    #: The `endTime` to send with the wrap-up (see the module docstring); None when unknown.
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """`status` is None when some target is to be applied, else the row's final status."""

    status: Status | None
    message: str
    targets: tuple[Target, ...]

    @property
    def to_apply(self) -> tuple[Target, ...]:
        return tuple(target for target in self.targets if target.action == "apply")


# --- parsing --------------------------------------------------------------------------------


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 timestamp as an aware UTC datetime; None when missing or garbled."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """An aware datetime as Genesys writes times: ISO-8601 UTC with milliseconds and Z."""
    utc = value.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def is_system_code(code: str | None) -> bool:
    """Whether a wrap-up code is one Genesys sets itself (`ININ-...`), not an org's code id."""
    return code is not None and code.upper().startswith(_SYSTEM_CODE_PREFIX)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _lower(value: object) -> str:
    return value.lower() if isinstance(value, str) else ""


def _items(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


_Wrapup = tuple[str | None, str | None, datetime | None]
_NO_WRAPUP: _Wrapup = (None, None, None)


def _wrapup(value: object) -> _Wrapup:
    """(code id, notes, endTime) of a `wrapup` object; the code may also come as {id, name}."""
    if not isinstance(value, Mapping):
        return _NO_WRAPUP
    code = value.get("code")
    if isinstance(code, Mapping):
        code = code.get("id")
    return _str(code), _str(value.get("notes")), parse_time(value.get("endTime"))


def conversation_from_json(data: Mapping[str, Any]) -> ConversationView:
    """Parse `GET /api/v2/conversations/{id}`."""
    participants = tuple(_participant_from_json(raw) for raw in _items(data.get("participants")))
    return ConversationView(
        id=_str(data.get("id")) or "",
        participants=participants,
        ended=bool(data.get("endTime")),
        end_time=parse_time(data.get("endTime")),
    )


def _participant_from_json(raw: Mapping[str, Any]) -> Participant:
    media_lists = [(media, _items(raw.get(key))) for key, media in _CONVERSATION_MEDIA]
    count = sum(len(items) for _, items in media_lists)
    count += sum(len(_items(raw.get(key))) for key in _UNSUPPORTED_MEDIA_KEYS)
    # The participant-level wrapup stands for its communication only when there is just one.
    inherited = _wrapup(raw.get("wrapup")) if count == 1 else _NO_WRAPUP
    communications = tuple(
        _communication_from_json(item, media, inherited)
        for media, items in media_lists
        for item in items
    )
    return Participant(
        id=_str(raw.get("id")) or "",
        purpose=_lower(raw.get("purpose")),
        user_id=_str(raw.get("userId")),
        name=_str(raw.get("name")),
        communications=communications,
        end_acw=parse_time(raw.get("endAcwTime")),
    )


def _communication_from_json(
    raw: Mapping[str, Any], media: str, inherited: _Wrapup
) -> Communication:
    code, notes, end = _wrapup(raw.get("wrapup"))
    if code is None and notes is None:
        code, notes, end = inherited
    acw = raw.get("afterCallWork")
    acw = acw if isinstance(acw, Mapping) else {}
    return Communication(
        id=_str(raw.get("id")) or "",
        media=media,
        state=_lower(raw.get("state")),
        connected_time=parse_time(raw.get("connectedTime")),
        disconnected_time=parse_time(raw.get("disconnectedTime")),
        wrapup_code=code,
        wrapup_notes=notes,
        wrapup_end=end,
        acw_state=_str(acw.get("state")),
        acw_end=parse_time(acw.get("endTime")),
    )


def conversation_from_analytics(data: Mapping[str, Any]) -> ConversationView:
    """Parse one element of `conversations[]` of the analytics conversation details.

    UNCONFIRMED against real orgs: that `sessionId` is the Conversations API communication id,
    the `mediaType` mapping, and the state and times derived from the segments. A wrapup
    segment without an end and without a code is after-call work still going on.
    """
    ended = bool(data.get("conversationEnd"))
    incomplete = False
    participants = []
    for raw in _items(data.get("participants")):
        purpose = _lower(raw.get("purpose"))
        user_id = _str(raw.get("userId"))
        comms, unmapped = _sessions(raw, ended)
        could_be_agent = user_id is not None and purpose not in NON_AGENT_PURPOSES
        if could_be_agent and (unmapped or any(c.in_after_call_work for c in comms)):
            incomplete = True
        participants.append(
            Participant(
                id=_str(raw.get("participantId")) or "",
                purpose=purpose,
                user_id=user_id,
                name=_str(raw.get("participantName")),
                communications=comms,
            )
        )
    return ConversationView(
        id=_str(data.get("conversationId")) or "",
        participants=tuple(participants),
        ended=ended,
        end_time=parse_time(data.get("conversationEnd")),
        incomplete=incomplete,
    )


#: Analytics media types that have no wrap-up endpoint, so that a session of them is left out
#: as the Conversations API's `chats`, `internalMessages` and `screenMonitorings` are.
_ANALYTICS_MEDIA_WITHOUT_WRAPUP = frozenset({"chat", "internalmessage", "screenmonitoring"})


def _sessions(
    participant: Mapping[str, Any], ended: bool
) -> tuple[tuple[Communication, ...], bool]:
    """The participant's communications, and whether a session had a media type not mapped."""
    comms: list[Communication] = []
    unmapped = False
    for session in _items(participant.get("sessions")):
        media_type = _lower(session.get("mediaType"))
        media = ANALYTICS_MEDIA.get(media_type)
        session_id = _str(session.get("sessionId"))
        if media is None:
            unmapped = unmapped or media_type not in _ANALYTICS_MEDIA_WITHOUT_WRAPUP
        elif session_id is not None:
            comms.append(_communication_from_session(session, session_id, media, ended))
    # Listed by media, as the Conversations API lists them (one array per media), so that both
    # views of a conversation order its communications, and so break ties, the same way.
    comms.sort(key=lambda comm: _MEDIA_ORDER[comm.media])
    return tuple(comms), unmapped


def _communication_from_session(
    session: Mapping[str, Any], session_id: str, media: str, conversation_ended: bool
) -> Communication:
    segments = _items(session.get("segments"))
    connected: datetime | None = None
    disconnected: datetime | None = None
    open_segment = False
    acw_open = False
    code: str | None = None
    notes: str | None = None
    wrapup_end: datetime | None = None
    for segment in segments:
        start = parse_time(segment.get("segmentStart"))
        if start is not None and (connected is None or start < connected):
            connected = start
        end = parse_time(segment.get("segmentEnd"))
        is_wrapup = segment.get("segmentType") == "wrapup"
        has_code = _str(segment.get("wrapUpCode")) is not None
        if end is None:
            open_segment = True
            acw_open = acw_open or (is_wrapup and not has_code)
        elif not is_wrapup and (disconnected is None or end > disconnected):
            disconnected = end
        if has_code:  # the last one carrying a code wins
            code, notes = _str(segment.get("wrapUpCode")), _str(segment.get("wrapUpNote"))
            wrapup_end = end
    ended = conversation_ended or (bool(segments) and not open_segment)
    return Communication(
        id=session_id,
        media=media,
        state="disconnected" if ended else "connected",
        connected_time=connected,
        disconnected_time=disconnected,
        wrapup_code=code,
        wrapup_notes=notes,
        wrapup_end=wrapup_end,
        acw_state=ACW_PENDING if acw_open else None,
    )


# --- planning -------------------------------------------------------------------------------

_Candidate = tuple[Participant, Communication]


def agent_participants(conversation: ConversationView) -> tuple[Participant, ...]:
    """The participants that can be wrapped up (see the module docstring)."""
    return tuple(p for p in conversation.participants if _is_user(p) and p.communications)


def _is_user(participant: Participant) -> bool:
    return participant.user_id is not None and participant.purpose not in NON_AGENT_PURPOSES


def plan(
    conversation: ConversationView,
    *,
    code_id: str,
    agent_id: str | None = None,
    participant: ParticipantMode = "last-agent",
    on_existing: OnExisting = "skip",
    name_of: Callable[[str], str] | None = None,
    communication_id: str | None = None,
    expected_code: str | None = None,
) -> Plan:
    """Pick the communication(s) to wrap up with `code_id` and decide what to do with each.

    `name_of` (e.g. `CodeCatalog.name_of`) lets messages name codes, not only give their ids.
    `communication_id` targets exactly that agent communication (a revert does), and
    `expected_code` replaces its code only while it still has that one: a code changed since
    by someone else is left alone (`skipped`).
    """
    if participant not in ("last-agent", "all-agents"):
        raise ValueError(f"participant must be last-agent or all-agents, not {participant!r}")
    if on_existing not in ("skip", "replace"):
        raise ValueError(f"on_existing must be skip or replace, not {on_existing!r}")
    agents = agent_participants(conversation)
    if not agents:
        return Plan(Status.NO_AGENT, _no_agent_message(conversation), ())
    if agent_id is not None:
        wanted = agent_id.strip().strip("{}").strip().lower()
        mine = tuple(p for p in agents if p.user_id is not None and p.user_id.lower() == wanted)
        if not mine:
            return Plan(Status.NO_AGENT, _absent_user_message(agent_id, agents), ())
        agents = mine
    candidates = [(p, c) for p in agents for c in p.communications]
    if communication_id is not None:
        wanted_id = communication_id.lower()
        candidates = [(p, c) for p, c in candidates if c.id.lower() == wanted_id]
        if not candidates:
            message = f"communication {communication_id} is not an agent's in this conversation"
            return Plan(Status.NO_AGENT, message, ())
    still_open = next(((p, c) for p, c in candidates if not c.ended), None)
    if still_open is not None:
        return Plan(Status.NOT_ENDED, _not_ended_message(*still_open), ())
    selected = candidates if participant == "all-agents" else [_ended_last(candidates)]
    wrapping_up = next(((p, c) for p, c in selected if c.in_after_call_work), None)
    if wrapping_up is not None:
        return Plan(Status.NOT_ENDED, _after_call_work_message(*wrapping_up), ())
    if expected_code is not None:
        return _replace_expected(selected, code_id, expected_code, name_of)
    targets = tuple(_target(p, c, code_id, on_existing) for p, c in selected)
    return _decide(targets, code_id, name_of)


def _replace_expected(
    selected: Sequence[_Candidate],
    code_id: str,
    expected_code: str,
    name_of: Callable[[str], str] | None,
) -> Plan:
    """Set `code_id` where the communication still has `expected_code`; leave others alone."""
    targets = tuple(_target(p, c, code_id, "replace") for p, c in selected)
    changed = [
        t
        for t in targets
        if t.action == "apply" and (t.previous_code or "").lower() != expected_code.lower()
    ]
    if changed:
        now = ", ".join(_describe(t.previous_code or "none", name_of) for t in changed)
        kept = tuple(replace(t, action="skip") if t in changed else t for t in targets)
        if all(t.action != "apply" for t in kept):
            return Plan(
                Status.SKIPPED,
                f"changed since: it now has {now}, not {_describe(expected_code, name_of)}; "
                "left as it is",
                kept,
            )
        targets = kept
    return _decide(targets, code_id, name_of)


def _ended_last(candidates: Sequence[_Candidate]) -> _Candidate:
    """The candidate with the latest disconnected_time; ties to the later listed.

    A communication that was answered (has a connected_time) wins over one that only rang:
    an agent who was alerted and never answered did not handle the conversation.
    """

    def key(index: int) -> tuple[bool, bool, datetime, int]:
        communication = candidates[index][1]
        ended_at = communication.disconnected_time
        answered = communication.connected_time is not None
        return (answered, ended_at is not None, ended_at or _NEVER, index)

    return candidates[max(range(len(candidates)), key=key)]


def _target(p: Participant, c: Communication, code_id: str, on_existing: OnExisting) -> Target:
    previous = c.wrapup_code
    action: Action
    if previous is not None and previous.lower() == code_id.lower():
        action = "unchanged"
    elif previous is None or previous.upper() in PLACEHOLDER_CODES or on_existing == "replace":
        action = "apply"
    else:
        action = "skip"
    return Target(
        participant_id=p.id,
        communication_id=c.id,
        media=c.media,
        user_id=p.user_id,
        previous_code=previous,
        previous_notes=c.wrapup_notes,
        action=action,
        end_time=_end_time(p, c),
    )


def _end_time(p: Participant, c: Communication) -> datetime | None:
    """When the agent's after-call work on `c` ended, as far as the conversation tells.

    The existing wrap-up's end, else the participant's `endAcwTime` (for the participant's
    communication that ended last only: the participant's after-call work follows it), else
    the communication's `afterCallWork.endTime`, else its `disconnectedTime`. A time before the
    communication's end is not believed.
    """
    ended = c.disconnected_time

    def plausible(value: datetime | None) -> bool:
        return value is not None and (ended is None or value >= ended)

    if plausible(c.wrapup_end):
        return c.wrapup_end
    if plausible(p.end_acw) and _ends_last(p, c):
        return p.end_acw
    if plausible(c.acw_end):
        return c.acw_end
    return ended


def _ends_last(p: Participant, c: Communication) -> bool:
    latest = max((other.disconnected_time or _NEVER for other in p.communications), default=_NEVER)
    return (c.disconnected_time or _NEVER) >= latest


def _decide(
    targets: tuple[Target, ...], code_id: str, name_of: Callable[[str], str] | None
) -> Plan:
    skipped = _codes_of(t for t in targets if t.action == "skip")
    skipped_text = ", ".join(_describe(code, name_of) for code in skipped)
    applying = sum(1 for t in targets if t.action == "apply")
    if applying:
        return Plan(None, _partial_message(targets, applying, skipped_text), targets)
    if not skipped:
        return Plan(
            Status.UNCHANGED, f"already wrapped up with {_describe(code_id, name_of)}", targets
        )
    return Plan(Status.SKIPPED, f"already wrapped up with {skipped_text}; {_REPLACE_HINT}", targets)


def _partial_message(targets: tuple[Target, ...], applying: int, skipped_text: str) -> str:
    """ "" when every target is applied; otherwise what happens to the others."""
    if applying == len(targets):
        return ""
    parts = [f"applying to {applying} of {len(targets)} communications"]
    unchanged = sum(1 for t in targets if t.action == "unchanged")
    if unchanged:
        parts.append(f"{unchanged} already ha{'s' if unchanged == 1 else 've'} the code")
    if skipped_text:
        parts.append(f"skipping those already wrapped up with {skipped_text} ({_REPLACE_HINT})")
    return "; ".join(parts)


def _codes_of(targets: Iterable[Target]) -> list[str]:
    return list(dict.fromkeys(t.previous_code for t in targets if t.previous_code is not None))


def _describe(code_id: str, name_of: Callable[[str], str] | None) -> str:
    name = name_of(code_id) if name_of is not None else code_id
    return code_id if not name or name == code_id else f'"{name}" ({code_id})'


def _no_agent_message(conversation: ConversationView) -> str:
    if not conversation.participants:
        return "conversation has no participants"
    purposes = ", ".join(dict.fromkeys(p.purpose or "unknown" for p in conversation.participants))
    if any(_is_user(p) for p in conversation.participants):
        supported = ", ".join(MEDIA_TYPES)
        return (
            "conversation has no agent participant with a communication that can be wrapped up "
            f"({supported}) (participants: {purposes})"
        )
    return f"conversation has no agent participant (participants: {purposes})"


def _absent_user_message(agent_id: str, agents: tuple[Participant, ...]) -> str:
    users = ", ".join(dict.fromkeys(p.user_id or "" for p in agents))
    return f"user {agent_id} is not an agent participant of this conversation (agents: {users})"


def _after_call_work_message(p: Participant, c: Communication) -> str:
    who = p.name or p.user_id or p.id
    return (
        f"the agent {who} (participant {p.id}) is still in after-call work on the {c.media} "
        f"communication {c.id} (afterCallWork pending): not wrapped up now, so as not to race "
        "the agent's own choice; the next run tries again"
    )


def _not_ended_message(p: Participant, c: Communication) -> str:
    who = p.name or p.user_id or p.id
    state = c.state or "in an unknown state"
    return (
        f"conversation has not ended: the {c.media} communication {c.id} of agent {who} "
        f"(participant {p.id}) is {state}"
    )
