"""Two analysts applying at once on one page, and the nightly job on the same ledger (issue 12,
"What it must survive"): each conversation is written once, every row of every run ends fine
or resumable, and the page reports every run, wherever it was started, from its own rows.

The overlap is made real without timing margins: the emulator answers slowly while the nightly
`wrapup-batch run` holds its conversations, both analysts press Apply at once, and the test
waits (on the ledger) until each analyst's run has met the others' claims; then the emulator
answers fast again and everything runs to its end. The emulator records every wrap-up POST it
receives, so a duplicate write is counted, not guessed.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from test_workers import env_of, finish, found, query, start, wait_for
from web_helpers import ANALYST, Web, csrf, make_web, sign_in, token_of, upload

from wrapup_batch.api_settings import ApiSettings
from wrapup_batch.app import Workspace
from wrapup_batch.emulator import (
    EmulatorConfig,
    EmulatorHandle,
    generated_conversation_id,
    start_emulator,
)
from wrapup_batch.ledger import Ledger, items, run_rows
from wrapup_batch.models import InputRow
from wrapup_batch.web import AuthSettings, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ANALYST_2 = ("analyst2@example.com", "analyst2-password")
CONVERSATIONS = 100
SLOW_MS = 1500  # while the runs meet: every request takes this long
FAST_MS = 10
#: Which generated conversations each input asks for (overlapping on purpose).
ANA = list(range(0, 60))
BEA = list(range(30, 90))
NIGHTLY = list(range(20, 40)) + list(range(80, 100))


def agent_comm(i: int) -> str:
    """The agent communication of generated conversation i (the one a wrap-up is POSTed to)."""
    return f"9e000012-0000-4000-8000-{i:012x}"


def write_input(path: Path, conversations: list[int]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conversation_id", "wrapup_code"])
        for i in conversations:
            writer.writerow([generated_conversation_id(i), "Sales"])
    return path


@pytest.fixture
def together_emulator() -> Iterator[EmulatorHandle]:
    config = EmulatorConfig(generate=CONVERSATIONS, rate_limit=0, latency_ms=FAST_MS)
    with start_emulator(config) as handle:
        yield handle


def page_sessions(
    emulator: EmulatorHandle, tmp: Path, ledger: str, people: int
) -> tuple[Workspace, list[Web]]:
    """One page (one Workspace, one ledger) and a signed-out browser session per person."""
    workspace = Workspace(
        ledger=ledger,
        data_dir=tmp / "web",
        api=ApiSettings(emulator.base_url, emulator.client_id, emulator.client_secret, 10.0),
        rate_limit=6000,
        concurrency=4,
    )
    app = create_app(workspace, AuthSettings(emulator.base_url, "wrapup-batch-web"))
    app.state.sse_interval = 0.1
    sessions = [
        Web(emulator, workspace, TestClient(app, base_url="http://127.0.0.1"), tmp)
        for _ in range(people)
    ]
    return workspace, sessions


def api_state(web: Web, run_id: int) -> dict[str, Any]:
    state: dict[str, Any] = web.client.get(f"/api/runs/{run_id}").json()
    return state


def wait_until_ended(web: Web, run_id: int, timeout: float = 180.0) -> dict[str, Any]:
    wait_for(lambda: api_state(web, run_id)["state"] != "applying", f"run {run_id}", timeout)
    return api_state(web, run_id)


def results(web: Web, run_id: int) -> list[dict[str, str]]:
    answer = web.client.get(f"/runs/{run_id}/results.csv")
    assert answer.status_code == 200
    return list(csv.DictReader(answer.content.decode("utf-8-sig").splitlines()))


def held_rows(ledger: str, run_id: int) -> dict[str, int]:
    """The run's rows left because another run held their conversation: conversation -> run."""
    found_rows = query(
        ledger,
        f"SELECT conversation_id, held_by FROM run_rows WHERE run_id = {run_id} "
        "AND held_by IS NOT NULL",
    )
    return {r["conversation_id"]: int(r["held_by"]) for r in found_rows}


def writer_of(ledger: str) -> dict[str, int]:
    """conversation id -> the run that applied it (the item's last writer)."""
    rows = query(ledger, "SELECT conversation_id, status, last_run_id FROM items")
    assert {r["status"] for r in rows} == {"applied"}, rows
    return {r["conversation_id"]: int(r["last_run_id"]) for r in rows}


def still_running(web: Web, ledger: str, run_id: int) -> dict[str, Any]:
    """The page's view of a run: applying, as long as the ledger has not recorded its end."""
    seen = api_state(web, run_id)
    if not found(ledger, f"SELECT 1 FROM runs WHERE id = {run_id} AND finished IS NOT NULL"):
        assert seen["state"] == "applying", seen
    return seen


def analysts_and_the_nightly_job(
    emulator: EmulatorHandle, tmp_path: Path, ledger: str, ana: Web, bea: Web, *, other: Web
) -> None:
    """Ana and Bea (signed out sessions of the page, or of two pages on one ledger) upload
    overlapping files and press Apply at once while the nightly job runs on the same ledger;
    `other`: a session that reads every run too (the other page, or Bea's)."""
    sign_in(ana, ANALYST)
    sign_in(bea, ANALYST_2)
    tokens = []
    for web, rows, name in ((ana, ANA, "ana.csv"), (bea, BEA, "bea.csv")):
        preview_url = upload(web, write_input(tmp_path / name, rows))
        assert "to look up and apply" in web.client.get(preview_url).text
        tokens.append(token_of(preview_url))

    # the nightly job starts first and, the API being slow, holds its conversations
    emulator.config.latency_ms = SLOW_MS
    nightly_csv = write_input(tmp_path / "nightly.csv", NIGHTLY)
    nightly_log = tmp_path / "nightly.log"
    nightly = start(
        ["run", str(nightly_csv), "--ledger", ledger, "--rate-limit", "6000", "--quiet"],
        env_of(emulator),
        nightly_log,
    )
    # from its start (reading its input, resolving its codes) the page shows it applying
    wait_for(lambda: found(ledger, "SELECT 1 FROM runs WHERE id = 1"), "the nightly run")
    still_running(other, ledger, 1)
    wait_for(
        lambda: found(ledger, "SELECT 1 FROM conversation_claims WHERE run_id = 1"),
        "the nightly run's claims",
    )

    # both analysts press Apply at once
    answers: dict[int, Any] = {}

    def press(index: int, web: Web, token: str) -> None:
        answers[index] = web.client.post(
            f"/runs/{token}/apply",
            data={"csrf_token": csrf(web), "on_existing": "skip", "participant": "last-agent"},
            follow_redirects=False,
        )

    pressing = [
        threading.Thread(target=press, args=(i, web, token))
        for i, (web, token) in enumerate(zip((ana, bea), tokens, strict=True))
    ]
    for thread in pressing:
        thread.start()
    for thread in pressing:
        thread.join(timeout=120)
    for answer in answers.values():
        assert answer.status_code == 303, answer.text[:800]
    ana_run, bea_run = (int(answers[i].headers["location"].rsplit("/", 1)[1]) for i in (0, 1))
    assert {ana_run, bea_run} == {2, 3}

    # wait until each analyst's run has met the nightly run's claims (and one the other's)
    nightly_ids = {generated_conversation_id(i) for i in NIGHTLY}
    wait_for(
        lambda: (
            {c for c, r in held_rows(ledger, ana_run).items() if r == 1}
            == nightly_ids & {generated_conversation_id(i) for i in ANA}
            and {c for c, r in held_rows(ledger, bea_run).items() if r == 1}
            == nightly_ids & {generated_conversation_id(i) for i in BEA}
        ),
        "both analysts' runs to meet the nightly run's claims",
    )
    # meanwhile, every page shows every run applying (a run of another page reads from its
    # rows, with the rows another run was changing)
    for run_id in (1, ana_run, bea_run):
        for web in (ana, bea, other):
            still_running(web, ledger, run_id)
    if other.client.base_url != ana.client.base_url:  # Ana's run, seen from another page
        page = other.client.get(f"/runs/{ana_run}").text
        if 'id="state">applying<' in page:
            assert re.search(r'id="held-so-far">\d+ rows were being changed by run', page), page
        else:  # ended in between
            assert found(ledger, f"SELECT 1 FROM runs WHERE id = {ana_run} AND finished <> ''")
    emulator.config.latency_ms = FAST_MS  # now let everything run

    assert finish(nightly, nightly_log) in (0, 4), nightly_log.read_text()
    ends = {run: wait_until_ended(ana, run) for run in (ana_run, bea_run)}

    # every conversation asked for was written exactly once, by one run or another
    everyone = sorted(set(ANA) | set(BEA) | set(NIGHTLY))
    posts = emulator.stats(detail=True)["post_attempts_per_communication"]
    assert posts == {agent_comm(i): 1 for i in everyone}

    # the page shows each run, whoever started it, with its counts and who started it
    inputs = {ana_run: ANA, bea_run: BEA, 1: NIGHTLY}
    names = {ana_run: "Ana Analyst", bea_run: "Bea Analyst"}
    for run_id, rows in inputs.items():
        for web in (ana, bea):  # both people see the same
            state = api_state(web, run_id)
            assert state["state"] in ("done", "stopped"), state
            assert sum(state["counts"].values()) == len(rows) == state["total"]
            assert set(state["counts"]) <= {"applied", "pending"}, str(state) + str(
                query(ledger, f"SELECT id, exit_code, summary FROM runs WHERE id = {run_id}")
            )
            if run_id in names:
                assert state["started_by"]["name"] == names[run_id]
            else:
                assert state["started_by"]["id"].startswith("os:")
    history = ana.client.get("/runs").text
    assert "Ana Analyst" in history and "Bea Analyst" in history

    # the rows another run held are reported so: applied by that run (this run sent
    # nothing for them), or still pending, to be finished by a Resume
    writers = writer_of(ledger)
    to_resume = []
    for run_id, rows in inputs.items():
        held = held_rows(ledger, run_id)
        state = api_state(ana, run_id)
        by_row = {r["conversation_id"]: r for r in results(ana, run_id)}
        assert len(by_row) == len(rows)
        for conversation, row in by_row.items():
            if conversation in held:
                assert f"run {held[conversation]}" in row["message"], row
                assert writers[conversation] != run_id
                if row["status"] == "applied":
                    assert writers[conversation] == held[conversation]
                else:
                    assert row["status"] == "pending", row
            else:
                assert row["status"] == "applied", row
        pending = state["counts"].get("pending", 0)
        assert pending == sum(1 for r in by_row.values() if r["status"] == "pending")
        # what this run itself wrote, and what other runs had applied, as the page says it
        mine = sum(1 for c in by_row if writers[c] == run_id)
        others = state["counts"].get("applied", 0) - mine
        page = ana.client.get(f"/runs/{run_id}").text
        if others:
            said = f"This run applied {mine} rows?; the other {others} applied rows? (was|were)"
            assert re.search(said, page), page
        else:
            assert 'id="applied-before"' not in page
        if pending:
            assert state["state"] == "stopped"
            to_resume.append(run_id)
            if run_id in names:
                assert 'id="resume-button"' in page
                assert re.search(
                    rf"{pending} rows? (was|were) being changed by runs? \d+( and \d+)? at "
                    "the same time.*Resume finishes (it|them)",
                    page,
                ), page
        else:
            assert state["state"] == "done"
    # the overlap was real: each analyst's run met the nightly run's claims
    assert all(1 in held_rows(ledger, r).values() for r in (ana_run, bea_run))

    # a Resume (or the nightly's rerun) finishes what was left, writing nothing again
    for run_id in to_resume:
        if run_id == 1:
            rerun = start(
                ["run", str(nightly_csv), "--ledger", ledger, "--quiet"],
                env_of(emulator),
                tmp_path / "rerun.log",
            )
            assert finish(rerun, tmp_path / "rerun.log") == 0
            continue
        web = ana if run_id == ana_run else bea
        resumed = web.client.post(
            f"/runs/{run_id}/resume", data={"csrf_token": csrf(web)}, follow_redirects=False
        )
        assert resumed.status_code == 303, resumed.text[:800]
        new_id = int(resumed.headers["location"].rsplit("/", 1)[1])
        state = wait_until_ended(web, new_id)
        assert state["state"] == "done", state
        assert state["counts"] == {"applied": len(inputs[run_id])}
    assert emulator.stats(detail=True)["post_attempts_per_communication"] == posts
    assert set(ends) == {ana_run, bea_run}


def test_two_analysts_and_the_nightly_job_write_each_conversation_once(
    together_emulator: EmulatorHandle, tmp_path: Path, ledger_target: str
) -> None:
    workspace, (ana, bea) = page_sessions(together_emulator, tmp_path, ledger_target, 2)
    try:
        analysts_and_the_nightly_job(
            together_emulator, tmp_path, ledger_target, ana, bea, other=bea
        )
    finally:
        for web in (ana, bea):
            web.client.close()
        workspace.close()


@contextmanager
def served(
    emulator: EmulatorHandle, tmp_path: Path, ledger: str, name: str
) -> Iterator[httpx.Client]:
    """`wrapup-batch serve` as its own process (sign-in on the emulator), one of a team's
    pages: the same ledger, uploads folder and session secret as the others."""
    env = {
        **env_of(emulator),
        "WRAPUP_BATCH_LOGIN_CLIENT_ID": "wrapup-batch-web",
        "WRAPUP_BATCH_SESSION_SECRET": "the-team-s-shared-session-secret",
    }
    log = tmp_path / f"{name}.log"
    process = start(
        [
            *("serve", "--port", "0", "--ledger", ledger, "--data-dir", str(tmp_path / "web")),
            *("--rate-limit", "6000", "--concurrency", "4"),
        ],
        env,
        log,
    )
    try:
        wait_for(lambda: "http://127.0.0.1:" in log.read_text(), f"{name} to listen", 60)
        url = re.search(r"(http://127\.0\.0\.1:\d+)", log.read_text())
        assert url, log.read_text()
        with httpx.Client(base_url=url.group(1), timeout=60) as client:
            wait_for(lambda: client.get("/healthz").status_code == 200, f"{name} up", 60)
            yield client
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_two_pages_on_one_postgresql_ledger_and_the_nightly_job_write_each_once(
    together_emulator: EmulatorHandle, tmp_path: Path, postgres_url: str
) -> None:
    """The team's server with more than one process: Ana on one, Bea on the other."""
    with (
        served(together_emulator, tmp_path, postgres_url, "page-1") as first,
        served(together_emulator, tmp_path, postgres_url, "page-2") as second,
    ):
        ana = Web(together_emulator, None, first, tmp_path)  # type: ignore[arg-type]
        bea = Web(together_emulator, None, second, tmp_path)  # type: ignore[arg-type]
        analysts_and_the_nightly_job(together_emulator, tmp_path, postgres_url, ana, bea, other=bea)


def test_a_command_line_rerun_watched_from_the_page_counts_only_its_own_work(
    together_emulator: EmulatorHandle, tmp_path: Path, ledger_target: str
) -> None:
    emulator = together_emulator
    ledger = ledger_target
    missing = [generated_conversation_id(CONVERSATIONS + k) for k in range(3)]  # 404s

    def write(path: Path, count: int) -> Path:
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["conversation_id", "wrapup_code"])
            for i in range(count):
                writer.writerow([generated_conversation_id(i), "Sales"])
            for conversation in missing:
                writer.writerow([conversation, "Sales"])
        return path

    # an earlier run applied 20 rows and found 3 conversations missing
    first = start(
        ["run", str(write(tmp_path / "first.csv", 20)), "--ledger", ledger, "--quiet"],
        env_of(emulator),
        tmp_path / "first.log",
    )
    assert finish(first, tmp_path / "first.log") == 1, (tmp_path / "first.log").read_text()

    workspace, (web,) = page_sessions(emulator, tmp_path, ledger, 1)
    try:
        sign_in(web, ANALYST)
        # the nightly rerun, on a longer file: 20 new rows and the 3 missing ones are its work
        emulator.config.latency_ms = 400
        rerun_log = tmp_path / "rerun.log"
        rerun = start(
            [
                *("run", str(write(tmp_path / "rerun.csv", 40)), "--ledger", ledger),
                *("--quiet", "--concurrency", "1"),
            ],
            env_of(emulator),
            rerun_log,
        )

        def own_done() -> int:
            rows = query(
                ledger,
                "SELECT COUNT(*) AS n FROM run_rows r JOIN items i ON i.id = r.item_id "
                "WHERE r.run_id = 2 AND i.last_run_id = 2 "
                "AND i.status NOT IN ('pending', 'in_flight')",
            )
            return int(rows[0]["n"])

        wait_for(
            lambda: (
                found(ledger, "SELECT 1 FROM runs WHERE id = 2 AND work_ready IS NOT NULL")
                and own_done() >= 2
            ),
            "the rerun to be working",
        )
        before = own_done()
        page = web.client.get("/runs/2").text  # read fresh from the ledger
        after = own_done()
        shown = {
            key: int(value.replace(",", ""))
            for key, value in re.findall(r'<b id="(done|total)">([\d,]+)</b>', page)
        }
        assert 'id="state">applying<' in page
        assert "rows to look up" in page
        assert 'id="applying-elsewhere"' in page and 'id="stop-button"' not in page
        # its own work: 20 new rows and the 3 it tries again; not the 20 done before it
        assert shown["total"] == 23, page
        assert before <= shown["done"] <= after < 23, (before, shown, after)
        state = api_state(web, 2)
        assert state["state"] == "applying" and state["total"] == 23, state
        assert sum(state["counts"].values()) == 23
        assert state["counts"].get("applied", 0) <= own_done()
        assert state["started_by"]["id"].startswith("os:")

        emulator.config.latency_ms = FAST_MS
        assert finish(rerun, rerun_log) == 1, rerun_log.read_text()
        final = wait_until_ended(web, 2)
        # ended, its counts are its rows' statuses: every row of the input
        assert final["state"] == "done"
        assert final["counts"] == {"applied": 40, "not_found": 3}
        assert final["done"] == final["total"] == 43
        posts = emulator.stats(detail=True)["post_attempts_per_communication"]
        assert posts == {agent_comm(i): 1 for i in range(40)}
    finally:
        web.client.close()
        workspace.close()


_LOCK_PROBE = """
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
# a write lock on SQLite's SHARED byte range is refused while another process uses the file
shared = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0x40000000 + 2, 510, 0)
try:
    fcntl.fcntl(fd, fcntl.F_SETLK, shared)
except OSError:
    print("in use")
else:
    print("unused")
"""


def test_opening_the_ledger_again_in_one_process_keeps_it_in_use_for_other_processes(
    tmp_path: Path,
) -> None:
    """The page opens the ledger once per run, beside the runs already going in its process.
    Opening it again must not drop the locks of the connections already open (POSIX drops a
    process's locks on a file when any handle on it is closed): another process would then
    take the ledger for unused, checkpoint and remove its WAL under them, and corrupt it."""
    path = tmp_path / "ledger.db"

    def seen_from_another_process() -> str:
        probe = subprocess.run(
            [sys.executable, "-c", _LOCK_PROBE, str(path)], capture_output=True, text=True
        )
        return probe.stdout.strip()

    first = Ledger.open(str(path))
    try:
        assert first.list_runs() == []  # a connection of the pool stays open, in WAL mode
        assert seen_from_another_process() == "in use"
        second = Ledger.open(str(path))
        try:
            assert seen_from_another_process() == "in use"
        finally:
            second.close()
        assert seen_from_another_process() == "in use"
    finally:
        first.close()
    assert seen_from_another_process() == "unused"


def test_a_run_ending_while_the_page_reads_it_is_not_shown_interrupted(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """The page reads a run from the ledger and from its own thread: a run whose thread ends
    between the two reads (the ledger read just before it recorded its end) is applying or
    done, never interrupted. The interleaving is forced: the run's thread "ends" right after
    the page's first ledger read of it."""
    web = make_web(emulator, tmp_path)
    try:
        ran_while_read(web)
    finally:
        web.client.close()
        web.workspace.close()


def ran_while_read(web: Web) -> None:
    sign_in(web, ANALYST)
    token = token_of(upload(web))
    answer = web.client.post(
        f"/runs/{token}/apply",
        data={"csrf_token": csrf(web), "on_existing": "skip", "participant": "last-agent"},
        follow_redirects=False,
    )
    run_id = int(answer.headers["location"].rsplit("/", 1)[1])
    assert wait_until_ended(web, run_id)["state"] == "done"
    workspace = web.workspace
    live = workspace._live[run_id]
    ended, live.result = live.result, None  # as while its thread was still running
    finished = workspace.get_run(run_id)
    before_the_end = dataclasses.replace(finished, finished=None, exit_code=None, counts=None)
    reads: list[int] = []

    def get_run(wanted: int) -> Any:
        reads.append(wanted)
        if len(reads) == 1:
            live.result = ended  # the thread records the end and returns, just now
            return before_the_end
        return finished

    workspace.get_run = get_run  # type: ignore[method-assign]
    view = workspace.run_view(run_id, fresh=True)
    assert not view.interrupted and view.state in ("applying", "done"), view
    assert workspace.run_view(run_id, fresh=True).state == "done"


def test_a_row_left_to_another_run_is_kept_as_that_run_had_it_when_this_one_ended(
    ledger_target: str,
) -> None:
    """Rows left because another run was changing their conversations, as the run's report
    keeps them when it ends: done by the other run (with a message saying so), or still to do
    (`pending`, also while the other run has the row's wrap-up in flight)."""
    ledger = Ledger.open(ledger_target)
    try:
        other = ledger.start_run(source="other", options={}, dry_run=False)
        run_id = ledger.start_run(source="this", options={}, dry_run=False)
        ledger.ingest(
            run_id,
            [InputRow(n, generated_conversation_id(n), "Sales") for n in (1, 2, 3, 4)],
        )
        for row, status in ((1, "applied"), (2, "in_flight"), (3, "pending")):
            conversation = generated_conversation_id(row)
            with ledger.engine.begin() as conn:
                conn.execute(
                    update(items)
                    .where(items.c.conversation_id == conversation)
                    .values(status=status, last_run_id=other)
                )
                conn.execute(
                    update(run_rows)
                    .where(run_rows.c.run_id == run_id, run_rows.c.row == row)
                    .values(held_by=other, message=f"left for a later run: run {other} was ...")
                )
        ledger.snapshot_outcomes(run_id)
        rows = {r.row: r for page in ledger.iter_results(run_id) for r in page}
        assert [rows[n].status for n in (1, 2, 3, 4)] == [
            "applied",
            "pending",
            "pending",
            "pending",
        ]
        assert rows[1].message == (
            f"run {other} was changing this conversation at the same time and did it; "
            "this run sent nothing for it"
        )
        assert rows[2].message.startswith("left for a later run") and rows[4].message == ""
        assert ledger.status_counts(run_id) == {"applied": 1, "pending": 3}
        assert ledger.held_counts(run_id) == {other: (3, 2)}
        # what the other run does later is not this run's report
        with ledger.engine.begin() as conn:
            conn.execute(update(items).values(status="applied"))
        assert ledger.status_counts(run_id) == {"applied": 1, "pending": 3}
    finally:
        ledger.close()
