"""Where and as whom to reach Genesys Cloud: settings from the environment, checked.

Kept apart from `genesys` (the SDK client) because importing the SDK takes seconds and
hundreds of MB: commands that never call the API (`status`, `report`, a rerun with nothing
left to do) read their settings from here and never import it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from wrapup_batch.errors import ApiError, UsageError

ENV_CLIENT_ID = "GENESYSCLOUD_OAUTHCLIENT_ID"
ENV_CLIENT_SECRET = "GENESYSCLOUD_OAUTHCLIENT_SECRET"
ENV_REGION = "GENESYSCLOUD_REGION"
ENV_API_HOST = "GENESYSCLOUD_API_HOST"
#: A token from a user's own login (the name the Terraform provider and `gc` use): when set,
#: it is used instead of the OAuth client's credentials.
ENV_ACCESS_TOKEN = "GENESYSCLOUD_ACCESS_TOKEN"

PERMISSIONS = {
    "codes": "routing:wrapupCode:view",
    "conversation": "conversation:communication:view",
    "wrapup": "conversation:participant:wrapup",
    "analytics": "analytics:conversationDetail:view",
}


# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiSettings:
    """Where and as whom to connect. The secret and the token never appear in `repr()`.

    With `access_token` (a user's token, `GENESYSCLOUD_ACCESS_TOKEN`) the client credentials
    are not used: every request carries that token, and nothing can renew it.
    """

    host: str
    client_id: str
    client_secret: str = field(repr=False)
    timeout: float = 30.0
    access_token: str | None = field(default=None, repr=False)

    @property
    def uses_user_token(self) -> bool:
        return bool(self.access_token)

    @property
    def principal(self) -> str:
        """As whom requests are made, without any secret: the client id, or a user's token."""
        if self.uses_user_token:
            return f"a user's access token ({ENV_ACCESS_TOKEN})"
        return f"OAuth client {self.client_id}"


def resolve_host(region: str | None, api_host: str | None) -> str:
    """The API base URL from `GENESYSCLOUD_API_HOST` (wins) or `GENESYSCLOUD_REGION`."""
    if api_host:
        return _check_host(api_host.rstrip("/"))
    if not region:
        region = "us-east-1"
    # The SDK's own table of regions, imported only when needed (see the module's docstring).
    from wrapup_batch.sdk import PureCloudRegionHosts

    key = region.strip().lower().replace("-", "_")
    try:
        return PureCloudRegionHosts[key].get_api_host()  # type: ignore[no-any-return]
    except KeyError:
        known = ", ".join(sorted(h.name.replace("_", "-") for h in PureCloudRegionHosts))
        raise UsageError(
            f"{ENV_REGION}={region!r} is not a Genesys Cloud region; use one of: {known}, "
            f"or set {ENV_API_HOST} to the API's base URL"
        ) from None


def _check_host(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"{ENV_API_HOST}={url!r} is not a base URL like https://api.mypurecloud.com"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise UsageError(
            f"{ENV_API_HOST}={url!r} uses plain http to a host that is not this machine; "
            "Genesys Cloud is only reached over https (plain http is for the local emulator)"
        )
    return url


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def settings_from_env(env: Mapping[str, str], *, timeout: float = 30.0) -> ApiSettings:
    """Read the ecosystem's environment variables; name the missing ones.

    `GENESYSCLOUD_ACCESS_TOKEN`, when set, wins over the client credentials (which are then
    not needed).
    """
    token = (env.get(ENV_ACCESS_TOKEN) or "").strip()
    if token:
        return ApiSettings(
            host=resolve_host(env.get(ENV_REGION), env.get(ENV_API_HOST)),
            client_id=env.get(ENV_CLIENT_ID) or "",
            client_secret="",
            timeout=timeout,
            access_token=token,
        )
    missing = [name for name in (ENV_CLIENT_ID, ENV_CLIENT_SECRET) if not env.get(name)]
    if missing:
        raise UsageError(
            f"set {' and '.join(missing)} to an OAuth client-credentials client of your org, "
            f"or {ENV_ACCESS_TOKEN} to a token from a user's login "
            "(or use --sandbox to run against the built-in emulator)"
        )
    host = resolve_host(env.get(ENV_REGION), env.get(ENV_API_HOST))
    return ApiSettings(
        host=host,
        client_id=env[ENV_CLIENT_ID],
        client_secret=env[ENV_CLIENT_SECRET],
        timeout=timeout,
    )


def is_permission_error(err: ApiError) -> bool:
    """A 403 that says the client lacks a permission (as opposed to one conversation's division)."""
    return err.status == 403 and bool(err.code) and "permission" in (err.code or "")
