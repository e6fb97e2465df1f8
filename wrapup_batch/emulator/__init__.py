"""A Genesys Cloud Platform API emulator: a real HTTP server (aiohttp) on loopback with state.

It speaks the subset of the API that wrapup-batch uses, with the real paths, JSON shapes,
status codes and error bodies (`app.py` lists every UNCONFIRMED assumption):
`POST /oauth/token`, `GET /api/v2/routing/wrapupcodes`, `GET /api/v2/conversations/{id}`,
`GET|POST /api/v2/conversations/{media}/{cid}/participants/{pid}/communications/{commid}/wrapup`
for the eight media (calls, callbacks, emails, messages, socials, videos, cobrowsesessions,
screenshares), `GET /api/v2/conversations/{cid}/participants/{pid}/wrapupcodes`,
`GET /api/v2/analytics/conversations/details?id=a,b`, `GET /api/v2/organizations/me`,
`GET /api/v2/users/me`.
Control routes (never rate limited, not counted): `GET /__emulator__/stats[?detail=1]`,
`POST /__emulator__/reset` (optional JSON `{"wrapups": true, "rate_windows": true}`),
`GET|POST /__emulator__/config` (JSON of `EmulatorConfig` knobs, plus `storm_seconds`),
`GET /__emulator__/health`, `POST /__emulator__/user-tokens` (JSON `{"userId", "ttlSeconds"}`,
both optional → `{"access_token", ...}`: a user's token), `POST /__emulator__/revoke`
(JSON `{"token"}`).

Public API:

    EmulatorConfig(seed_path=None, generate=0, worker_clients=0, rate_limit=300,
                   rate_limit_scope="token", token_ttl=86400, latency_ms=0,
                   fault_rate=0.0, random_seed=0, host="127.0.0.1", port=0, ...live knobs)
    start_emulator(config: EmulatorConfig | None = None) -> ContextManager[EmulatorHandle]
    serve_forever(config: EmulatorConfig | None = None,
                  on_ready: Callable[[EmulatorHandle], None] | None = None) -> None
        blocks until Ctrl-C/SIGTERM; prints nothing (print `handle.env()` from on_ready)
    EmulatorHandle: .base_url .port .client_id .client_secret .config .state
                    .env() -> dict[str, str]   (GENESYSCLOUD_API_HOST/_OAUTHCLIENT_ID/_SECRET)
                    .client(client_id) -> OAuthClient   (other seeded clients' secrets)
                    .user_token(user_id=None, ttl=None) -> str   (a user's access token)
                    .revoke_token(token) -> bool
                    .stats(detail: bool = True) -> dict   .reset_stats()
                    .reset(*, wrapups: bool = False, rate_windows: bool = False)
        .state.assign(communication_id, code_id, notes=None) sets a wrap-up directly;
        .state.end_after_call_work(communication_id, end_time) ends pending after-call work;
        .state.wrapups {communication id: Wrapup} is the current wrap-up state.
    Live knobs on .config (see EmulatorConfig): rate_limit, rate_limit_scope ("token" or
        "client": one window per OAuth client), rate_window_s, token_ttl,
        latency_ms, latency_spike_rate, latency_spike_ms, fault_rate, random_seed, drop_rate,
        drop_after_rate, ghost_write_rate, start_storm(seconds, retry_after=0),
        failing_conversations, analytics_hidden, analytics_wrapup_lag_s, analytics_max_ids,
        max_page_size, refuse_wrapups (a code: every wrap-up POST answers 400 with it),
        queue_codes_only (a code outside the participant's queue list answers 400).
    Start-up only: org_id, org_name (the org `GET /api/v2/organizations/me` answers).
    generated_conversation_id(i: int) -> str    id of generated conversation i (0-based)
    worker_client_id(n), worker_client_secret(n)  the clients `worker_clients` adds (1-based)
    default_seed_path() -> Path                 the packaged seed (= sample_data's)
    load_seed(path: Path | None = None, generate: int = 0) -> Seed

Stats (`handle.stats()` or `GET /__emulator__/stats`): `requests` {"METHOD /route/template":
{"status": count}} (status "dropped" for dropped connections), `throttled` (429s),
`faults`, `dropped`, `ghost_writes`, `tokens_issued`, `posts_accepted`, `post_attempts`,
`communications_posted`, `wrapups_count`, `conversations`, `by_client` {client id:
{"admitted": n, "throttled": n}} (/api/v2 requests that passed or met the rate limit); with
detail also
`posts_per_communication` {communication id: wrap-up POSTs stored},
`post_attempts_per_communication` {communication id: every wrap-up POST received, whatever
its answer, 401/429/5xx included} and `wrapups` {communication id: current code id}.

Command line: `python -m wrapup_batch.emulator --port 8642 [--seed FILE] [--generate N]
[--rate-limit 300] [--rate-limit-scope token|client] [--worker-clients N]
[--token-ttl 86400] [--latency-ms 0] [--fault-rate 0] [--random-seed 0]
[--analytics-lag 0] [--org-id ID] [--org-name NAME] [--refuse-wrapups CODE]
[--queue-codes-only]`.
"""

from wrapup_batch.emulator.config import EmulatorConfig
from wrapup_batch.emulator.model import OAuthClient, Wrapup
from wrapup_batch.emulator.seed import (
    Seed,
    default_seed_path,
    generated_conversation_id,
    load_seed,
    worker_client_id,
    worker_client_secret,
)
from wrapup_batch.emulator.server import EmulatorHandle, serve_forever, start_emulator
from wrapup_batch.emulator.state import EmulatorState

__all__ = [
    "EmulatorConfig",
    "EmulatorHandle",
    "EmulatorState",
    "OAuthClient",
    "Seed",
    "Wrapup",
    "default_seed_path",
    "generated_conversation_id",
    "load_seed",
    "serve_forever",
    "start_emulator",
    "worker_client_id",
    "worker_client_secret",
]
