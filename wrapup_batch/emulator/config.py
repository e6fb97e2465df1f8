"""The emulator's configuration: start-up options and the knobs that can change while it runs.

One `EmulatorConfig` object is shared by the running server and whoever started it: the server
reads the knobs on every request, so a test may change `handle.config.fault_rate` (in-process)
or `POST /__emulator__/config` a JSON object of knobs (out of process) and the next request
sees the change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# Options that only take effect when the server starts: not changeable at run time.
STARTUP_ONLY = frozenset(
    {"seed_path", "generate", "worker_clients", "host", "port", "org_id", "org_name"}
)
#: What `rate_limit_scope` may be: one window per token (the default) or per OAuth client.
RATE_LIMIT_SCOPES = ("token", "client")

#: The org the emulator is (`GET /api/v2/organizations/me`), unless told otherwise.
DEFAULT_ORG_ID = "0e000000-0000-4000-8000-000000000000"
DEFAULT_ORG_NAME = "wrapup-batch emulator"


@dataclass
class EmulatorConfig:
    """Start-up options and live knobs of one emulator.

    Start-up only: `seed_path` (None: the seed packaged with wrapup_batch, identical to
    `sample_data/emulator_seed.json`), `generate` (N synthetic ended conversations), `host`,
    `port` (0: a free port), `org_id` and `org_name` (the org `GET /api/v2/organizations/me`
    answers: two emulators with different ids are two orgs), `worker_clients` (N more OAuth
    clients `wrapup-batch-worker-1` ... `-N`, secrets `worker-1-secret` ..., each a copy of the
    seed's first client: for several workers, each with its own client).

    Live knobs:
    - `rate_limit`: admitted /api/v2 requests per token per `rate_window_s` (0: unlimited).
    - `rate_limit_scope`: "token" (default: each token has its own window) or "client" (every
      token of one OAuth client shares one window, so that several processes on one client
      meet one limit).
    - `token_ttl`: lifetime in seconds of the tokens issued from now on.
    - `latency_ms`: added to every /api/v2 request (asyncio.sleep: the server stays responsive).
    - `fault_rate`: probability of answering 503/502/504 instead of handling the request.
    - `random_seed`: seed of the one random.Random behind every fault decision; changing it
      re-seeds the generator, so a sequence of requests meets the same faults again.
    - `rate_window_s`: the rolling window of the rate limit (60 s like Genesys; tests shorten it).
    - `latency_spike_rate`, `latency_spike_ms`: extra latency on that fraction of requests.
    - `drop_rate`: probability of closing the connection without any response, before the
      request is handled.
    - `drop_after_rate`: probability of handling the request (a wrap-up POST is stored) and then
      closing the connection without the response: dropped mid-response.
    - `ghost_write_rate`: probability that an accepted wrap-up POST is stored but answered 504
      (the write happened, the client cannot know).
    - `storm_until` (a `time.monotonic()` deadline) and `storm_retry_after` (0: the time left):
      until then every /api/v2 request is answered 429. `start_storm(seconds)` sets both.
    - `failing_conversations`: conversation ids whose wrap-up POST always answers 500.
    - `analytics_hidden`: conversation ids the analytics API does not know yet.
    - `analytics_wrapup_lag_s`: a wrap-up shows in analytics only this long after it was set.
    - `analytics_max_ids`: ids allowed in one analytics multi-get (more: 400).
    - `max_page_size`: larger wrap-up code `pageSize` values are clamped to it.
    - `refuse_wrapups`: a Genesys error code (empty: off); every wrap-up POST answers 400 with
      it, as an org that does not let these credentials set wrap-ups might.
    - `queue_codes_only`: a wrap-up POST whose code is not in the participant's queue list
      (`GET /api/v2/conversations/{id}/participants/{pid}/wrapupcodes`) answers 400.
    """

    seed_path: Path | None = None
    generate: int = 0
    worker_clients: int = 0
    rate_limit: int = 300
    rate_limit_scope: str = "token"
    token_ttl: int = 86400
    latency_ms: int = 0
    fault_rate: float = 0.0
    random_seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    rate_window_s: float = 60.0
    latency_spike_rate: float = 0.0
    latency_spike_ms: int = 0
    drop_rate: float = 0.0
    drop_after_rate: float = 0.0
    ghost_write_rate: float = 0.0
    storm_until: float = 0.0
    storm_retry_after: int = 0
    failing_conversations: set[str] = field(default_factory=set)
    analytics_hidden: set[str] = field(default_factory=set)
    analytics_wrapup_lag_s: float = 0.0
    analytics_max_ids: int = 100
    max_page_size: int = 100
    org_id: str = DEFAULT_ORG_ID
    org_name: str = DEFAULT_ORG_NAME
    refuse_wrapups: str = ""
    queue_codes_only: bool = False

    def start_storm(self, seconds: float, retry_after: int = 0) -> None:
        """Answer every /api/v2 request with 429 for `seconds` from now."""
        self.storm_retry_after = retry_after
        self.storm_until = time.monotonic() + seconds

    def update(self, knobs: Mapping[str, Any]) -> None:
        """Set live knobs from a JSON-like mapping; raise ValueError on a bad name or value.

        Besides the field names, `storm_seconds` (float) starts a storm of that length.
        Nothing is changed when any knob is invalid.
        """
        staged: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(self)}
        for name, value in knobs.items():
            if name == "storm_seconds":
                staged["storm_until"] = time.monotonic() + _as_float(name, value)
            elif name in STARTUP_ONLY:
                raise ValueError(f"{name} can only be set when the emulator starts")
            elif name not in types:
                raise ValueError(f"unknown emulator knob {name!r}")
            else:
                staged[name] = _coerce(name, str(types[name]), value)
        for name, value in staged.items():
            setattr(self, name, value)

    def knobs(self) -> dict[str, Any]:
        """The current knobs as JSON-ready data (`storm_seconds_left` instead of the deadline)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, set):
                value = sorted(value)
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        del out["storm_until"]
        out["storm_seconds_left"] = max(0.0, self.storm_until - time.monotonic())
        return out


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    result = float(value)
    if not math.isfinite(result) or result < 0:
        raise ValueError(f"{name} must be a finite number >= 0")
    return result


def _coerce(name: str, type_name: str, value: Any) -> Any:
    if name == "rate_limit_scope":
        if value not in RATE_LIMIT_SCOPES:
            raise ValueError(f"{name} must be one of {', '.join(RATE_LIMIT_SCOPES)}")
        return value
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0")
        return value
    if type_name == "float":
        result = _as_float(name, value)
        if name.endswith("_rate") and result > 1:
            raise ValueError(f"{name} must be between 0 and 1")
        return result
    if type_name == "str":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    if type_name == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if type_name == "set[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of strings")
        return {v.lower() for v in value}
    raise ValueError(f"{name} cannot be set at run time")
