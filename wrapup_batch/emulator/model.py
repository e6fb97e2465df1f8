"""The emulator's data: divisions, wrap-up codes, OAuth clients and conversations.

Conversations are immutable once loaded; what changes at run time (wrap-ups) lives in
`state.EmulatorState`, keyed by communication id, so that generated conversations can be
rebuilt from their index on every request instead of being kept in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

# Media path segment of the wrap-up routes (all eight of SDK 269) → the analytics mediaType of
# that media (the SDK's `AnalyticsSession.mediaType` values). There is no `social` media type:
# UNCONFIRMED which one a social expression has; the emulator says `unknown`.
MEDIA_TYPES: dict[str, str] = {
    "calls": "voice",
    "callbacks": "callback",
    "emails": "email",
    "messages": "message",
    "socials": "unknown",
    "videos": "video",
    "cobrowsesessions": "cobrowse",
    "screenshares": "screenshare",
}
# Media path segment → the participant's array of that media in the Conversations API (and in
# the seed file).
MEDIA_ARRAYS: dict[str, str] = {media: media for media in MEDIA_TYPES} | {
    "socials": "socialExpressions"
}
# Media whose communications have no `terminated` state in the SDK (`Email.state`,
# `Message.state`): `disconnected` ends them.
NEVER_TERMINATED = frozenset({"emails", "messages"})
# The media arrays every participant carries in the Conversations API (empty when unused).
ALL_MEDIA_ARRAYS = (
    "calls",
    "callbacks",
    "chats",
    "cobrowsesessions",
    "emails",
    "messages",
    "screenshares",
    "socialExpressions",
    "videos",
)
ENDED_STATES = frozenset({"disconnected", "terminated"})
USER_PURPOSES = frozenset({"agent", "user"})

PERM_VIEW_CONVERSATION = "conversation:communication:view"
PERM_WRAPUP = "conversation:participant:wrapup"
PERM_VIEW_CODES = "routing:wrapupCode:view"
PERM_ANALYTICS = "analytics:conversationDetail:view"
PERM_AGENT_ANALYTICS = "analytics:agentConversationDetail:view"
ALL_PERMISSIONS = (PERM_VIEW_CONVERSATION, PERM_WRAPUP, PERM_VIEW_CODES, PERM_ANALYTICS)
#: The analytics multi-get accepts either permission (it answers `missing.any.permissions`).
ANALYTICS_PERMISSIONS = (PERM_ANALYTICS, PERM_AGENT_ANALYTICS)


@dataclass(frozen=True, slots=True)
class Division:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class WrapupCode:
    id: str
    name: str
    division_id: str
    date_created: str
    created_by: str


@dataclass(frozen=True, slots=True)
class OAuthClient:
    client_id: str
    client_secret: str
    name: str
    division_ids: frozenset[str]
    permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class AfterCallWork:
    """A communication's `afterCallWork`: state unknown, notApplicable, skipped, pending or
    complete (`pending`: the agent is still wrapping up), with its start and end."""

    state: str
    start_time: str | None = None
    end_time: str | None = None


@dataclass(frozen=True, slots=True)
class Communication:
    """One media session of a participant (a call, callback, email, message, ...)."""

    id: str
    media: str  # a key of MEDIA_TYPES: calls, callbacks, emails, messages, socials, ...
    state: str
    direction: str
    start_alerting_time: str | None
    connected_time: str | None
    disconnected_time: str | None
    disconnect_type: str | None
    after_call_work: AfterCallWork | None = None
    after_call_work_required: bool | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def start(self) -> str | None:
        return self.start_alerting_time or self.connected_time


@dataclass(frozen=True, slots=True)
class Participant:
    id: str
    purpose: str
    name: str
    user_id: str | None
    queue_id: str | None
    wrapup_required: bool
    communications: tuple[Communication, ...]
    wrapup_prompt: str | None = None
    start_acw_time: str | None = None
    end_acw_time: str | None = None

    @property
    def is_user(self) -> bool:
        return self.purpose in USER_PURPOSES and self.user_id is not None

    @property
    def start_time(self) -> str | None:
        starts = [s for s in (c.start for c in self.communications) if s]
        return min(starts) if starts else None

    @property
    def end_time(self) -> str | None:
        """When the last communication ended; None while any is still going on."""
        if not self.communications or not all(c.ended for c in self.communications):
            return None
        ends = [c.disconnected_time for c in self.communications if c.disconnected_time]
        return max(ends) if ends else None


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    division_ids: tuple[str, ...]
    participants: tuple[Participant, ...]
    direction: str = "inbound"

    @property
    def start_time(self) -> str | None:
        starts = [s for s in (p.start_time for p in self.participants) if s]
        return min(starts) if starts else None

    @property
    def end_time(self) -> str | None:
        ends = [p.end_time for p in self.participants]
        if not ends or any(e is None for e in ends):
            return None
        return max(e for e in ends if e is not None)

    def participant(self, participant_id: str) -> Participant | None:
        for p in self.participants:
            if p.id == participant_id:
                return p
        return None


@dataclass(slots=True)
class Wrapup:
    """A wrap-up assigned to one communication (mutable state, see `state.EmulatorState`).

    `seq` orders wrap-ups by when they were set (the participant-level wrap-up is the latest);
    `set_at` is the wall-clock time (`time.time()`) of the write, for the analytics lag knob: a
    seeded wrap-up was set at its `endTime`.
    """

    code: str
    name: str
    notes: str | None = None
    tags: tuple[str, ...] = ()
    duration_seconds: int | None = None
    end_time: str | None = None
    provisional: bool = False
    seq: int = 0
    set_at: float = float("-inf")

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "name": self.name}
        if self.notes is not None:
            out["notes"] = self.notes
        if self.tags:
            out["tags"] = list(self.tags)
        if self.duration_seconds is not None:
            out["durationSeconds"] = self.duration_seconds
        if self.end_time is not None:
            out["endTime"] = self.end_time
        out["provisional"] = self.provisional
        return out
