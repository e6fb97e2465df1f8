"""`wrapup-batch serve` as a real process: killed in the middle of a run and started again,
the run shows as interrupted with Resume, and resuming it writes nothing twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, generated_conversation_id

ROWS = 120


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(generate=ROWS, rate_limit=0)


@contextmanager
def page(
    emulator: EmulatorHandle, tmp_path: Path, rate_limit: str, *extra: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`wrapup-batch serve --no-auth` on a free loopback port, with the emulator's client."""
    env = {**os.environ, **emulator.env()}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from wrapup_batch.cli import main; main()",
            "serve",
            *("--no-auth", "--port", "0", "--ledger", str(tmp_path / "ledger.db")),
            *("--rate-limit", rate_limit, "--concurrency", "2", *extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)", first)
        assert found, first + (process.stdout.read() if process.poll() is not None else "")
        url = found.group(1)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the page did not start"
            time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _csrf(client: httpx.Client) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)
    assert found
    return found.group(1)


def _state(client: httpx.Client, run_id: int) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
    return data


def test_a_run_killed_with_the_server_is_interrupted_and_resumes_without_rewrites(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    csv_path = tmp_path / "many.csv"
    lines = ["conversation_id,wrapup_code"]
    lines += [f"{generated_conversation_id(i)},Sales" for i in range(ROWS)]
    csv_path.write_text("\n".join(lines) + "\n")
    # slow: 240 requests a minute is 2 rows a second, so the kill lands mid-run
    with page(emulator, tmp_path, "240") as (url, process):
        client = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
        with csv_path.open("rb") as handle:
            uploaded = client.post(
                "/uploads", data={"csrf_token": _csrf(client)}, files={"file": handle}
            )
        assert uploaded.status_code == 303
        token = uploaded.headers["location"].split("/")[2]
        client.get(f"/runs/{token}/preview")
        applied = client.post(
            f"/runs/{token}/apply",
            data={"csrf_token": _csrf(client), "on_existing": "skip", "participant": "last-agent"},
        )
        assert applied.status_code == 303, applied.text
        assert applied.headers["location"] == "/runs/1"
        deadline = time.monotonic() + 60
        while _state(client, 1)["counts"].get("applied", 0) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert _state(client, 1)["state"] == "applying"
        process.kill()  # SIGKILL: no clean-up at all
        process.wait()
    posted_before = emulator.stats()["posts_per_communication"]
    assert 0 < len(posted_before) < ROWS

    with page(emulator, tmp_path, "6000") as (url, _process):
        client = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
        state = _state(client, 1)
        assert state["state"] == "stopped" and state["interrupted"] is True
        run_page = client.get("/runs/1").text
        assert "interrupted" in run_page and 'id="resume-button"' in run_page
        assert "interrupted" in client.get("/runs").text
        resumed = client.post("/runs/1/resume", data={"csrf_token": _csrf(client)})
        assert resumed.status_code == 303
        assert resumed.headers["location"] == "/runs/2"
        deadline = time.monotonic() + 60
        while (state := _state(client, 2))["state"] == "applying":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert state["state"] == "done"
        assert state["counts"].get("applied", 0) + state["counts"].get("unchanged", 0) == ROWS
    posts = emulator.stats()["posts_per_communication"]
    assert len(posts) == ROWS
    assert set(posts.values()) == {1}  # nothing written twice
