"""Take the README's screenshots of the analysts' page (docs/*.png) on the sandbox.

    .venv/bin/python docs/screenshots.py

Starts `wrapup-batch serve --sandbox` (the emulator as the org) on a free port with a fresh
ledger, drives Debian's chromium through Playwright as an analyst and as a viewer, and writes
one PNG per page. Needs `apt-get install chromium`.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
CHROMIUM = "/usr/bin/chromium"
WIDTH = 1200


def shot(page: Page, name: str, full: bool = True) -> None:
    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=full)
    print(f"docs/{name}.png")


def sign_in(page: Page, url: str, email: str, password: str) -> None:
    page.goto(url + "/")
    page.fill("#username", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="wrapup-shots-"))
    ledger = work / "ledger.db"
    cli = [sys.executable, "-c", "from wrapup_batch.cli import main; main()"]
    # a command-line run first, so that the history shows one
    subprocess.run(
        [
            *(*cli, "run", str(ROOT / "sample_data" / "reclassify.csv")),
            *("--sandbox", "--dry-run", "--ledger", str(ledger), "-q"),
        ],
        check=False,
        cwd=work,
    )
    server = subprocess.Popen(
        [*cli, "serve", "--sandbox", "--port", "0", "--ledger", str(ledger), "--rate-limit", "60"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=work,
    )
    try:
        assert server.stdout is not None
        found = re.search(r"(http://127\.0\.0\.1:\d+)", server.stdout.readline())
        assert found
        url = found.group(1)
        time.sleep(1.0)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": WIDTH, "height": 800})
            page.goto(url + "/")
            shot(page, "web-sign-in", full=False)
            sign_in(page, url, "analyst@example.com", "analyst-password")
            shot(page, "web-upload", full=False)

            odd = work / "crm-export.csv"
            odd.write_text(
                "Interaction ID,Disposition,Agent notes\n"
                "c0000001-0000-4000-8000-000000000000,Support - Technical,password reset\n"
            )
            page.set_input_files("#file", str(odd))
            page.click("text=Upload and preview")
            page.wait_for_url("**/preview")
            shot(page, "web-columns", full=False)

            page.goto(url + "/")
            page.set_input_files("#file", str(ROOT / "sample_data" / "reclassify.csv"))
            page.click("text=Upload and preview")
            page.wait_for_url("**/preview")
            page.wait_for_selector(".projection", timeout=30000)
            page.click("#apply-open")
            shot(page, "web-preview")

            page.click("#apply-button")
            page.wait_for_url(re.compile(r".*/runs/\d+$"))
            time.sleep(9)  # some rows done, some to go: 30 rows a minute
            shot(page, "web-progress", full=False)
            page.wait_for_selector("#download-results", timeout=90000)
            shot(page, "web-results")
            page.goto(url + "/runs")
            shot(page, "web-history", full=False)

            # a large file is read in the background: the page shows how far it has got
            big = work / "backfill.csv"
            with big.open("w") as out:
                out.write("conversation_id,wrapup_code\n")
                for n in range(300_000):
                    out.write(f"{n:08x}-0000-4000-8000-000000000000,Sales\n")
            page.goto(url + "/")
            page.set_input_files("#file", str(big))
            page.click("text=Upload and preview")
            page.wait_for_url("**/preview")
            page.wait_for_selector("#reading progress[value]", timeout=30000)
            time.sleep(2)
            shot(page, "web-reading", full=False)

            viewer = browser.new_page(viewport={"width": WIDTH, "height": 800})
            sign_in(viewer, url, "viewer@example.com", "viewer-password")
            viewer.set_input_files("#file", str(ROOT / "sample_data" / "bad_rows.csv"))
            viewer.click("text=Upload and preview")
            viewer.wait_for_url("**/preview")
            viewer.wait_for_selector(".projection, .sample .alert", timeout=30000)
            shot(viewer, "web-viewer-preview")
            browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
