"""The analysts' page in a real browser: Playwright driving Debian's chromium.

`playwright install` cannot download browsers here: the tests launch `/usr/bin/chromium`
(`apt-get install chromium`; `.ci/run` installs it when missing). Without it they skip, except
under CI (`CI=true`), where a missing browser fails them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner
from test_run_cli import SAMPLE_COUNTS, env_for

from wrapup_batch.api_settings import ApiSettings
from wrapup_batch.app import Workspace
from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, start_emulator
from wrapup_batch.emulator.seed import default_seed_path
from wrapup_batch.web import AuthSettings, create_app

CHROMIUM = os.environ.get("WRAPUP_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
RECLASSIFY = ROOT / "sample_data" / "reclassify.csv"
XSS_NAME = "<script>window.__xss = 1</script>Escalated <b>now</b>"

if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests may not skip in CI "
            "(apt-get install -y chromium)",
            pytrace=False,
        )
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@dataclass
class Site:
    url: str
    emulator: EmulatorHandle
    workspace: Workspace
    tmp: Path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def _seed_with_an_evil_code(tmp: Path) -> Path:
    data = json.loads(default_seed_path().read_text("utf-8"))
    data["wrapupCodes"].append(
        {
            "id": "9c000099-0000-4000-8000-000000000000",
            "name": XSS_NAME,
            "divisionId": "d0000001-0000-4000-8000-000000000000",
            "dateCreated": "2026-01-01T00:00:00.000Z",
        }
    )
    path = tmp / "seed.json"
    path.write_text(json.dumps(data), "utf-8")
    return path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    config = EmulatorConfig(seed_path=_seed_with_an_evil_code(tmp_path), rate_limit=0)
    with start_emulator(config) as emulator:
        workspace = Workspace(
            ledger=str(tmp_path / "ledger.db"),
            data_dir=tmp_path / "web",
            api=ApiSettings(emulator.base_url, emulator.client_id, emulator.client_secret, 10.0),
            rate_limit=6000,
        )
        app = create_app(
            workspace, AuthSettings(emulator.base_url, "wrapup-batch-web"), sse_interval=0.2
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        try:
            yield Site(f"http://127.0.0.1:{sock.getsockname()[1]}", emulator, workspace, tmp_path)
        finally:
            server.should_exit = True
            thread.join(timeout=20)
            workspace.close()
            sock.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True)
    opened = context.new_page()
    dialogs: list[str] = []
    opened.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        yield opened
    finally:
        context.close()
    assert dialogs == []  # no script ever ran an alert


def sign_in(page: Page, site: Site, email: str, password: str) -> None:
    page.goto(site.url + "/")
    assert page.url.startswith(site.emulator.base_url + "/oauth/authorize?")
    page.fill("#username", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(site.url + "/")


def upload(page: Page, path: Path) -> None:
    page.set_input_files("#file", str(path))
    expect(page.locator("#file-name")).to_have_text(path.name)
    page.click("text=Upload and preview")
    page.wait_for_url("**/preview")


def _rows(data: bytes, drop: tuple[str, ...] = ("context_id",)) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    return [{k: v for k, v in row.items() if k not in drop} for row in reader]


def test_an_analyst_signs_in_uploads_previews_applies_and_downloads_the_results(
    page: Page, site: Site, tmp_path: Path
) -> None:
    sign_in(page, site, "analyst@example.com", "analyst-password")
    expect(page.locator(".who .user")).to_have_text("Ana Analyst")
    upload(page, RECLASSIFY)
    expect(page.locator(".tile").first).to_contain_text("22")
    expect(page.locator(".tile.good")).to_contain_text("16")
    expect(page.locator("#codes")).to_contain_text('did you mean "Sales"?')
    expect(page.locator("#problems")).to_contain_text("same as row 1")
    expect(page.locator(".projection")).to_contain_text("Of 16 sampled rows", timeout=20000)
    expect(page.locator(".projection")).to_contain_text("9 would apply")
    page.click("#apply-open")
    expect(page.locator("#apply-button")).to_have_text("Yes, apply to 16 rows")
    page.click("#apply-button")
    page.wait_for_url("**/runs/1")
    expect(page.locator("#state")).to_have_text("done", timeout=30000)
    expect(page.locator("#download-results")).to_be_visible()
    with page.expect_download() as downloaded:
        page.click("#download-results")
    ours = Path(downloaded.value.path()).read_bytes()
    # the same bytes as the command line's report of this run ...
    report = tmp_path / "report.csv"
    assert (
        CliRunner()
        .invoke(main, ["report", "--ledger", str(site.tmp / "ledger.db"), "-o", str(report)])
        .exit_code
        == 0
    )
    assert ours == report.read_bytes()
    # ... and the same rows as `run --results` on the same input (a fresh org and ledger;
    # Genesys's contextId of an error differs from request to request)
    with start_emulator(EmulatorConfig(seed_path=tmp_path / "seed.json")) as other:
        cli_out = tmp_path / "cli.csv"
        ran = CliRunner().invoke(
            main,
            [
                *("run", str(RECLASSIFY), "--ledger", str(tmp_path / "cli.db")),
                *("--results", str(cli_out), "-q", "--rate-limit", "6000"),
            ],
            env=dict(env_for(other)),
        )
        assert ran.exit_code == 1, ran.output
    assert _rows(ours) == _rows(cli_out.read_bytes())
    statuses = [row["status"] for row in _rows(ours)]
    assert {s: statuses.count(s) for s in set(statuses)} == SAMPLE_COUNTS
    # filter by status, then the history
    page.click("a.status >> text=no_agent")
    expect(page.locator("#results tbody tr")).to_have_count(2)
    page.click("text=History")
    expect(page.locator("#history")).to_contain_text("Ana Analyst")
    expect(page.locator("#history")).to_contain_text("reclassify.csv")


def test_a_viewer_previews_but_cannot_apply(page: Page, site: Site) -> None:
    sign_in(page, site, "viewer@example.com", "viewer-password")
    expect(page.locator(".who")).to_contain_text("view only")
    upload(page, RECLASSIFY)
    expect(page.locator(".projection")).to_contain_text("sampled rows", timeout=20000)
    expect(page.locator("#apply-button")).to_have_count(0)
    expect(page.locator("text=applying needs the Genesys Cloud permission")).to_be_visible()
    token = page.url.split("/")[-2]
    status = page.evaluate(
        """async ([token, csrf]) => {
            const body = new URLSearchParams({csrf_token: csrf, on_existing: "skip"});
            const r = await fetch(`/runs/${token}/apply`, {method: "POST", body});
            return r.status;
        }""",
        [token, page.locator("input[name=csrf_token]").first.get_attribute("value")],
    )
    assert status == 403
    assert site.workspace.ledger.list_runs() == []


def test_a_post_without_the_csrf_token_is_refused(page: Page, site: Site) -> None:
    sign_in(page, site, "analyst@example.com", "analyst-password")
    upload(page, RECLASSIFY)
    token = page.url.split("/")[-2]
    status = page.evaluate(
        """async (token) => {
            const body = new URLSearchParams({on_existing: "skip", participant: "last-agent"});
            const r = await fetch(`/runs/${token}/apply`, {method: "POST", body});
            return r.status;
        }""",
        token,
    )
    assert status == 403
    assert site.workspace.ledger.list_runs() == []
    assert site.emulator.stats()["posts_accepted"] == 0


def test_a_code_name_holding_a_script_shows_as_text(page: Page, site: Site) -> None:
    evil = site.tmp / "evil.csv"
    evil.write_text(
        "conversation_id,wrapup_code\n"
        f"c0000001-0000-4000-8000-000000000000,{XSS_NAME.lower()}\n"
        "c0000003-0000-4000-8000-000000000000,<img src=x onerror=window.__xss=2>\n"
    )
    sign_in(page, site, "analyst@example.com", "analyst-password")
    upload(page, evil)
    codes = page.locator("#codes")
    expect(codes).to_contain_text(XSS_NAME)  # the org's code name, resolved, shown as text
    expect(codes).to_contain_text("<img src=x onerror=window.__xss=2>")
    expect(page.locator(".projection")).to_contain_text("sampled rows", timeout=20000)
    assert page.evaluate("window.__xss") is None
    assert page.locator("#codes script, #codes img, #codes b").count() == 0


def test_a_workbook_s_rows_to_fix_download_as_a_workbook(page: Page, site: Site) -> None:
    from openpyxl import load_workbook  # type: ignore[import-untyped]
    from test_web_fixes import BAD_ID, review_workbook

    source = review_workbook(site.tmp / "quality review.xlsx")
    sign_in(page, site, "analyst@example.com", "analyst-password")
    upload(page, source)
    expect(page.locator("text=Which sheet?")).to_be_visible()
    page.check("input[name=sheet][value=Data]")
    page.click("text=Use this sheet")
    expect(page.locator(".projection")).to_contain_text("sampled rows", timeout=20000)
    page.click("#apply-open")
    page.click("#apply-button")
    page.wait_for_url("**/runs/1")
    expect(page.locator("#state")).to_have_text("done", timeout=30000)
    expect(page.locator("#download-fix")).to_contain_text("Rows to fix (4)")
    with page.expect_download() as downloaded:
        page.click("#download-fix")
    assert downloaded.value.suggested_filename == "quality review-to-fix.xlsx"
    with Path(downloaded.value.path()).open("rb") as saved:  # a name without a suffix
        sheet = load_workbook(saved)["Data"]
    assert [c.value for c in sheet[2]][:2] == ["Conversation Id", "Wrap-up"]
    assert [r[0].value for r in sheet.iter_rows(min_row=3)] == [
        "c0000003-0000-4000-8000-000000000000",
        BAD_ID,
        "c0000004-0000-4000-8000-000000000000",
        "c0000004-0000-4000-8000-000000000000",
    ]


def test_a_large_upload_shows_reading_then_turns_into_its_preview(page: Page, site: Site) -> None:
    site.workspace.preview_inline_bytes = 0  # every upload is previewed in the background
    sign_in(page, site, "analyst@example.com", "analyst-password")
    upload(page, RECLASSIFY)
    reading = page.locator("#reading")
    expect(reading).to_be_visible()  # the first page: the job has only just started
    expect(reading).to_contain_text("Read")
    expect(page.locator("#apply-form")).to_have_count(0)
    # htmx polls the progress block; when the preview is done, the page reloads into it
    expect(page.locator(".tile").first).to_contain_text("22", timeout=60000)
    expect(reading).to_have_count(0)
    expect(page.locator("#problems")).to_contain_text("same as row 1")
    expect(page.locator(".projection")).to_contain_text("Of 16 sampled rows", timeout=20000)
