"""The emulator's run-time state: tokens, rate-limit windows, wrap-ups, stats, fault dice.

Everything here is touched only from the server's event loop, except by tests that poke at
`handle.state` directly between requests (plain dict operations, safe under the GIL).
"""

from __future__ import annotations

import copy
import math
import random
import secrets
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field, replace
from typing import Any

from wrapup_batch.emulator.config import EmulatorConfig
from wrapup_batch.emulator.model import (
    ALL_PERMISSIONS,
    AfterCallWork,
    Conversation,
    OAuthClient,
    Participant,
    Wrapup,
    WrapupCode,
)
from wrapup_batch.emulator.seed import Seed, generated_conversation, generated_index


@dataclass(slots=True)
class Token:
    client: OAuthClient
    expires_at: float  # time.monotonic()
    user_id: str | None = None  # a user's token (the principal acts as that user)


@dataclass(slots=True)
class Stats:
    """Counters for `GET /__emulator__/stats`; cheap to update on every request."""

    requests: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    throttled: int = 0
    faults: int = 0
    dropped: int = 0
    ghost_writes: int = 0
    tokens_issued: int = 0
    posts_per_communication: Counter[str] = field(default_factory=Counter)
    post_attempts_per_communication: Counter[str] = field(default_factory=Counter)
    admitted_by_client: Counter[str] = field(default_factory=Counter)
    throttled_by_client: Counter[str] = field(default_factory=Counter)

    def count(self, route: str, status: int | str) -> None:
        self.requests[route][str(status)] += 1


class EmulatorState:
    """Mutable state of one emulator over an immutable `Seed`."""

    def __init__(self, seed: Seed, config: EmulatorConfig) -> None:
        self.seed = seed
        self.config = config
        self.codes_by_id: dict[str, WrapupCode] = {c.id: c for c in seed.codes}
        self.clients: dict[str, OAuthClient] = {c.client_id: c for c in seed.clients}
        self.wrapups: dict[str, Wrapup] = copy.deepcopy(seed.wrapups)
        self.tokens: dict[str, Token] = {}
        #: Tokens that have expired (answered 401 `credentials.expired`, not `bad.credentials`).
        self.expired_tokens: set[str] = set()
        self.windows: dict[str, deque[float]] = {}
        self.stats = Stats()
        self._seq = len(self.wrapups)
        self._rng_seed = config.random_seed
        self._rng = random.Random(config.random_seed)

    # -- lookups ---------------------------------------------------------------------------

    def conversation(self, conversation_id: str) -> Conversation | None:
        """A seeded or generated conversation (ids compared in lower case)."""
        cid = conversation_id.lower()
        conv = self.seed.conversations.get(cid)
        if conv is not None:
            return conv
        i = generated_index(cid, self.seed.generate)
        return None if i is None else generated_conversation(i, self.seed)

    @property
    def conversation_count(self) -> int:
        return len(self.seed.conversations) + self.seed.generate

    @staticmethod
    def can_see(client: OAuthClient, conversation: Conversation) -> bool:
        # UNCONFIRMED: a conversation in several divisions is visible when any of them is.
        return any(d in client.division_ids for d in conversation.division_ids)

    def visible_code(self, client: OAuthClient, code_id: str) -> WrapupCode | None:
        code = self.codes_by_id.get(code_id.lower())
        if code is None or code.division_id not in client.division_ids:
            return None
        return code

    # -- auth and rate limit -----------------------------------------------------------------

    def issue_token(self, client: OAuthClient) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = Token(client, time.monotonic() + self.config.token_ttl)
        self.stats.tokens_issued += 1
        return token

    def issue_user_token(self, user_id: str | None = None, ttl: float | None = None) -> str:
        """A token as a user's own login would give (the authorization-code or implicit
        grants, which the emulator does not serve): it acts as that user, with every
        permission the tool needs in the default client's divisions, for `ttl` seconds
        (default `token_ttl`). Nothing can renew it."""
        user = user_id or sorted(self.seed.users)[0]
        if user not in self.seed.users:
            raise ValueError(f"unknown user {user}")
        principal = OAuthClient(
            client_id=f"user:{user}",
            client_secret="",
            name=self.seed.users[user],
            division_ids=self.seed.default_client.division_ids,
            permissions=frozenset(ALL_PERMISSIONS),
        )
        token = secrets.token_urlsafe(32)
        lifetime = self.config.token_ttl if ttl is None else ttl
        self.tokens[token] = Token(principal, time.monotonic() + lifetime, user)
        self.stats.tokens_issued += 1
        return token

    def revoke_token(self, token: str) -> bool:
        """Forget a token (as a signed-out user's): every later request with it answers 401."""
        self.windows.pop(token, None)
        return self.tokens.pop(token, None) is not None

    def user_of(self, token: str) -> str | None:
        """The user id of a live user's token, None for a client's token."""
        entry = self.tokens.get(token)
        return entry.user_id if entry is not None else None

    def queue_codes(self, client: OAuthClient, participant: Participant) -> list[WrapupCode]:
        """The wrap-up codes of the participant's queue, as the client may see them.

        UNCONFIRMED: a participant without a queue, or a queue without a list, offers every
        code the client can see.
        """
        visible = [c for c in self.seed.codes if c.division_id in client.division_ids]
        listed = self.seed.queue_codes.get(participant.queue_id or "")
        if listed is None:
            return visible
        return [c for c in visible if c.id in listed]

    def client_for(self, token: str) -> OAuthClient | None:
        """The client a live token belongs to; None for an unknown or expired token."""
        entry = self.tokens.get(token)
        if entry is None:
            return None
        if time.monotonic() >= entry.expires_at:
            del self.tokens[token]
            self.windows.pop(token, None)
            self.expired_tokens.add(token)
            return None
        return entry.client

    def admit(self, key: str) -> int:
        """Count one request against the rolling window of `key` (a token, or a client id when
        the limit is counted per client).

        Returns 0 when admitted, else the whole seconds (at least 1) until the oldest request
        in the window leaves it (then a request fits again).
        """
        limit = self.config.rate_limit
        if limit <= 0:
            return 0
        now = time.monotonic()
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = deque()
        horizon = now - self.config.rate_window_s
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= limit:
            wait = window[len(window) - limit] + self.config.rate_window_s - now
            return max(1, math.ceil(wait))
        window.append(now)
        return 0

    # -- fault dice ----------------------------------------------------------------------------

    def chance(self, probability: float) -> bool:
        """True with that probability; draws nothing when it is 0 (or 1), so runs repeat."""
        if probability <= 0:
            return False
        if probability >= 1:
            return True
        return self.rng.random() < probability

    @property
    def rng(self) -> random.Random:
        if self.config.random_seed != self._rng_seed:
            self._rng_seed = self.config.random_seed
            self._rng = random.Random(self._rng_seed)
        return self._rng

    def reseed(self) -> None:
        """Restart the fault dice from `config.random_seed`."""
        self._rng_seed = self.config.random_seed
        self._rng = random.Random(self._rng_seed)

    # -- wrap-ups ------------------------------------------------------------------------------

    def set_wrapup(self, communication_id: str, wrapup: Wrapup) -> None:
        """Store (overwrite) a communication's wrap-up, stamping its order and time."""
        self._seq += 1
        wrapup.seq = self._seq
        wrapup.set_at = time.time()
        self.wrapups[communication_id.lower()] = wrapup

    def assign(self, communication_id: str, code_id: str, notes: str | None = None) -> None:
        """Test helper: give a communication a wrap-up with a code id, as if POSTed."""
        code = self.codes_by_id[code_id.lower()]
        self.set_wrapup(communication_id, Wrapup(code=code.id, name=code.name, notes=notes))

    def end_after_call_work(self, communication_id: str, end_time: str) -> None:
        """Test helper: the agent of a seeded communication whose after-call work is pending
        finishes it at `end_time` (its `afterCallWork` becomes complete, the participant gets
        its `endAcwTime`), as if the agent had closed the wrap-up screen without a code."""
        comm_id = communication_id.lower()
        for conv_id, conv in self.seed.conversations.items():
            for p in conv.participants:
                for c in p.communications:
                    if c.id != comm_id:
                        continue
                    acw = c.after_call_work or AfterCallWork("complete")
                    done = replace(
                        c, after_call_work=replace(acw, state="complete", end_time=end_time)
                    )
                    comms = tuple(done if x.id == comm_id else x for x in p.communications)
                    part = replace(p, communications=comms, end_acw_time=end_time)
                    parts = tuple(part if x.id == p.id else x for x in conv.participants)
                    self.seed.conversations[conv_id] = replace(conv, participants=parts)
                    return
        raise KeyError(f"no seeded communication {communication_id}")

    def latest_wrapup(self, communication_ids: list[str]) -> Wrapup | None:
        found = [w for w in (self.wrapups.get(c) for c in communication_ids) if w is not None]
        return max(found, key=lambda w: w.seq) if found else None

    # -- reset and stats -----------------------------------------------------------------------

    def reset(self, *, stats: bool = True, wrapups: bool = False, windows: bool = False) -> None:
        """Forget counters; optionally restore the seed's wrap-ups and empty rate windows."""
        if stats:
            self.stats = Stats()
        if wrapups:
            self.wrapups = copy.deepcopy(self.seed.wrapups)
            self._seq = len(self.wrapups)
        if windows:
            self.windows.clear()
        self.reseed()

    def stats_json(self, detail: bool) -> dict[str, Any]:
        """The stats as JSON-ready data; the per-communication maps only with `detail`."""
        s = self.stats
        out: dict[str, Any] = {
            "requests": {route: dict(by_status) for route, by_status in s.requests.items()},
            "throttled": s.throttled,
            "faults": s.faults,
            "dropped": s.dropped,
            "ghost_writes": s.ghost_writes,
            "tokens_issued": s.tokens_issued,
            "posts_accepted": sum(s.posts_per_communication.values()),
            "post_attempts": sum(s.post_attempts_per_communication.values()),
            "communications_posted": len(s.posts_per_communication),
            "wrapups_count": len(self.wrapups),
            "conversations": self.conversation_count,
            "by_client": {
                client: {
                    "admitted": s.admitted_by_client[client],
                    "throttled": s.throttled_by_client[client],
                }
                for client in sorted(set(s.admitted_by_client) | set(s.throttled_by_client))
            },
        }
        if detail:
            out["posts_per_communication"] = dict(s.posts_per_communication)
            out["post_attempts_per_communication"] = dict(s.post_attempts_per_communication)
            out["wrapups"] = {cid: w.code for cid, w in self.wrapups.items()}
        return out
