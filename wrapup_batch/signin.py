"""Signing a person in with Genesys Cloud: the authorization-code grant with PKCE.

Used by the analysts' page (`wrapup-batch serve`). The page sends the browser to the org's
login host (`api.<region>` becomes `login.<region>`, as the SDK does; any other host, such as
the emulator, is its own login host) with an S256 challenge; the code that comes back is
exchanged through the SDK's `ApiClient.get_pkce_token`, and `GET /api/v2/users/me
?expand=authorization` says who signed in and what they may do. The user's token is used for
nothing else and kept nowhere: batches run with the server's own OAuth client.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from wrapup_batch.errors import ApiError, AuthError

#: The permission that lets a signed-in person apply (and revert) wrap-up codes.
APPLY_PERMISSION = "conversation:participant:wrapup"


@dataclass(frozen=True)
class SignedIn:
    """Who signed in: their Genesys user id and name, and their permissions."""

    id: str
    name: str
    permissions: frozenset[str]

    @property
    def can_apply(self) -> bool:
        return APPLY_PERMISSION in self.permissions or "*" in self.permissions


def login_host(api_host: str) -> str:
    """The login base URL of an API base URL (the SDK's rule: `//api.` -> `//login.`)."""
    return re.sub(r"//api\.", "//login.", api_host.rstrip("/"), count=1)


def new_verifier() -> str:
    """A PKCE code verifier: 64 URL-safe random characters (from `secrets`)."""
    return secrets.token_urlsafe(48)


def challenge_of(verifier: str) -> str:
    """The S256 code challenge of a verifier (base64url of its SHA-256, no padding)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def authorize_url(
    api_host: str, client_id: str, redirect_uri: str, verifier: str, state: str
) -> str:
    """Where to send the browser to sign in."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": challenge_of(verifier),
            "code_challenge_method": "S256",
            "state": state,
        }
    )
    return f"{login_host(api_host)}/oauth/authorize?{query}"


def exchange_code(
    api_host: str,
    client_id: str,
    verifier: str,
    code: str,
    redirect_uri: str,
    *,
    timeout: float = 30.0,
) -> SignedIn:
    """Trade the code for a token through the SDK, then read the user and their permissions.

    Raises AuthError (with a message for the person) when the code or the token is refused.
    """
    from wrapup_batch.genesys import Transport
    from wrapup_batch.sdk import ApiClient, ApiException, UsersApi

    api = ApiClient(host=api_host)
    api.set_http_client(Transport(timeout=timeout, throttle=None, pool_size=2))
    try:
        api.get_pkce_token(client_id, verifier, code, redirect_uri)
        me: Any = UsersApi(api).get_users_me(expand=["authorization"])
    except ApiException as exc:
        raise AuthError(
            f"Genesys Cloud refused the sign-in (HTTP {exc.status}); sign in again",
            status=int(exc.status or 0),
        ) from None
    except AuthError:
        raise
    except ApiError as err:
        raise AuthError(f"could not reach the login host: {err}; try again") from None
    except (KeyError, ValueError) as exc:
        raise AuthError(f"the login host answered unexpectedly ({exc}); sign in again") from None
    permissions = frozenset(me.authorization.permissions or ()) if me.authorization else frozenset()
    return SignedIn(str(me.id), str(me.name or me.email or me.id), permissions)
