"""A large upload's preview: computed in a child process while the page says how far it has
read; the same verdicts as a small upload's preview computed within the request; a file's
problem found in the background shown with the CLI's message; a preview interrupted by a
stopped or killed page computed again, never "reading" forever.

The size above which a preview goes to the background is the workspace's
`preview_inline_bytes`; these tests set it to 0 so that their files stay small.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import Workbook  # type: ignore[import-untyped]
from test_web_server import page as serve_page
from web_helpers import Web, apply, csrf, make_web, sign_in, token_of, upload

from wrapup_batch.app import PREVIEW_INLINE_BYTES
from wrapup_batch.emulator import EmulatorHandle, generated_conversation_id
from wrapup_batch.preview_job import PROGRESS_FILE, RESULT_FILE

ROWS = 3000


def _write(path: Path, rows: int, *, bad_row: int | None = None) -> Path:
    """`rows` data rows: every 100th an invalid id, every 250th a repeat of the row before
    (a duplicate), the rest generated conversations with one of two codes (one unknown)."""
    lines = ["conversation_id,wrapup_code"]
    for i in range(1, rows + 1):
        if bad_row is not None and i == bad_row:
            lines.append(f"{generated_conversation_id(i)},Sales,an extra value")
        elif i % 100 == 0:
            lines.append(f"not-a-uuid-{i},Sales")
        elif i % 250 == 5 and i > 5:
            lines.append(lines[-1])
        else:
            lines.append(f"{generated_conversation_id(i)},{'Sales' if i % 7 else 'Saless'}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def background(emulator: EmulatorHandle, tmp_path: Path) -> Iterator[Web]:
    """The page with every upload previewed in the background."""
    page = make_web(emulator, tmp_path)
    page.workspace.preview_inline_bytes = 0
    try:
        yield page
    finally:
        page.client.close()
        page.workspace.close()


def _follow(web: Web, token: str, timeout: float = 120) -> list[str]:
    """Poll the progress block as the page's htmx does, until it asks for a reload; the
    blocks seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        block = web.client.get(f"/runs/{token}/preview/progress")
        assert block.status_code == 200
        if block.headers.get("HX-Refresh") == "true":
            assert block.text == ""
            return seen
        assert 'id="reading"' in block.text
        seen.append(block.text)
        assert time.monotonic() < deadline, seen[-1]
        time.sleep(0.1)


def _comparable(preview: dict[str, Any]) -> dict[str, Any]:
    """A preview without what differs from one computation to the next (its time, and the
    sample, drawn at random)."""
    return {k: v for k, v in preview.items() if k not in ("seconds", "sample")}


def test_a_large_upload_redirects_at_once_and_the_page_follows_its_preview(
    background: Web, emulator: EmulatorHandle, tmp_path: Path
) -> None:
    web = background
    sign_in(web)
    path = _write(tmp_path / "big.csv", ROWS)
    preview_url = upload(web, path)
    token = token_of(preview_url)
    upload_dir = web.workspace.data_dir / "uploads" / token
    assert not (upload_dir / RESULT_FILE).exists()  # the redirect came before any preview
    first = web.client.get(preview_url)
    assert first.status_code == 200
    assert 'id="reading"' in first.text
    assert 'hx-get="/runs/' + token + '/preview/progress"' in first.text
    assert "rows read" not in first.text and "apply-form" not in first.text
    state = web.client.get(f"/api/runs/{token}").json()
    assert state["state"] == "preview" and state["preview"] == "reading"
    # applying before the preview is done is refused with a clear message
    early = apply(web, token, confirm_count=str(ROWS))
    assert early.status_code == 400
    assert "finish the preview first" in early.text
    seen = _follow(web, token)
    assert all(re.search(r"Read(ing)? [\d,]+ rows|Reading the file", s) for s in seen)
    done = web.client.get(preview_url).text
    assert re.search(r'<span class="n">3,000</span><span class="l">rows read', done)
    assert 'id="reading"' not in done and "apply-form" in done
    state = web.client.get(f"/api/runs/{token}").json()
    assert state["preview"] == "ready" and state["total"] == ROWS
    assert not (upload_dir / PROGRESS_FILE).exists()
    assert not [p for p in upload_dir.iterdir() if p.is_dir()]  # the scratch ledger is gone
    background_preview = json.loads((upload_dir / RESULT_FILE).read_text("utf-8"))
    assert background_preview["counts"]["invalid"] == ROWS // 100
    assert background_preview["counts"]["duplicate"] > 0
    assert background_preview["counts"]["unknown_code"] > 0
    # the same verdicts as the preview computed within the request for a small upload
    (tmp_path / "inline").mkdir()
    inline = make_web(emulator, tmp_path / "inline")
    try:
        sign_in(inline)
        inline_token = token_of(upload(inline, path))
        inline_preview = inline.client.get(f"/runs/{inline_token}/preview")
        assert "rows read" in inline_preview.text  # complete on its first load
        kept = inline.workspace.data_dir / "uploads" / inline_token / RESULT_FILE
        assert _comparable(json.loads(kept.read_text("utf-8"))) == _comparable(background_preview)
    finally:
        inline.client.close()
        inline.workspace.close()
    # and it applies as any preview does
    applied = apply(web, token, confirm_count=str(background_preview["to_apply"]))
    assert applied.status_code == 303, applied.text[:500]


def test_a_preview_that_fails_in_the_background_shows_the_command_lines_message(
    background: Web, tmp_path: Path
) -> None:
    web = background
    sign_in(web)
    path = _write(tmp_path / "export.csv", ROWS, bad_row=2500)
    preview_url = upload(web, path, name="my export.csv")
    assert 'id="reading"' in web.client.get(preview_url).text
    _follow(web, token_of(preview_url))
    page = web.client.get(preview_url)
    assert page.status_code == 200
    assert 'class="alert bad"' in page.text
    assert (
        "my export.csv: row 2500 has 3 values but the header has 2 columns; a value "
        "containing the delimiter (comma) must be quoted"
    ) in page.text
    assert "Traceback" not in page.text and str(tmp_path) not in page.text
    assert web.client.get(f"/api/runs/{token_of(preview_url)}").json()["preview"] == "error"


def test_a_large_workbook_asks_for_its_sheet_from_the_background_then_previews_it(
    background: Web, tmp_path: Path
) -> None:
    web = background
    sign_in(web)
    book = Workbook()
    book.active.title = "Notes"
    book.active.append(["nothing here"])
    data = book.create_sheet("Codes")
    data.append(["conversation_id", "wrapup_code"])
    for i in range(1, 201):
        data.append([generated_conversation_id(i), "Sales"])
    path = tmp_path / "book.xlsx"
    book.save(path)
    preview_url = upload(web, path)
    token = token_of(preview_url)
    assert 'id="reading"' in web.client.get(preview_url).text
    _follow(web, token)
    page = web.client.get(preview_url).text
    assert "Which sheet?" in page and 'value="Codes"' in page
    chosen = web.client.post(
        f"/runs/{token}/sheet", data={"csrf_token": csrf(web), "sheet": "Codes"}
    )
    assert chosen.status_code == 200 and 'id="reading"' in chosen.text
    _follow(web, token)
    state = web.client.get(f"/api/runs/{token}").json()
    assert state["preview"] == "ready" and state["counts"] == {"pending": 200}


def test_a_preview_whose_process_dies_says_so_instead_of_reading_forever(
    background: Web, tmp_path: Path
) -> None:
    web = background
    sign_in(web)
    preview_url = upload(web, _write(tmp_path / "big.csv", 60_000))
    token = token_of(preview_url)
    web.client.get(preview_url)
    progress = web.workspace.data_dir / "uploads" / token / PROGRESS_FILE
    pid = _child_at_work(progress)
    os.kill(pid, signal.SIGKILL)
    _follow(web, token)
    page = web.client.get(preview_url).text
    assert "The preview stopped before it finished" in page
    assert "Upload the file again to retry" in page


def _child_at_work(progress: Path, timeout: float = 60) -> int:
    """The pid of the preview's child, once it has written its first heartbeat."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(json.loads(progress.read_text("utf-8"))["pid"])
        except (OSError, ValueError, KeyError):
            assert time.monotonic() < deadline, "the preview's child did not start"
            time.sleep(0.05)


def test_a_preview_stopped_with_the_page_is_computed_again_by_the_next_one(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    first = make_web(emulator, tmp_path)
    first.workspace.preview_inline_bytes = 0
    sign_in(first)
    preview_url = upload(first, _write(tmp_path / "big.csv", 60_000))
    token = token_of(preview_url)
    upload_dir = first.workspace.data_dir / "uploads" / token
    first.client.get(preview_url)
    _child_at_work(upload_dir / PROGRESS_FILE)
    first.client.close()
    first.workspace.close()  # as Ctrl-C on `serve`: the child stops, nothing half-kept
    assert not (upload_dir / RESULT_FILE).exists()
    assert not (upload_dir / PROGRESS_FILE).exists()
    assert not [p for p in upload_dir.iterdir() if p.is_dir()]
    second = make_web(emulator, tmp_path)  # the same ledger and uploads folder
    second.workspace.preview_inline_bytes = 0
    try:
        sign_in(second)
        assert 'id="reading"' in second.client.get(preview_url).text
        _follow(second, token)
        assert second.client.get(f"/api/runs/{token}").json()["total"] == 60_000
    finally:
        second.client.close()
        second.workspace.close()


def test_a_server_killed_during_a_preview_computes_it_again_after_a_restart(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """`serve` SIGKILLed with its preview's child: the restarted page does not wait on the
    dead child's heartbeat, it starts the preview again (a file over the default 1 MB, which
    `serve` previews in the background)."""
    path = _write(tmp_path / "big.csv", 40_000)
    assert path.stat().st_size > PREVIEW_INLINE_BYTES
    with serve_page(emulator, tmp_path, "6000") as (url, process):
        client = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)
        assert csrf
        with path.open("rb") as handle:
            answer = client.post("/uploads", data={"csrf_token": csrf[1]}, files={"file": handle})
        assert answer.status_code == 303
        preview_url = answer.headers["location"]
        token = preview_url.split("/")[2]
        assert 'id="reading"' in client.get(preview_url).text
        uploads = tmp_path / "ledger.web" / "uploads" / token
        child = _child_at_work(uploads / PROGRESS_FILE)
        process.kill()
        os.kill(child, signal.SIGKILL)
        process.wait()
    assert not (uploads / RESULT_FILE).exists()
    assert (uploads / PROGRESS_FILE).exists()  # a heartbeat left by a dead child
    assert list(uploads.glob("preview-scratch-*"))  # and its scratch ledger
    with serve_page(emulator, tmp_path, "6000") as (url, _process):
        client = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
        assert 'id="reading"' in client.get(preview_url).text
        deadline = time.monotonic() + 120
        while (state := client.get(f"/api/runs/{token}").json())["preview"] == "reading":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert state["preview"] == "ready" and state["total"] == 40_000
        assert "rows read" in client.get(preview_url).text
    assert not (uploads / PROGRESS_FILE).exists()
    assert not [p for p in uploads.iterdir() if p.is_dir()]  # the dead child's scratch too
