"""The official Genesys Cloud SDK (`PureCloudPlatformClientV2`), imported without its watcher.

Importing the SDK creates its `Configuration`, which starts a watchdog observer for
`~/.genesyscloudpython/config`; when that folder is missing it watches the nearest existing
parent, the home directory, recursively, if the observer's thread wins a start-up race.
Measured here: 17,527 inotify watches set up on the way, and a core burnt afterwards. The tool
never uses the SDK's config file (its settings come from the environment), so the SDK is given
an observer that watches nothing while it is imported (when something imported it earlier,
its watches are removed instead). Import the SDK through this module.
"""

from __future__ import annotations

from typing import Any

import watchdog.observers


class _InertObserver:
    """What the SDK's `Configuration` calls on its observer, doing nothing."""

    def start(self) -> None:
        pass

    def schedule(self, *args: Any, **kwargs: Any) -> None:
        pass

    def unschedule_all(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


_real_observer = watchdog.observers.Observer
watchdog.observers.Observer = _InertObserver  # type: ignore[assignment]
try:
    import PureCloudPlatformClientV2
finally:
    watchdog.observers.Observer = _real_observer

_config = PureCloudPlatformClientV2.configuration
_config.live_reload_config = False
if _config._observer is not None:  # imported before this module, with a real observer
    _config._observer.unschedule_all()

from PureCloudPlatformClientV2 import (  # noqa: E402
    ApiClient,
    ConversationsApi,
    PureCloudRegionHosts,
    RoutingApi,
    UsersApi,
    WrapupInput,
)
from PureCloudPlatformClientV2.abstract_http_client import AbstractHttpClient  # noqa: E402
from PureCloudPlatformClientV2.http_request_options import HttpRequestOptions  # noqa: E402
from PureCloudPlatformClientV2.rest import ApiException, RESTResponse  # noqa: E402

__all__ = [
    "AbstractHttpClient",
    "ApiClient",
    "ApiException",
    "ConversationsApi",
    "HttpRequestOptions",
    "PureCloudRegionHosts",
    "RESTResponse",
    "RoutingApi",
    "UsersApi",
    "WrapupInput",
]
