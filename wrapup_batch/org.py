"""Which org a ledger belongs to.

An `applied` row is true of one org only: a ledger that recorded a sandbox run (or another
org's) would make a run against a real org send nothing and report every row fine. So the
first run that reaches an org records it in the ledger (the org's id from
`GET /api/v2/organizations/me`, its name, the API host, and the OAuth client or user), and a
run that reaches another org is refused (`LedgerOrgError`, exit 2) before anything is sent.

A run through the same API host and OAuth client as the ledger records needs no request to
know its org (a client belongs to one org); a user's token, another client or another host
asks Genesys once per run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wrapup_batch.api_settings import ApiSettings
from wrapup_batch.errors import AuthError, LedgerOrgError, RequestRejectedError

if TYPE_CHECKING:  # the runner's client: this module never imports the SDK
    from wrapup_batch.genesys import GenesysClient

#: The ledger's `meta` keys that hold the org it belongs to.
META_KEYS = ("org_id", "org_name", "org_api_host", "org_principal", "org_since")


@dataclass(frozen=True)
class OrgIdentity:
    """An org, and how it was reached: the API host and the OAuth client or user."""

    org_id: str
    org_name: str
    api_host: str
    principal: str
    since: str = ""  # when the ledger was bound to it (ISO-8601), for a recorded one

    def describe(self) -> str:
        name = f"{self.org_name!r} " if self.org_name else ""
        return f"org {name}(id {self.org_id})"

    def reached(self) -> str:
        return f"through {self.api_host} as {self.principal}"

    def to_meta(self) -> dict[str, str]:
        return dict(
            zip(
                META_KEYS,
                (self.org_id, self.org_name, self.api_host, self.principal, self.since),
                strict=True,
            )
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "id": self.org_id,
            "name": self.org_name,
            "api_host": self.api_host,
            "principal": self.principal,
            "since": self.since,
        }

    @classmethod
    def from_meta(cls, values: Mapping[str, str]) -> OrgIdentity | None:
        if not values.get("org_id"):
            return None
        return cls(*(values.get(key, "") for key in META_KEYS))


def same_target(recorded: OrgIdentity, api: ApiSettings) -> bool:
    """Whether `api` reaches the recorded org for certain without asking: the same host and
    the same OAuth client (a user's token always asks: it names no user by itself)."""
    return (
        not api.uses_user_token
        and recorded.api_host == api.host
        and recorded.principal == api.principal
    )


def identify(client: GenesysClient, stamp: str) -> OrgIdentity:
    """The org the client's credentials reach (`GET /api/v2/organizations/me`), and, for a
    user's token, which user (`GET /api/v2/users/me`). The client is authenticated."""
    settings = client.settings
    try:
        org = client.get_organization()
        principal = settings.principal
        if settings.uses_user_token:
            principal = _user(client.get_current_user())
    except RequestRejectedError as err:
        if err.status in (401, 403):
            raise AuthError(
                f"cannot read which org these credentials reach ({err.method} {err.path} "
                f"answered {err.status}: {err.message}); the ledger records the org it writes "
                "to, so a run needs it",
                status=err.status,
                code=err.code,
                context_id=err.context_id,
            ) from None
        raise
    org_id = str(org.get("id") or "")
    if not org_id:
        raise AuthError("GET /api/v2/organizations/me answered without an org id")
    return OrgIdentity(org_id, str(org.get("name") or ""), settings.host, principal, stamp)


def _user(data: Mapping[str, Any]) -> str:
    name = str(data.get("name") or data.get("username") or "").strip()
    user_id = str(data.get("id") or "")
    return f"user {name} ({user_id})" if name else f"user {user_id}"


def refuse_other_org(ledger: str, recorded: OrgIdentity, found: OrgIdentity) -> LedgerOrgError:
    """The error for a run that reaches another org than the one its ledger belongs to."""
    return LedgerOrgError(
        f"ledger {ledger} belongs to {recorded.describe()}, first used {recorded.reached()}"
        f"{' on ' + recorded.since if recorded.since else ''}; this run reaches "
        f"{found.describe()} {found.reached()}. The ledger's applied rows are true of the "
        "first org only, so nothing was sent and the ledger is unchanged: give this org a "
        "ledger of its own with --ledger (or `ledger =` in a job file), e.g. --ledger "
        f"{_suggested_name(found)}"
    )


def _suggested_name(found: OrgIdentity) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in found.org_name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return f"{slug or found.org_id[:8]}-ledger.db"
