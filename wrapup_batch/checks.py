"""`wrapup-batch check`: prove the setup before a big run, one ✓/✗/- line per check.

The credentials get a token (and which org they reach), the wrap-up codes can be read, a
conversation can be read (`--conversation`), and, with `--lookup-compare`, whether the
Conversations API and the analytics multi-get agree on some conversations. A missing
permission is named. `Checklist` writes each line through the `echo` it is given and works out
the exit code (0 all passed, 1 a check failed, 3 a credential or permission is missing).
Nothing here imports click.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from wrapup_batch.api_settings import (
    ENV_ACCESS_TOKEN,
    PERMISSIONS,
    ApiSettings,
    is_permission_error,
)
from wrapup_batch.codes import CodeCatalog
from wrapup_batch.errors import ApiError, AuthError, UsageError
from wrapup_batch.execution import client as new_command_client
from wrapup_batch.logs import REDACT
from wrapup_batch.org import OrgIdentity, identify
from wrapup_batch.planner import ConversationView, agent_participants
from wrapup_batch.planner import conversation_from_analytics as parse_analytics
from wrapup_batch.planner import conversation_from_json as parse_conversation
from wrapup_batch.sources import normalise_conversation_id

if TYPE_CHECKING:
    from wrapup_batch.genesys import GenesysClient

log = logging.getLogger("wrapup_batch")


class Checklist:
    """Writes one ✓/✗/- line per check through `echo` and works out the exit code."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.failed = 0
        self.passed = 0
        self.not_checked = 0
        self.permission_missing = False

    def ok(self, text: str) -> None:
        self.passed += 1
        self.echo(f"✓ {REDACT(text)}")
        log.info("check passed: %s", text, extra={"file_only": True})

    def bad(self, text: str, *, permission: bool = False) -> None:
        self.echo(f"✗ {REDACT(text)}")
        log.warning("check failed: %s", text, extra={"file_only": True})
        self.failed += 1
        self.permission_missing = self.permission_missing or permission

    def skipped(self, text: str, *, not_checked: bool = True) -> None:
        self.not_checked += not_checked
        self.echo(f"- {text}")

    @property
    def exit_code(self) -> int:
        return 3 if self.permission_missing else 1 if self.failed else 0

    def finish(self) -> int:
        """The tally line; returns the exit code."""
        not_checked = f", {self.not_checked} not checked (the lines marked -)"
        tally = f"{self.passed} passed" + (not_checked if self.not_checked else "")
        if self.failed:
            self.echo(f"{self.failed} check(s) failed, {tally}")
            log.warning("%d check(s) failed", self.failed, extra={"file_only": True})
        elif self.not_checked:
            self.echo(f"{self.passed} check(s) passed{not_checked}")
        else:
            self.echo(f"every check passed ({self.passed})")
        return self.exit_code


def conversation_ids(values: Iterable[str], option: str) -> list[str]:
    """Conversation ids given to `option` (repeated, or comma-separated), normalised, each
    once; UsageError naming the option for one that is not a UUID."""
    ids: list[str] = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            normal = normalise_conversation_id(part.strip())
            if normal is None:
                raise UsageError(f"{option} {part.strip()!r} is not a conversation id (a UUID)")
            if normal not in ids:
                ids.append(normal)
    return ids


def run_checks(
    checks: Checklist,
    api: ApiSettings,
    rate_limit: float,
    *,
    conversation: str | None = None,
    compare: list[str] | None = None,
) -> None:
    """Every check, in order, each a line of `checks`; the credentials first (when they are
    refused, nothing else is tried)."""
    api_client = new_command_client(api, rate_limit)
    try:
        api_client.authenticate()
        org = identify(api_client, "")
    except AuthError as err:
        checks.bad(f"credentials: {err}", permission=True)
        return
    _check_credentials(checks, api, org)
    catalog = _check_codes(checks, api_client)
    if conversation:
        _check_conversation(checks, api_client, conversation, catalog)
    else:
        checks.skipped(
            "conversation: not checked; give --conversation ID to prove "
            f"{PERMISSIONS['conversation']}"
        )
    checks.skipped(
        f"{PERMISSIONS['wrapup']}: not checked (only a write proves it); a run without it "
        "stops at its first wrap-up POST with exit 3"
    )
    if compare:
        _check_lookup_compare(checks, api_client, compare, catalog)


def _check_credentials(checks: Checklist, api: ApiSettings, org: OrgIdentity) -> None:
    if api.uses_user_token:
        checks.ok(
            f"credentials: the access token in {ENV_ACCESS_TOKEN} is accepted by {api.host} "
            f"({org.principal}), for {org.describe()}; it is used instead of an OAuth client"
        )
    else:
        checks.ok(
            f"credentials: OAuth client {api.client_id!r} got a token from {api.host}, "
            f"for {org.describe()}"
        )


def _check_codes(checks: Checklist, api_client: GenesysClient) -> CodeCatalog | None:
    try:
        catalog = CodeCatalog(api_client.list_wrapup_codes())
    except ApiError as err:
        if err.status == 403:
            checks.bad(
                f"wrap-up codes: missing permission {PERMISSIONS['codes']} (403: {err.message})",
                permission=True,
            )
        else:
            checks.bad(f"wrap-up codes: cannot be read: {err}")
        return None
    checks.ok(f"wrap-up codes: {len(catalog)} readable ({PERMISSIONS['codes']})")
    return catalog


def _read_conversation(
    checks: Checklist, api_client: GenesysClient, conversation_id: str, label: str
) -> ConversationView | None:
    """The conversation through the Conversations API, or None after a ✗ line saying why."""
    try:
        return parse_conversation(api_client.get_conversation(conversation_id))
    except ApiError as err:
        needed = PERMISSIONS["conversation"]
        if is_permission_error(err):
            checks.bad(
                f"{label}: missing permission {needed} (403: {err.message})", permission=True
            )
        elif err.status == 403:
            checks.bad(
                f"{label}: forbidden (403: {err.message}); the client's role does not grant "
                f"{needed} in this conversation's division",
                permission=True,
            )
        elif err.status == 404:
            checks.bad(f"{label}: not found (404); check the conversation id and the region")
        else:
            checks.bad(f"{label}: cannot be read: {err}")
        return None


def _code_text(code_id: str | None, catalog: CodeCatalog | None) -> str:
    if code_id is None:
        return "none"
    name = catalog.name_of(code_id) if catalog is not None else code_id
    return f"{name!r}" if name == code_id else f"{name!r} ({code_id})"


def _agent_communications(view: ConversationView) -> dict[str, tuple[str, str, str | None]]:
    """Agent communication id -> (participant id, media, wrap-up code id)."""
    return {
        comm.id: (participant.id, comm.media, comm.wrapup_code)
        for participant in agent_participants(view)
        for comm in participant.communications
    }


def _check_conversation(
    checks: Checklist,
    api_client: GenesysClient,
    conversation_id: str,
    catalog: CodeCatalog | None,
) -> None:
    label = f"conversation {conversation_id}"
    view = _read_conversation(checks, api_client, conversation_id, label)
    if view is None:
        return
    comms = _agent_communications(view)
    described = ", ".join(
        f"{cid} ({media}, wrap-up {_code_text(code, catalog)})"
        for cid, (_, media, code) in comms.items()
    )
    state = "ended" if view.ended else "not ended yet"
    agents = f"agent communication(s): {described}" if comms else "no agent communication"
    checks.ok(f"{label}: readable ({PERMISSIONS['conversation']}); {state}; {agents}")


def _check_lookup_compare(
    checks: Checklist, api_client: GenesysClient, ids: list[str], catalog: CodeCatalog | None
) -> None:
    analytics: dict[str, ConversationView] = {}
    try:
        for start in range(0, len(ids), 100):
            for raw in api_client.get_conversation_details(ids[start : start + 100]):
                parsed = parse_analytics(raw)
                analytics[parsed.id.lower()] = parsed
    except ApiError as err:
        if err.status == 403:
            checks.bad(
                f"analytics: missing permission {PERMISSIONS['analytics']} (403: "
                f"{err.message}); --lookup analytics needs it",
                permission=True,
            )
        else:
            checks.bad(f"analytics: cannot be read: {err}")
        return
    checks.ok(
        f"analytics: {len(analytics)} of {len(ids)} conversation(s) found "
        f"({PERMISSIONS['analytics']})"
    )
    disagree = 0
    for conversation_id in ids:
        label = f"lookup-compare {conversation_id}"
        view = _read_conversation(checks, api_client, conversation_id, label)
        if view is None:
            continue
        other = analytics.get(conversation_id)
        if other is None:
            checks.bad(f"{label}: analytics does not know this conversation (yet)")
            disagree += 1
            continue
        if other.incomplete:
            checks.ok(
                f"{label}: analytics shows an agent session of a media it cannot map to a "
                "wrap-up path, or after-call work still open: --lookup analytics reads this "
                "conversation through the Conversations API"
            )
            continue
        problems = _differences(view, other, catalog)
        if problems:
            checks.bad(f"{label}: the two APIs disagree: " + "; ".join(problems))
            disagree += 1
        else:
            comms = _agent_communications(view)
            media = sorted({m for _, m, _ in comms.values()})
            checks.ok(
                f"{label}: the two APIs agree on {len(comms)} agent communication(s) "
                f"({', '.join(media) or 'none'}): ids, media and wrap-up codes"
            )
    if disagree:
        checks.skipped(
            f"{disagree} of {len(ids)} conversation(s) differ: keep --lookup conversations "
            "(the default) on this org",
            not_checked=False,
        )


def _differences(
    api_view: ConversationView, analytics_view: ConversationView, catalog: CodeCatalog | None
) -> list[str]:
    ours = _agent_communications(api_view)
    theirs = _agent_communications(analytics_view)
    problems = []
    only_api = [f"{c} ({ours[c][1]})" for c in ours if c not in theirs]
    only_analytics = [f"{c} ({theirs[c][1]})" for c in theirs if c not in ours]
    if only_api:
        problems.append("only in the Conversations API: " + ", ".join(only_api))
    if only_analytics:
        problems.append("only in analytics: " + ", ".join(only_analytics))
    for cid in (c for c in ours if c in theirs):
        (part_a, media_a, code_a), (part_b, media_b, code_b) = ours[cid], theirs[cid]
        if part_a != part_b:
            problems.append(f"{cid}: participant {part_a} vs {part_b} in analytics")
        if media_a != media_b:
            problems.append(f"{cid}: media {media_a} vs {media_b} in analytics")
        if code_a != code_b:
            problems.append(
                f"{cid}: wrap-up {_code_text(code_a, catalog)} vs "
                f"{_code_text(code_b, catalog)} in analytics"
            )
    return problems
