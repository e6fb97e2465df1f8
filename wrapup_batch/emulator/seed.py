"""Loading the seed file, and the generator of synthetic conversations.

The seed (`default_seed.json`, a copy of `sample_data/emulator_seed.json`) is JSON in the
Conversations API's own vocabulary: participants carry media arrays (`calls`, `callbacks`,
`emails`, `messages`, `socialExpressions`, `videos`, `cobrowsesessions`, `screenshares`) whose
entries may hold a `wrapup` {code (an id, or a system code such as `ININ-WRAP-UP-TIMEOUT`),
name, notes, endTime, ...} and an `afterCallWork` {state, startTime, endTime}; participants may
carry `wrapupPrompt`, `startAcwTime` and `endAcwTime`. Keys starting with `_` are comments.

A time may be written relative to the moment the seed is loaded, `now-90s` (or `now-5m`,
`now-2h`, `now`): such a conversation is always a recent one, whatever the day.

Generated conversations are not stored: conversation `i` is rebuilt from its index whenever it
is asked for (`generated_conversation(i, seed)`), and its ids encode the index, so 100k of them
cost nothing until wrap-ups are written.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from wrapup_batch.emulator.login import LoginSeed, parse_login_seed
from wrapup_batch.emulator.model import (
    MEDIA_ARRAYS,
    NEVER_TERMINATED,
    AfterCallWork,
    Communication,
    Conversation,
    Division,
    OAuthClient,
    Participant,
    Wrapup,
    WrapupCode,
)

DEFAULT_SEED_NAME = "default_seed.json"

# Generated ids: "9e0000KK-0000-4000-8000-<index as 12 hex digits>", KK naming the entity.
_GEN_CONVERSATION = "9e000000-0000-4000-8000-"
_GEN_CUSTOMER = "9e000001-0000-4000-8000-"
_GEN_AGENT = "9e000002-0000-4000-8000-"
_GEN_CUSTOMER_COMM = "9e000011-0000-4000-8000-"
_GEN_AGENT_COMM = "9e000012-0000-4000-8000-"
_GEN_EPOCH_MS = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
# Generated conversation i uses this media (a cycle of 10: mostly calls).
_GEN_MEDIA = ("calls",) * 7 + ("emails", "messages", "callbacks")


@dataclass(frozen=True, slots=True)
class Seed:
    """Everything the seed file defines, plus the number of generated conversations."""

    clients: tuple[OAuthClient, ...]
    divisions: dict[str, Division]
    codes: tuple[WrapupCode, ...]
    users: dict[str, str]  # user id → name
    queues: dict[str, str]  # queue id → name
    conversations: dict[str, Conversation]
    wrapups: dict[str, Wrapup]  # communication id → the wrap-up it starts with
    generate: int = 0
    #: queue id → the ids of its wrap-up codes (queues without a `wrapupCodes` list: absent)
    queue_codes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    login: LoginSeed = field(default_factory=LoginSeed)  # the login side (emulator/login.py)

    @property
    def default_client(self) -> OAuthClient:
        return self.clients[0]


def worker_client_id(n: int) -> str:
    """The id of worker client n (1-based) that `with_worker_clients` adds."""
    return f"wrapup-batch-worker-{n}"


def worker_client_secret(n: int) -> str:
    return f"worker-{n}-secret"


def with_worker_clients(seed: Seed, count: int) -> Seed:
    """The seed with `count` more OAuth clients, each a copy of its first (default) client under
    its own id and secret: several workers, each with its own client and its own rate limit."""
    base = seed.default_client
    extra = tuple(
        replace(
            base,
            client_id=worker_client_id(n),
            client_secret=worker_client_secret(n),
            name=f"worker {n}",
        )
        for n in range(1, count + 1)
    )
    taken = {c.client_id for c in seed.clients}
    clash = [c.client_id for c in extra if c.client_id in taken]
    if clash:
        raise ValueError(f"the seed already has client {clash[0]}")
    return replace(seed, clients=seed.clients + extra)


def iso_ms(epoch_ms: int) -> str:
    """ISO-8601 UTC with milliseconds and Z, as Genesys writes times."""
    dt = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


def now_iso() -> str:
    return iso_ms(int(datetime.now(tz=UTC).timestamp() * 1000))


_RELATIVE = re.compile(r"now(?:-(\d+(?:\.\d+)?)([smh]))?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
#: System wrap-up codes (`ININ-WRAP-UP-TIMEOUT`, `ININ-OUTBOUND-...`) are not in the org's
#: code list; a seed may give them to a communication as they are. UNCONFIRMED that the
#: Conversations API shows them by this name in `wrapup.code`, as analytics shows them.
SYSTEM_CODE_PREFIX = "ININ-"


def resolve_time(value: Any, now_ms: int) -> str | None:
    """A seed time: as written, or `now[-N{s,m,h}]` turned into a time `now_ms` based."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"a time must be a string, not {value!r}")
    match = _RELATIVE.fullmatch(value.strip())
    if match is None:
        return value
    amount, unit = match.groups()
    back_ms = int(float(amount) * _UNIT_SECONDS[unit] * 1000) if amount else 0
    return iso_ms(now_ms - back_ms)


def epoch_seconds(iso: str | None) -> float | None:
    """An ISO-8601 time as epoch seconds; None when missing or not a time."""
    if not iso:
        return None
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def default_seed_path() -> Path:
    """The seed packaged with wrapup_batch (identical to sample_data/emulator_seed.json).

    Falls back to the checkout's sample_data copy if an install left the package data out.
    """
    packaged = Path(str(resources.files("wrapup_batch.emulator").joinpath(DEFAULT_SEED_NAME)))
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "sample_data" / "emulator_seed.json"


def load_seed(path: Path | None = None, generate: int = 0) -> Seed:
    """Read and check a seed file; raise ValueError naming the first problem."""
    source = path or default_seed_path()
    with open(source, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: the seed must be a JSON object")
    try:
        return parse_seed(data, generate)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{source}: malformed seed ({type(exc).__name__}: {exc})") from exc


def parse_seed(data: Mapping[str, Any], generate: int = 0) -> Seed:
    divisions = {d["id"]: Division(d["id"], d["name"]) for d in data["divisions"]}
    codes = tuple(_parse_code(c, divisions) for c in data["wrapupCodes"])
    names = [c.name for c in codes]
    if len(set(names)) != len(names):
        raise ValueError("wrap-up code names must be unique")
    clients = tuple(_parse_client(c, divisions) for c in data["clients"])
    if not clients:
        raise ValueError("the seed needs at least one OAuth client")
    users = {u["id"]: u["name"] for u in data.get("users", [])}
    queues = {q["id"]: q["name"] for q in data.get("queues", [])}
    known_codes = {c.id for c in codes}
    queue_codes: dict[str, tuple[str, ...]] = {}
    for q in data.get("queues", []):
        if "wrapupCodes" in q:
            ids = tuple(str(code_id).lower() for code_id in q["wrapupCodes"])
            unknown = sorted(set(ids) - known_codes)
            if unknown:
                raise ValueError(f"queue {q['id']}: unknown wrap-up codes {unknown}")
            queue_codes[q["id"]] = ids
    conversations: dict[str, Conversation] = {}
    wrapups: dict[str, Wrapup] = {}
    codes_by_id = {c.id: c for c in codes}
    now_ms = int(time.time() * 1000)
    for raw in data["conversations"]:
        conv = _parse_conversation(raw, divisions, users, wrapups, codes_by_id, now_ms)
        if conv.id in conversations:
            raise ValueError(f"conversation {conv.id} is defined twice")
        conversations[conv.id] = conv
    for seq, w in enumerate(wrapups.values(), start=1):
        w.seq = seq
    return Seed(
        clients,
        divisions,
        codes,
        users,
        queues,
        conversations,
        wrapups,
        generate,
        queue_codes,
        parse_login_seed(data),
    )


def _parse_code(raw: Mapping[str, Any], divisions: Mapping[str, Division]) -> WrapupCode:
    if raw["divisionId"] not in divisions:
        raise ValueError(f"wrap-up code {raw['name']!r}: unknown division {raw['divisionId']}")
    return WrapupCode(
        id=raw["id"].lower(),
        name=raw["name"],
        division_id=raw["divisionId"],
        date_created=raw.get("dateCreated", "2026-01-05T09:00:00.000Z"),
        created_by=raw.get("createdBy", "00000000-0000-4000-8000-000000000000"),
    )


def _parse_client(raw: Mapping[str, Any], divisions: Mapping[str, Division]) -> OAuthClient:
    unknown = set(raw["divisionIds"]) - set(divisions)
    if unknown:
        raise ValueError(f"client {raw['clientId']}: unknown divisions {sorted(unknown)}")
    return OAuthClient(
        client_id=raw["clientId"],
        client_secret=raw["clientSecret"],
        name=raw.get("name", raw["clientId"]),
        division_ids=frozenset(raw["divisionIds"]),
        permissions=frozenset(raw["permissions"]),
    )


def _parse_conversation(
    raw: Mapping[str, Any],
    divisions: Mapping[str, Division],
    users: Mapping[str, str],
    wrapups: dict[str, Wrapup],
    codes: Mapping[str, WrapupCode],
    now_ms: int,
) -> Conversation:
    conv_id = raw["id"].lower()
    division_ids = tuple(raw["divisionIds"])
    for d in division_ids:
        if d not in divisions:
            raise ValueError(f"conversation {conv_id}: unknown division {d}")
    participants = []
    for p in raw["participants"]:
        comms = []
        for media, key in MEDIA_ARRAYS.items():
            for c in p.get(key, []):
                comm = _parse_communication(c, media, now_ms)
                if comm.state == "terminated" and media in NEVER_TERMINATED:
                    raise ValueError(
                        f"conversation {conv_id}: {key} communication {comm.id} cannot be "
                        "terminated (the SDK's states for it have no terminated: use disconnected)"
                    )
                comms.append(comm)
                if "wrapup" in c:
                    wrapups[comm.id] = _parse_wrapup(c["wrapup"], codes, conv_id, now_ms)
        user_id = p.get("userId")
        if user_id is not None and user_id not in users:
            raise ValueError(f"conversation {conv_id}: unknown user {user_id}")
        participants.append(
            Participant(
                id=p["id"].lower(),
                purpose=p["purpose"],
                name=p.get("name") or (users[user_id] if user_id else p["purpose"]),
                user_id=user_id,
                queue_id=p.get("queueId"),
                wrapup_required=bool(p.get("wrapupRequired", user_id is not None)),
                communications=tuple(comms),
                wrapup_prompt=p.get("wrapupPrompt"),
                start_acw_time=resolve_time(p.get("startAcwTime"), now_ms),
                end_acw_time=resolve_time(p.get("endAcwTime"), now_ms),
            )
        )
    return Conversation(conv_id, division_ids, tuple(participants), raw.get("direction", "inbound"))


def _parse_communication(raw: Mapping[str, Any], media: str, now_ms: int) -> Communication:
    acw = raw.get("afterCallWork")
    return Communication(
        id=raw["id"].lower(),
        media=media,
        state=raw["state"],
        direction=raw.get("direction", "inbound"),
        start_alerting_time=resolve_time(raw.get("startAlertingTime"), now_ms),
        connected_time=resolve_time(raw.get("connectedTime"), now_ms),
        disconnected_time=resolve_time(raw.get("disconnectedTime"), now_ms),
        disconnect_type=raw.get("disconnectType"),
        after_call_work=None
        if acw is None
        else AfterCallWork(
            state=acw["state"],
            start_time=resolve_time(acw.get("startTime"), now_ms),
            end_time=resolve_time(acw.get("endTime"), now_ms),
        ),
        after_call_work_required=raw.get("afterCallWorkRequired"),
    )


def _parse_wrapup(
    raw: Mapping[str, Any], codes: Mapping[str, WrapupCode], conv: str, now_ms: int
) -> Wrapup:
    value = raw["code"]
    code = codes.get(value)
    if code is None and not value.upper().startswith(SYSTEM_CODE_PREFIX):
        raise ValueError(f"conversation {conv}: wrap-up with unknown code id {value}")
    end_time = resolve_time(raw.get("endTime"), now_ms)
    set_at = epoch_seconds(end_time)
    return Wrapup(
        code=code.id if code else value,
        name=raw.get("name", code.name if code else value),
        notes=raw.get("notes"),
        tags=tuple(raw.get("tags", ())),
        duration_seconds=raw.get("durationSeconds"),
        end_time=end_time,
        provisional=bool(raw.get("provisional", False)),
        set_at=float("-inf") if set_at is None else set_at,
    )


# ---------------------------------------------------------------------------------------------
# Generated conversations


def generated_conversation_id(i: int) -> str:
    """The id of generated conversation `i` (0-based), the same in every run."""
    return f"{_GEN_CONVERSATION}{i:012x}"


def generated_index(conversation_id: str, generate: int) -> int | None:
    """The index encoded in a generated conversation id, or None when it is not one."""
    if len(conversation_id) != 36 or not conversation_id.startswith(_GEN_CONVERSATION):
        return None
    try:
        i = int(conversation_id[24:], 16)
    except ValueError:
        return None
    return i if 0 <= i < generate else None


def generated_conversation(i: int, seed: Seed) -> Conversation:
    """Synthetic ended conversation `i`: a customer and one agent, no wrap-up.

    Its media cycles over 7 calls, an email, a message and a callback; its agent, queue and
    (visible) division cycle over the seed's, so generated conversations use the seed's codes.
    """
    suffix = f"{i:012x}"
    media = _GEN_MEDIA[i % len(_GEN_MEDIA)]
    users = sorted(seed.users)
    user_id = users[i % len(users)]
    division_ids = sorted(seed.default_client.division_ids)
    start = _GEN_EPOCH_MS + i * 7_000
    answered = start + 12_000 + (i % 5) * 1_000
    ended = answered + 60_000 + (i * 37 % 600) * 1_000
    direction = "outbound" if media == "callbacks" else "inbound"
    customer = Participant(
        id=_GEN_CUSTOMER + suffix,
        purpose="customer",
        name=f"Customer {i}",
        user_id=None,
        queue_id=None,
        wrapup_required=False,
        communications=(
            Communication(
                id=_GEN_CUSTOMER_COMM + suffix,
                media=media,
                state="disconnected",
                direction=direction,
                start_alerting_time=None,
                connected_time=iso_ms(start),
                disconnected_time=iso_ms(ended),
                disconnect_type="peer",
            ),
        ),
    )
    agent = Participant(
        id=_GEN_AGENT + suffix,
        purpose="agent",
        name=seed.users[user_id],
        user_id=user_id,
        queue_id=sorted(seed.queues)[0] if seed.queues else None,
        wrapup_required=True,
        communications=(
            Communication(
                id=_GEN_AGENT_COMM + suffix,
                media=media,
                state="disconnected",
                direction=direction,
                start_alerting_time=iso_ms(answered - 4_000),
                connected_time=iso_ms(answered),
                disconnected_time=iso_ms(ended),
                disconnect_type="client",
            ),
        ),
    )
    return Conversation(
        id=_GEN_CONVERSATION + suffix,
        division_ids=(division_ids[i % len(division_ids)],),
        participants=(customer, agent),
        direction=direction,
    )


# ---------------------------------------------------------------------------------------------
# Listing what the emulator serves


GENERATED_ID_PATTERN = _GEN_CONVERSATION + "{i:012x}"


def conversation_listing(seed: Seed, limit: int) -> list[dict[str, str]]:
    """The first `limit` conversations the emulator serves (the seed's, then the generated
    ones), as rows for a CSV: id, media, whether it ended, and its agent's wrap-up code."""
    rows: list[dict[str, str]] = []
    ids = [*seed.conversations, *(generated_conversation_id(i) for i in range(seed.generate))]
    names = {code.id: code.name for code in seed.codes}
    for conversation_id in ids[:limit]:
        conv = seed.conversations.get(conversation_id) or generated_conversation(
            int(conversation_id[24:], 16), seed
        )
        agents = [p for p in conv.participants if p.purpose == "agent"]
        comms = [c for p in agents for c in p.communications]
        codes = [seed.wrapups[c.id].code for c in comms if c.id in seed.wrapups]
        ended = all(c.disconnected_time for p in conv.participants for c in p.communications)
        rows.append(
            {
                "conversation_id": conv.id,
                "source": "seed" if conv.id in seed.conversations else "generated",
                "media": ";".join(sorted({c.media for c in comms})) or "",
                "ended": "yes" if ended else "no",
                "agent_wrapup": ";".join(names.get(code, code) for code in codes),
            }
        )
    return rows
