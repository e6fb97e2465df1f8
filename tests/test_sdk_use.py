"""How the tool uses the official SDK (issue 6): imported only by commands that call the API,
its config-file watcher given nothing to watch, and conversations read as the API's plain JSON.

The import costs seconds and hundreds of MB (benchmarks/RESULTS.md), so `status`, `report` and a
rerun with nothing left to do must not pay it; the SDK's watcher of
`~/.genesyscloudpython/config` can end up watching the whole home directory and burning a core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_run_cli import ENV_NAMES, api_requests, write_csv

from wrapup_batch.api_settings import ApiSettings
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, generated_conversation_id
from wrapup_batch.genesys import GenesysClient

#: Runs the CLI, then says on its last stderr line whether the SDK got imported.
CLI_REPORTING_IMPORTS = textwrap.dedent(
    """
    import sys
    from wrapup_batch.cli import main
    try:
        main(sys.argv[1:], prog_name="wrapup-batch")
        code = 0
    except SystemExit as exc:
        code = exc.code
    sdk = "PureCloudPlatformClientV2" in sys.modules
    print("SDK imported" if sdk else "SDK not imported", file=sys.stderr)
    sys.exit(code)
    """
)


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0, generate=10)


def cli(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", CLI_REPORTING_IMPORTS, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stderr.strip().splitlines()[-1]


def test_only_commands_that_call_the_api_import_the_sdk(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    rows = [[generated_conversation_id(i), "Sales"] for i in range(5)]
    source = write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code"], rows)
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | emulator.env()
    ledger = ["--ledger", str(tmp_path / "ledger.db")]

    assert cli(tmp_path, env, "run", str(source), *ledger, "-q") == (0, "SDK imported")
    requests_before = api_requests(emulator.stats())

    # everything is applied: the rerun has nothing to send, and needs no SDK
    assert cli(tmp_path, env, "run", str(source), *ledger, "-q") == (0, "SDK not imported")
    assert api_requests(emulator.stats()) == requests_before
    assert cli(tmp_path, env, "status", *ledger) == (0, "SDK not imported")
    report = ["report", *ledger, "-o", str(tmp_path / "report.csv")]
    assert cli(tmp_path, env, *report) == (0, "SDK not imported")
    assert (tmp_path / "report.csv").read_text("utf-8-sig").count("applied") == 5
    # and a command that calls the API does import it
    assert cli(tmp_path, env, "codes") == (0, "SDK imported")


#: Imports what argv[1] names, forces what the SDK does when its observer thread wins the
#: start-up race, and prints the process's inotify watches and the SDK's live-reload flag.
WATCHES_AFTER_IMPORT = textwrap.dedent(
    """
    import glob, importlib, sys, time
    for name in sys.argv[1].split(","):
        importlib.import_module(name)
    config = sys.modules["PureCloudPlatformClientV2"].configuration
    def watches():
        count = 0
        for info in glob.glob("/proc/self/fdinfo/*"):
            try:
                count += open(info).read().count("inotify wd:")
            except OSError:
                pass
        return count
    deadline = time.monotonic() + 20  # a busy machine may start the SDK's thread late
    while config._observer is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the SDK creates its observer in a thread
    if config.live_reload_config:
        config._config_updater()
        while watches() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # and the observer adds its watches in its own thread
    print(watches(), config.live_reload_config)
    """
)


@pytest.mark.parametrize(
    ("imports", "expected"),
    [
        ("PureCloudPlatformClientV2", "watching"),  # the SDK alone: the problem is real
        ("wrapup_batch.genesys", "0 False"),
        ("PureCloudPlatformClientV2,wrapup_batch.genesys", "0 False"),  # SDK imported first
    ],
)
def test_the_sdk_watches_nothing_once_imported_through_the_tool(
    tmp_path: Path, imports: str, expected: str
) -> None:
    """With no ~/.genesyscloudpython the SDK watches the home directory, recursively."""
    home = tmp_path / "home"
    for folder in ("a/b", "c/d", "e"):
        (home / folder).mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-c", WATCHES_AFTER_IMPORT, imports],
        env=os.environ | {"HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    watches, live_reload = done.stdout.split()
    if expected == "watching":
        assert int(watches) >= 6 and live_reload == "True"  # home and its five folders
    else:
        assert f"{watches} {live_reload}" == expected


def test_a_conversation_is_read_as_the_apis_own_json(emulator: EmulatorHandle) -> None:
    """The client reads conversations without the SDK's model round trip: what the planner
    gets is exactly what the API sent, unknown fields and timestamps' text included."""
    conversation_id = generated_conversation_id(3)
    client = GenesysClient(
        ApiSettings(emulator.base_url, emulator.client_id, emulator.client_secret, 10.0)
    )
    client.authenticate()
    token = client.api_client.access_token
    request = urllib.request.Request(
        f"{emulator.base_url}/api/v2/conversations/{conversation_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        expected = json.load(response)

    assert client.get_conversation(conversation_id) == expected
    details = client.get_conversation_details([conversation_id])
    assert [d["conversationId"] for d in details] == [conversation_id]


@pytest.mark.parametrize("media", ["cobrowsesessions", "screenshares"])
def test_the_sdks_deprecated_wrapup_methods_are_called_without_their_warning_side_effects(
    emulator: EmulatorHandle, media: str
) -> None:
    """SDK 269 marks these two wrap-up methods deprecated; its wrapper warns on every call and
    resets the process's warning filters. The client calls the SDK's method underneath."""
    number = {"cobrowsesessions": 24, "screenshares": 25}[media]
    ids = (
        f"c00000{number}-0000-4000-8000-000000000000",
        f"a00000{number}-0000-4000-8000-000000000003",
        f"e00000{number}-0000-4000-8000-000000000031",
    )
    client = GenesysClient(
        ApiSettings(emulator.base_url, emulator.client_id, emulator.client_secret, 10.0)
    )
    client.authenticate()
    code = "9c000001-0000-4000-8000-000000000000"
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters_inside = list(warnings.filters)
        client.post_wrapup(media, *ids, code_id=code, end_time="2026-11-21T10:13:00.000Z")
        got = client.get_wrapup(media, *ids)
        assert warnings.filters == filters_inside
    assert [w for w in caught if issubclass(w.category, DeprecationWarning)] == []
    assert warnings.filters == filters_before
    assert got is not None and got["code"] == code
    assert datetime.fromisoformat(got["endTime"]) == datetime(2026, 11, 21, 10, 13, tzinfo=UTC)
