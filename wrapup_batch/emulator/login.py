"""The emulator's login side: the org login page and the authorization-code grant with PKCE.

What a user-facing app (the analysts' page, `wrapup-batch serve`) needs from the org:
- `GET /oauth/authorize?response_type=code&client_id=..&redirect_uri=..&code_challenge=..
  &code_challenge_method=S256&state=..`: a login form (fields `username` and `password`);
- `POST /oauth/authorize`: checks the password, then redirects (302) to
  `redirect_uri?code=..&state=..`;
- `POST /oauth/token` with `grant_type=authorization_code`, `code`, `code_verifier`,
  `client_id`, `redirect_uri` (the SDK's `get_pkce_token`): an access token for the user;
- `GET /api/v2/users/me?expand=authorization`: the user, with `authorization.permissions`.

The seed's `loginClients` are the code-authorization (PKCE) clients and `loginUsers` the
people who sign in, with their passwords and permissions (a user token carries the user's own
permissions on every API route).

UNCONFIRMED (Genesys's login side was not tried; the real page is an HTML app of its own):
- a redirect URI is accepted when it starts with one of the client's registered URIs (Genesys
  matches registered URIs exactly; the emulator's callers listen on random loopback ports);
- an unknown client or redirect URI answers 400 with a plain page (no redirect), a wrong
  password shows the form again with 401;
- only `code_challenge_method=S256` is accepted (plain → 400 on the page);
- a code lives 5 minutes and is used once; a wrong verifier, client or redirect URI answers
  400 `{"error": "invalid_grant"}`;
- `/api/v2/users/me` with a client-credentials token answers 400 `bad.request`
  "This request requires a user context. Client credentials cannot be used for requests to
  this resource.";
- a user token sees every division (as a user with org-wide roles).
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from wrapup_batch.emulator.model import OAuthClient

if TYPE_CHECKING:
    from wrapup_batch.emulator.state import EmulatorState

CODE_TTL_S = 300.0


@dataclass(frozen=True, slots=True)
class LoginClient:
    """A code-authorization client (public: PKCE, no secret)."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoginUser:
    id: str
    name: str
    email: str
    password: str
    permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class LoginSeed:
    clients: dict[str, LoginClient] = field(default_factory=dict)
    users: dict[str, LoginUser] = field(default_factory=dict)  # by lower-case email


@dataclass(slots=True)
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    user: LoginUser
    expires_at: float


@dataclass
class LoginState:
    """Codes waiting to be exchanged and the users behind live user tokens."""

    seed: LoginSeed
    codes: dict[str, _Grant] = field(default_factory=dict)
    token_users: dict[str, LoginUser] = field(default_factory=dict)


LOGIN_KEY = web.AppKey("login", LoginState)


def parse_login_seed(data: Mapping[str, Any]) -> LoginSeed:
    """The seed's `loginClients` and `loginUsers` (both optional)."""
    clients = {
        c["clientId"]: LoginClient(c["clientId"], c.get("name", ""), tuple(c["redirectUris"]))
        for c in data.get("loginClients", [])
    }
    users = {
        u["email"].lower(): LoginUser(
            id=u["id"],
            name=u["name"],
            email=u["email"],
            password=u["password"],
            permissions=frozenset(u.get("permissions", [])),
        )
        for u in data.get("loginUsers", [])
    }
    return LoginSeed(clients, users)


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (base64url, no padding)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


# ---------------------------------------------------------------------------------------------
# The login page


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:24rem;margin:4rem auto;color:#222}"
        "label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;"
        "box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1.2rem}"
        ".error{color:#a00}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html")


def _client_or_error(
    login: LoginState, params: Mapping[str, str]
) -> tuple[LoginClient, str] | web.Response:
    client = login.seed.clients.get(params.get("client_id", ""))
    if client is None:
        return _page("Sign-in error", "<p class='error'>Unknown client_id.</p>", 400)
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri or not any(redirect_uri.startswith(u) for u in client.redirect_uris):
        return _page("Sign-in error", "<p class='error'>redirect_uri is not registered.</p>", 400)
    if params.get("response_type") != "code":
        return _page("Sign-in error", "<p class='error'>response_type must be code.</p>", 400)
    if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
        return _page(
            "Sign-in error",
            "<p class='error'>code_challenge with code_challenge_method=S256 is required.</p>",
            400,
        )
    return client, redirect_uri


_CARRIED = ("response_type", "client_id", "redirect_uri", "code_challenge",
            "code_challenge_method", "state")  # fmt: skip


def _form(params: Mapping[str, str], client: LoginClient, error: str = "") -> str:
    hidden = "".join(
        f"<input type='hidden' name='{k}' value='{html.escape(params.get(k, ''), quote=True)}'>"
        for k in _CARRIED
    )
    problem = f"<p class='error' role='alert'>{html.escape(error)}</p>" if error else ""
    return (
        f"<p>Sign in to continue to <b>{html.escape(client.name or client.client_id)}</b>.</p>"
        f"{problem}<form method='post' action='/oauth/authorize'>{hidden}"
        "<label for='username'>Email</label>"
        "<input id='username' name='username' type='email' autocomplete='username' required>"
        "<label for='password'>Password</label>"
        "<input id='password' name='password' type='password' "
        "autocomplete='current-password' required>"
        "<button type='submit'>Sign in</button></form>"
    )


async def get_authorize(request: web.Request) -> web.StreamResponse:
    """`GET /oauth/authorize`: the login form."""
    login = request.app[LOGIN_KEY]
    params = dict(request.query)
    found = _client_or_error(login, params)
    if isinstance(found, web.Response):
        return found
    return _page("Genesys Cloud (emulator) sign-in", _form(params, found[0]))


async def post_authorize(request: web.Request) -> web.StreamResponse:
    """`POST /oauth/authorize`: check the password, then redirect with a code."""
    login = request.app[LOGIN_KEY]
    form = {k: str(v) for k, v in (await request.post()).items()}
    found = _client_or_error(login, form)
    if isinstance(found, web.Response):
        return found
    client, redirect_uri = found
    user = login.seed.users.get(form.get("username", "").strip().lower())
    if user is None or not secrets.compare_digest(
        user.password.encode(), form.get("password", "").encode()
    ):
        body = _form(form, client, "Invalid email or password.")
        return _page("Genesys Cloud (emulator) sign-in", body, 401)
    _expire_codes(login)
    code = secrets.token_urlsafe(24)
    login.codes[code] = _Grant(
        client.client_id,
        redirect_uri,
        form["code_challenge"],
        user,
        time.monotonic() + CODE_TTL_S,
    )
    query = {"code": code}
    if form.get("state"):
        query["state"] = form["state"]
    separator = "&" if "?" in redirect_uri else "?"
    return web.Response(
        status=302, headers={"Location": redirect_uri + separator + urlencode(query)}
    )


def _expire_codes(login: LoginState) -> None:
    now = time.monotonic()
    for code in [c for c, g in login.codes.items() if g.expires_at <= now]:
        del login.codes[code]


# ---------------------------------------------------------------------------------------------
# The token grant and the user


def _invalid_grant(description: str) -> web.Response:
    return web.json_response(
        {"error": "invalid_grant", "description": description, "error_description": description},
        status=400,
    )


def authorization_code_grant(
    login: LoginState, state: EmulatorState, form: Mapping[str, Any]
) -> web.Response:
    """`POST /oauth/token` with `grant_type=authorization_code` (PKCE, no client secret).

    The token is issued by the emulator's own issuer for a synthetic OAuthClient holding the
    user's permissions and every division, so it works on every API route as that user.
    """
    grant = login.codes.pop(str(form.get("code", "")), None)
    if grant is None or grant.expires_at <= time.monotonic():
        return _invalid_grant("authorization code is invalid or expired")
    if form.get("client_id") != grant.client_id or form.get("redirect_uri") != grant.redirect_uri:
        return _invalid_grant("client_id or redirect_uri does not match the authorization")
    verifier = str(form.get("code_verifier", ""))
    if not verifier or not secrets.compare_digest(s256(verifier), grant.challenge):
        return _invalid_grant("code_verifier does not match the code_challenge")
    as_client = OAuthClient(
        client_id=grant.client_id,
        client_secret="",
        name=grant.user.name,
        division_ids=frozenset(state.seed.divisions),
        permissions=grant.user.permissions,
    )
    token = state.issue_token(as_client)
    login.token_users[token] = grant.user
    return web.json_response(
        {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": state.config.token_ttl,
            "refresh_token": secrets.token_urlsafe(24),
        }
    )


def login_users_me(request: web.Request) -> web.Response | None:
    """`GET /api/v2/users/me[?expand=authorization]` for the token of a person who signed in
    on the login page; None for any other token (`app.get_users_me` answers those)."""
    login = request.app[LOGIN_KEY]
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    user = login.token_users.get(token)
    if user is None:
        return None
    body: dict[str, Any] = {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "username": user.email,
        "state": "active",
        "selfUri": f"/api/v2/users/{user.id}",
    }
    expand = {e for raw in request.query.getall("expand", []) for e in raw.split(",")}
    if "authorization" in expand:
        body["authorization"] = {
            "roles": [],
            "unusedRoles": [],
            "permissions": sorted(user.permissions),
            "permissionPolicies": [],
        }
    return web.json_response(body)


def add_login_routes(app: web.Application, seed: LoginSeed) -> None:
    """Serve the login side of `seed` (the seed's `loginClients` and `loginUsers`)."""
    app[LOGIN_KEY] = LoginState(seed)
    app.router.add_get("/oauth/authorize", get_authorize, allow_head=False)
    app.router.add_post("/oauth/authorize", post_authorize)
