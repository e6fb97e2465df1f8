"""The analysts' page at the HTTP level (Starlette's test client) over the real emulator: sign-in,
CSRF, upload, preview, apply, progress, results, history, and the refusals."""

from __future__ import annotations

import io
import json
import re
import socket
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import Workbook  # type: ignore[import-untyped]
from test_run_cli import SAMPLE_APPLIED, SAMPLE_COUNTS, env_for
from test_workers import wait_for
from web_helpers import (
    ANALYST,
    RECLASSIFY,
    VIEWER,
    Web,
    apply,
    csrf,
    sign_in,
    token_of,
    upload,
    wait_for_end,
    web,
)

from wrapup_batch.app import is_fine
from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorHandle
from wrapup_batch.ledger import Ledger
from wrapup_batch.web.server import ServeOptions, check

__all__ = ["web"]  # the fixture, imported for pytest
ANALYST_ID = "b1000001-0000-4000-8000-000000000000"  # analyst@example.com in the seed


def test_every_page_needs_a_signed_in_user(web: Web) -> None:
    home = web.client.get("/", follow_redirects=False)
    assert home.status_code == 303
    assert home.headers["location"] == "/login?next=/"
    assert web.client.get("/api/runs/1").status_code == 401
    assert web.client.get("/runs/1/results.csv", follow_redirects=False).status_code == 303
    refused = web.client.post("/uploads", files={"file": ("a.csv", b"x")})
    assert refused.status_code == 401


def test_the_session_cookie_is_signed_http_only_and_same_site(web: Web) -> None:
    header = sign_in(web).headers["set-cookie"].lower()
    assert header.startswith("wrapup_session=")
    assert "httponly" in header and "samesite=lax" in header and "max-age=28800" in header
    assert "secure" not in header  # plain http on loopback; --https makes it Secure
    cookie = next(c for c in web.client.cookies.jar if c.name == "wrapup_session")
    # a tampered cookie is no session at all
    web.client.cookies.set("wrapup_session", cookie.value[:-4] + "AAAA", domain=cookie.domain)
    assert web.client.get("/", follow_redirects=False).status_code == 303


def test_upload_preview_shows_every_verdict_without_writing(web: Web) -> None:
    assert web.client.get("/healthz").json() == {"ok": True, "codes_ready": False}
    sign_in(web)
    preview_url = upload(web)
    page = web.client.get(preview_url)
    assert page.status_code == 200
    text = page.text
    assert "reclassify.csv" in text
    tiles = dict(re.findall(r'<span class="n">([^<]+)</span><span class="l">([^<]+)</span>', text))
    assert tiles["22"] == "rows read"
    assert tiles["16"] == "to look up and apply"
    assert {tiles["2"], tiles["1"]} <= {"conflict", "unknown_code", "duplicate", "ambiguous_code"}
    assert "did you mean &#34;Sales&#34;?" in text or "did you mean &quot;Sales&quot;?" in text
    assert "same as row 1" in text
    assert "rows 20, 21" in text
    # the time at the limit: 16 rows x 2 requests / 6000 per minute
    assert "at 6,000 requests/min" in text
    state = web.client.get(f"/api/runs/{token_of(preview_url)}").json()
    assert state["state"] == "preview"
    assert state["total"] == 22
    assert state["counts"]["pending"] == 16
    assert state["started_by"]["name"] == "Ana Analyst"
    assert web.emulator.stats()["posts_accepted"] == 0
    assert web.client.get("/healthz").json()["codes_ready"] is True  # read once, then kept


def test_sampled_lookup_projects_the_outcomes_and_writes_nothing(web: Web) -> None:
    sign_in(web)
    token = token_of(upload(web))
    fragment = web.client.get(f"/runs/{token}/sample").text
    sampled = re.search(r"Of <b>(\d+)</b> sampled rows", fragment)
    assert sampled and int(sampled.group(1)) == 16  # all 16 rows to look up (fewer than 20)
    counts = {o: int(n) for n, o in re.findall(r'status [a-z]+">(\d+) ([a-z ]+)</span>', fragment)}
    assert counts == {
        "would apply": 9,
        "unchanged": 1,
        "skipped": 1,
        "not ended": 1,
        "no agent": 2,
        "forbidden": 1,
        "not found": 1,
    }
    replaced = web.client.get(f"/runs/{token}/sample?on_existing=replace").text
    assert "9 would apply" in replaced and "1 would replace" in replaced
    assert web.emulator.stats()["posts_accepted"] == 0


def test_apply_runs_the_batch_and_results_match_the_command_line(
    web: Web, emulator: EmulatorHandle, tmp_path: Path
) -> None:
    sign_in(web)
    token = token_of(upload(web))
    answer = apply(web, token)
    assert answer.status_code == 303
    run_id = int(answer.headers["location"].rsplit("/", 1)[1])
    assert answer.headers["location"] == f"/runs/{run_id}"
    state = wait_for_end(web, run_id)
    assert state["state"] == "done"
    assert state["counts"] == SAMPLE_COUNTS
    assert state["done"] == state["total"] == 22
    assert state["started_by"] == {"id": ANALYST_ID, "name": "Ana Analyst"}
    stats = emulator.stats()
    assert stats["posts_per_communication"] == dict.fromkeys(SAMPLE_APPLIED, 1)
    # the results file: the same bytes as the command line writes for this run
    download = web.client.get(f"/runs/{run_id}/results.csv")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    cli_copy = tmp_path / "report.csv"
    report = CliRunner().invoke(
        main, ["report", "--ledger", str(web.ledger), "--run", str(run_id), "-o", str(cli_copy)]
    )
    assert report.exit_code == 0, report.output
    assert download.content == cli_copy.read_bytes()
    assert download.content.startswith(b"\xef\xbb\xbfrow,conversation_id,wrapup_code,status")
    # the run page: results filterable by status
    page = web.client.get(f"/runs/{run_id}?status=no_agent").text
    table = page.split('id="results"')[1]
    assert table.count('<span class="status bad">no_agent</span>') == 2
    assert "applied</span>" not in table
    # rows to fix: the not-fine rows, in the uploaded layout (its header and columns)
    fix = web.client.get(f"/runs/{run_id}/to-fix.csv").content.decode("utf-8-sig")
    lines = fix.splitlines()
    assert lines[0] == RECLASSIFY.read_text().splitlines()[0]
    original = RECLASSIFY.read_text().splitlines()
    assert lines[1:] == [original[n] for n in (9, 10, 11, 12, 14, 17, 18, 19, 20, 21)]
    # history: who, when, source, counts
    history = web.client.get("/runs").text
    assert f'<a href="/runs/{run_id}">{run_id}</a>' in history
    assert "Ana Analyst" in history and "reclassify.csv" in history
    assert str(web.tmp) not in history  # no server path is shown
    # the ledger column, as other tools see it
    with sqlite3.connect(web.ledger) as conn:
        who = conn.execute("SELECT started_by_id, started_by_name FROM runs").fetchall()
    assert who == [(ANALYST_ID, "Ana Analyst")]


def test_a_command_line_run_is_in_the_history_with_the_same_results_file(
    web: Web, emulator: EmulatorHandle, tmp_path: Path
) -> None:
    out = tmp_path / "cli-results.csv"
    ran = CliRunner().invoke(
        main,
        [
            *("run", str(RECLASSIFY), "--ledger", str(web.ledger)),
            *("--results", str(out), "-q", "--rate-limit", "6000"),
        ],
        env=dict(env_for(emulator)),
    )
    assert ran.exit_code == 1, ran.output  # some rows are not fine
    sign_in(web, VIEWER)
    assert web.client.get("/runs/1/results.csv").content == out.read_bytes()
    history = web.client.get("/runs").text
    assert re.search(r"<td>[^<]+@[^<]+</td>", history)  # the OS account that ran it
    state = web.client.get("/api/runs/1").json()
    assert state["state"] == "done" and state["counts"] == SAMPLE_COUNTS


def test_a_viewer_previews_but_may_not_apply(web: Web) -> None:
    sign_in(web, VIEWER)
    token = token_of(upload(web))
    preview = web.client.get(f"/runs/{token}/preview").text
    assert "view only" in preview
    assert "apply-button" not in preview
    refused = apply(web, token)
    assert refused.status_code == 403
    assert "conversation:participant:wrapup" in refused.text
    assert Ledger.open(str(web.ledger)).list_runs() == []
    assert web.emulator.stats()["posts_accepted"] == 0


def test_a_post_without_the_csrf_token_is_refused(web: Web) -> None:
    sign_in(web)
    token = token_of(upload(web))
    no_token = web.client.post(
        f"/runs/{token}/apply", data={"on_existing": "skip"}, follow_redirects=False
    )
    assert no_token.status_code == 403
    assert "CSRF" in no_token.text
    wrong = web.client.post(
        "/uploads",
        data={"csrf_token": "not-the-token-of-this-session"},
        files={"file": ("a.csv", RECLASSIFY.read_bytes())},
    )
    assert wrong.status_code == 403
    assert Ledger.open(str(web.ledger)).list_runs() == []
    # the header works as well as the field
    with_header = web.client.post(
        f"/runs/{token}/apply",
        data={"on_existing": "skip", "participant": "last-agent"},
        headers={"X-CSRF-Token": csrf(web)},
        follow_redirects=False,
    )
    assert with_header.status_code == 303


def test_an_upload_over_the_limit_is_refused_and_nothing_kept(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    from web_helpers import make_web

    small = make_web(emulator, tmp_path, max_upload=1000)
    try:
        sign_in(small)
        answer = small.client.post(
            "/uploads",
            data={"csrf_token": csrf(small)},
            files={"file": ("big.csv", RECLASSIFY.read_bytes() * 2)},
        )
        assert answer.status_code == 413
        assert "larger than the limit" in answer.text
        assert list((tmp_path / "web" / "uploads").iterdir()) == []
    finally:
        small.workspace.close()


def test_a_bad_file_gets_the_command_lines_message_naming_the_file(web: Web) -> None:
    sign_in(web)
    blank = web.tmp / "blank.csv"
    blank.write_text("")
    page = web.client.get(upload(web, blank, name="my export.csv")).text
    assert "my export.csv is empty: expected a header line" in page
    assert str(web.tmp) not in page
    binary = web.tmp / "photo.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    page = web.client.get(upload(web, binary)).text
    assert "photo.csv" in page and 'class="alert bad"' in page
    assert "Traceback" not in page


def test_headers_that_do_not_match_get_a_mapping_step(web: Web) -> None:
    sign_in(web)
    odd = web.tmp / "odd.csv"
    odd.write_text(
        "Interaction,Disposition,Comment\n"
        "c0000001-0000-4000-8000-000000000000,Support - Technical,x\n"
        "c0000003-0000-4000-8000-000000000000,Sales,\n"
    )
    preview_url = upload(web, odd)
    page = web.client.get(preview_url).text
    assert "Which column is which?" in page
    assert '<option value="Interaction" >Interaction</option>' in page
    token = token_of(preview_url)
    mapped = web.client.post(
        f"/runs/{token}/columns",
        data={
            "csrf_token": csrf(web),
            "conversation_id": "Interaction",
            "wrapup_code": "Disposition",
            "notes": "Comment",
            "agent_id": "",
        },
        follow_redirects=False,
    )
    assert mapped.status_code == 303
    state = web.client.get(f"/api/runs/{token}").json()
    assert state["total"] == 2 and state["counts"] == {"pending": 2}
    # a column the header matches is pre-filled
    partly = web.tmp / "partly.csv"
    partly.write_text("Conversation ID,Disposition\nc0000001-0000-4000-8000-000000000000,Sales\n")
    page = web.client.get(upload(web, partly)).text
    assert '<option value="Conversation ID" selected>' in page


def test_a_workbook_with_several_sheets_asks_which(web: Web) -> None:
    sign_in(web)
    book = Workbook()
    book.active.title = "Notes"
    book.active.append(["nothing here"])
    data = book.create_sheet("Codes")
    data.append(["conversation_id", "wrapup_code"])
    data.append(["c0000003-0000-4000-8000-000000000000", "Sales"])
    buffer = io.BytesIO()
    book.save(buffer)
    path = web.tmp / "book.xlsx"
    path.write_bytes(buffer.getvalue())
    preview_url = upload(web, path)
    page = web.client.get(preview_url).text
    assert "Which sheet?" in page and 'value="Codes"' in page
    token = token_of(preview_url)
    chosen = web.client.post(
        f"/runs/{token}/sheet", data={"csrf_token": csrf(web), "sheet": "Codes"}
    )
    assert chosen.status_code == 200
    assert web.client.get(f"/api/runs/{token}").json()["counts"] == {"pending": 1}


def test_code_names_and_file_names_are_escaped(web: Web) -> None:
    sign_in(web)
    evil = web.tmp / "evil.csv"
    evil.write_text(
        "conversation_id,wrapup_code\n"
        "c0000001-0000-4000-8000-000000000000,<script>alert(1)</script>\n"
    )
    page = web.client.get(upload(web, evil, name="<img src=x onerror=alert(2)>.csv")).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert "default-src 'self'" in web.client.get("/").headers["content-security-policy"]


def test_an_apply_while_an_older_version_holds_the_ledger_gets_a_clear_message(web: Web) -> None:
    sign_in(web)
    token = token_of(upload(web))
    other = Ledger.open(str(web.ledger))
    other.acquire_lock()  # as a run of a wrapup-batch before ledger schema 8 held it
    try:
        busy = apply(web, token)
    finally:
        other.release_lock()
        other.close()
    assert busy.status_code == 409
    assert "A run of an older wrapup-batch holds this whole ledger; try again" in busy.text
    assert apply(web, token).status_code == 303


def test_more_than_a_thousand_rows_need_the_count_typed(web: Web) -> None:
    sign_in(web)
    many = web.tmp / "many.csv"
    lines = ["conversation_id,wrapup_code"]
    lines += [f"9e000000-0000-4000-8000-{i:012x},Sales" for i in range(1200)]
    many.write_text("\n".join(lines) + "\n")
    token = token_of(upload(web, many))
    assert 'name="confirm_count"' in web.client.get(f"/runs/{token}/preview").text
    wrong = apply(web, token, confirm_count="1000")
    assert wrong.status_code == 400
    assert "type the number 1200" in wrong.text
    assert Ledger.open(str(web.ledger)).list_runs() == []


def test_revert_puts_back_what_a_finished_run_replaced(web: Web) -> None:
    sign_in(web)
    token = token_of(upload(web))
    run_id = int(apply(web, token, on_existing="replace").headers["location"].rsplit("/", 1)[1])
    assert wait_for_end(web, run_id)["counts"]["applied"] == 10  # row 8 replaced as well
    replaced = "e0000008-0000-4000-8000-000000000031"
    assert web.emulator.state.wrapups[replaced].name == "Support - Billing"
    page = web.client.get(f"/runs/{run_id}").text
    assert "revert-button" in page
    answer = web.client.post(
        f"/runs/{run_id}/revert", data={"csrf_token": csrf(web)}, follow_redirects=False
    )
    assert answer.status_code == 303
    revert_id = int(answer.headers["location"].rsplit("/", 1)[1])
    state = wait_for_end(web, revert_id)
    assert state["kind"] == "revert"
    assert state["counts"].get("applied") == 1  # the one replaced code put back
    assert web.emulator.state.wrapups[replaced].name == "Complaint"


def test_stop_finishes_what_is_in_flight_and_the_run_resumes(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    from web_helpers import make_web

    slow = make_web(emulator, tmp_path, rate_limit=60)  # 30 rows a minute
    try:
        sign_in(slow)
        token = token_of(upload(slow))
        run_id = int(apply(slow, token).headers["location"].rsplit("/", 1)[1])
        page = slow.client.get(f"/runs/{run_id}").text
        assert 'id="stop-button"' in page and f'data-events="/runs/{run_id}/events"' in page
        stopped = slow.client.post(
            f"/runs/{run_id}/stop", data={"csrf_token": csrf(slow)}, follow_redirects=False
        )
        assert stopped.status_code == 303
        state = wait_for_end(slow, run_id)
        assert state["state"] == "stopped" and not state["interrupted"]
        assert state["counts"].get("pending", 0) > 0  # rows left for the resume
        # the rows to fix hold the rows not fine and those the stopped run did not reach
        to_fix = slow.client.get(f"/runs/{run_id}/to-fix")
        lines = to_fix.content.decode("utf-8-sig").splitlines()
        not_fine = sum(n for status, n in state["counts"].items() if not is_fine(status))
        assert lines[0] == RECLASSIFY.read_text("utf-8-sig").splitlines()[0]
        assert len(lines) == 1 + not_fine
        assert 'id="resume-button"' in slow.client.get(f"/runs/{run_id}").text
        resumed = slow.client.post(
            f"/runs/{run_id}/resume", data={"csrf_token": csrf(slow)}, follow_redirects=False
        )
        assert resumed.headers["location"] == f"/runs/{run_id + 1}"
        slow.client.post(f"/runs/{run_id + 1}/stop", data={"csrf_token": csrf(slow)})
        wait_for_end(slow, run_id + 1)
    finally:
        slow.workspace.close()
    posts = emulator.stats()["posts_per_communication"]
    assert set(posts.values()) <= {1}


def test_the_progress_shows_the_latest_failures_while_the_run_applies(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    from web_helpers import make_web

    missing = "c0000099-0000-4000-8000-000000000000"  # not in the emulator: 404
    source = tmp_path / "with-a-missing-one.csv"
    source.write_text(
        "conversation_id,wrapup_code\n"
        f"{missing},Sales\n"
        + "".join(f"c{n:07d}-0000-4000-8000-000000000000,Sales\n" for n in (1, 2, 3, 4, 5, 6))
    )
    slow = make_web(emulator, tmp_path, rate_limit=60)  # a request a second: ~12 s of work
    try:
        sign_in(slow)
        run_id = int(
            apply(slow, token_of(upload(slow, source))).headers["location"].rsplit("/", 1)[1]
        )

        def recorded() -> bool:
            with sqlite3.connect(slow.ledger) as db:
                found = db.execute(
                    "SELECT status FROM items WHERE conversation_id = ?", (missing,)
                ).fetchone()
            return found is not None and found[0] == "not_found"

        wait_for(recorded, "the missing conversation recorded", 30)
        view = slow.client.get(f"/api/runs/{run_id}").json()
        page = slow.client.get(f"/runs/{run_id}").text
        assert view["state"] == "applying"  # the throttle holds the other rows for seconds
        assert "Latest failures" in page and missing in page and "not_found" in page
        slow.client.post(f"/runs/{run_id}/stop", data={"csrf_token": csrf(slow)})
        assert wait_for_end(slow, run_id)["counts"]["not_found"] == 1
        assert "Latest failures" not in slow.client.get(f"/runs/{run_id}").text  # the results say
    finally:
        slow.workspace.close()


def test_events_stream_progress_and_the_end(web: Web) -> None:
    sign_in(web)
    run_id = int(apply(web, token_of(upload(web))).headers["location"].rsplit("/", 1)[1])
    wait_for_end(web, run_id)
    with web.client.stream("GET", f"/runs/{run_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        body = "".join(stream.iter_text())
    assert "event: progress" in body and "event: end" in body
    state = json.loads(body.split("event: state\r\ndata: ", 1)[1].split("\r\n", 1)[0])
    assert state["id"] == run_id and state["state"] == "done"


def test_runs_and_uploads_are_reached_by_id_only(web: Web) -> None:
    sign_in(web)
    assert web.client.get("/runs/999").status_code == 404
    assert web.client.get("/runs/..%2F..%2Fetc/preview").status_code == 404
    assert web.client.get("/runs/not-a-real-upload-token/preview").status_code == 404
    assert web.client.get("/api/runs/999").json() == {"error": "No run 999 in this ledger."}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_no_auth_is_refused_off_loopback(host: str) -> None:
    from wrapup_batch.errors import UsageError

    with pytest.raises(UsageError, match="only allowed when the page listens on loopback"):
        check(ServeOptions(host=host, no_auth=True))
    check(ServeOptions(host="127.0.0.1", no_auth=True))


def test_the_page_listens_before_it_prints_its_address(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever opens the printed address at once waits for the page, never a refusal."""
    from wrapup_batch.web.server import serve

    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    reached: list[bool] = []

    class Enough(Exception):
        pass

    def on_ready(url: str, _options: ServeOptions) -> None:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            reached.append(True)
        raise Enough

    options = ServeOptions(port=0, ledger=str(tmp_path / "ledger.db"), no_auth=True)
    with pytest.raises(Enough):
        serve(options, on_ready)
    assert reached == [True]


def test_serve_no_auth_off_loopback_exits_2_with_a_message() -> None:
    result = CliRunner().invoke(main, ["serve", "--no-auth", "--host", "0.0.0.0", "--sandbox"])
    assert result.exit_code == 2
    assert "--no-auth is only allowed when the page listens on loopback" in result.output


def test_signing_in_with_a_forged_state_is_refused(web: Web) -> None:
    web.client.get("/login", follow_redirects=False)
    forged = web.client.get("/auth/callback?code=abc&state=forged", follow_redirects=False)
    assert forged.status_code == 400
    assert web.client.get("/", follow_redirects=False).status_code == 303


def test_analyst_identity_comes_from_genesys(web: Web) -> None:
    sign_in(web, ANALYST)
    page = web.client.get("/").text
    assert "Ana Analyst" in page and "view only" not in page


def test_a_session_expires_after_its_hours(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from wrapup_batch.web import auth

    sign_in(web)
    assert web.client.get("/", follow_redirects=False).status_code == 200
    later = time.time() + 8 * 3600 + 60  # the default 8 hours, and a minute
    monkeypatch.setattr(auth, "_now", lambda: later)
    expired = web.client.get("/", follow_redirects=False)
    assert expired.status_code == 303 and expired.headers["location"].startswith("/login")
