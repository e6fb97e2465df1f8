"""The library layer both faces call (issue 12, "One application layer, two faces"):
`options` (parameters to RunOptions, the --job merge, the ledger a run uses), `logs`
(redaction, log files), `execution` (a run with a progress callback and a stop event, its
files written) and `checks` (the check command's lines), without click, tqdm or a web
framework. The command line over them is tested through the CLI elsewhere; here the library
is called as the page calls it, on real files, real SQLite ledgers and the emulator.
"""

from __future__ import annotations

import csv
import json
import logging
import pkgutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from wrapup_batch import execution
from wrapup_batch.api_settings import ApiSettings
from wrapup_batch.checks import Checklist, conversation_ids, run_checks
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, OAuthClient
from wrapup_batch.errors import AuthError, InputError, OptionError, UsageError
from wrapup_batch.ledger import DEFAULT_LEDGER, Ledger
from wrapup_batch.logs import REDACT, Redactor, setup_logging
from wrapup_batch.options import (
    SANDBOX_LEDGER,
    ledger_for,
    merge_job,
    parse_columns,
    run_options,
)
from wrapup_batch.runner import EXIT_STOPPED, Progress

ROOT = Path(__file__).resolve().parent.parent
RECLASSIFY = ROOT / "sample_data" / "reclassify.csv"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0)


def settings_of(emulator: EmulatorHandle) -> ApiSettings:
    return ApiSettings(emulator.base_url, emulator.client_id, emulator.client_secret, 10.0)


def run_params(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """The parameters `wrapup-batch run` gathers, by their command-line names."""
    params: dict[str, Any] = {
        "input_path": str(RECLASSIFY),
        "query": None,
        "query_file": None,
        "source_url": None,
        "columns": (),
        "encoding": None,
        "sheet": None,
        "ledger": str(tmp_path / "ledger.db"),
        "results": None,
        "summary_json": None,
        "dry_run": False,
        "on_existing": "skip",
        "participant": "last-agent",
        "rate_limit": 60000.0,
        "concurrency": 4,
        "max_runtime": None,
        "request_timeout": 30.0,
        "lookup": "conversations",
        "lookup_batch": 100,
        "sandbox": False,
    }
    params.update(changes)
    return params


# -- options ----------------------------------------------------------------------------------


def test_a_job_fills_in_only_what_was_not_given(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        'input = "in.csv"\nledger = "job-ledger.db"\nrate_limit = 120\nconcurrency = 2\n'
        'on_existing = "replace"\n[columns]\nconversation_id = "ConvId"\n',
        encoding="utf-8",
    )
    params = {
        "job": str(job),
        "input_path": None,
        "ledger": None,
        "rate_limit": 300.0,
        "concurrency": 8,
        "on_existing": "skip",
        "columns": ("wrapup_code=Code",),
    }
    merged = merge_job(params, given={"concurrency", "columns"})
    # given: kept; defaults: the job's
    assert merged["concurrency"] == 8
    assert merged["rate_limit"] == 120
    assert merged["on_existing"] == "replace"
    assert merged["ledger"] == str(tmp_path / "job-ledger.db")
    assert merged["input_path"] == str(tmp_path / "in.csv")
    # --column adds to the job's [columns], the command line's last
    assert merged["columns"] == ("conversation_id=ConvId", "wrapup_code=Code")
    assert params["rate_limit"] == 300.0  # the caller's parameters are left alone


def test_an_input_given_replaces_the_jobs_whole_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_URL", "postgresql://crm:s3cret-pw@db.example.com/crm")
    job = tmp_path / "job.toml"
    job.write_text(
        'source_url = "${CRM_URL}"\nquery = "SELECT conversation_id, wrapup_code FROM t"\n',
        encoding="utf-8",
    )
    base = {"job": str(job), "input_path": None, "query": None, "source_url": None}
    REDACT.secrets.clear()
    from_job = merge_job(base, given=set())
    assert from_job["query"].startswith("SELECT")
    assert from_job["source_url"].startswith("postgresql://")
    # the URL's password, known from the job, is hidden from then on
    assert "s3cret-pw" not in REDACT(f"connect to {from_job['source_url']} failed")

    own_file = merge_job({**base, "input_path": "mine.csv"}, given={"input_path"})
    assert own_file["input_path"] == "mine.csv"
    assert own_file["query"] is None and own_file["source_url"] is None
    own_query = merge_job({**base, "query": "SELECT 1"}, given={"query"})
    assert own_query["query"] == "SELECT 1"
    assert own_query["source_url"].startswith("postgresql://")  # the job's database still
    assert merge_job({"job": None, "x": 1}, given=set()) == {"job": None, "x": 1}


@pytest.mark.parametrize(
    ("params", "given", "expected"),
    [
        ({"ledger": None}, False, DEFAULT_LEDGER),
        ({"ledger": None, "sandbox": True}, False, SANDBOX_LEDGER),
        ({"ledger": "mine.db", "sandbox": True}, True, "mine.db"),  # --ledger: as given
        ({"ledger": "jobs/night.db", "sandbox": True}, False, "jobs/night-sandbox.db"),
        ({"ledger": "jobs/night", "sandbox": True}, False, "jobs/night-sandbox.db"),
        ({"ledger": "postgresql://h/db", "sandbox": True}, False, "postgresql://h/db"),
        ({"ledger": "jobs/night.db"}, False, "jobs/night.db"),
    ],
)
def test_a_sandbox_run_never_uses_a_real_orgs_ledger_unless_told(
    params: dict[str, Any], given: bool, expected: str
) -> None:
    assert ledger_for(params, given=given) == expected


def test_options_parse_durations_and_name_the_option_they_refuse() -> None:
    options = run_options({"max_runtime": "90m", "analytics_settle": "0", "rate_limit": 60.0})
    assert options.max_runtime == 5400.0
    assert options.analytics_settle == 0.0
    assert options.rate_limit == 60.0
    assert options.on_existing == "skip" and options.concurrency == 4  # defaults kept
    with pytest.raises(OptionError) as refused:
        run_options({"max_runtime": "soon"})
    assert refused.value.option == "--max-runtime"
    assert isinstance(refused.value, UsageError) and refused.value.exit_code == 2
    with pytest.raises(OptionError, match="--analytics-settle"):
        run_options({"analytics_settle": "-1h"})


def test_columns_map_known_names_only() -> None:
    assert parse_columns([" Conversation_ID = Conv Id ", "notes=Memo"]) == {
        "conversation_id": "Conv Id",
        "notes": "Memo",
    }
    with pytest.raises(OptionError, match="use NAME=HEADER"):
        parse_columns(["conversation_id"])
    with pytest.raises(OptionError, match="'queue' is not a column"):
        parse_columns(["queue=Q"])


# -- logs -------------------------------------------------------------------------------------


def test_the_redactor_hides_secrets_bearer_tokens_and_access_tokens() -> None:
    redact = Redactor()
    redact.add("client-secret-123")
    redact.add("abc")  # too short to be told apart from ordinary text: not a secret
    redact.add(None)
    text = redact(
        'secret client-secret-123 in Authorization: Bearer eyJ.abc-123 and {"access_token": '
        '"tok123"} and access_token=tok456&x=1 and abc'
    )
    assert "client-secret-123" not in text and "eyJ.abc-123" not in text
    assert "tok123" not in text and "tok456" not in text
    assert text.endswith("and abc")
    assert "Bearer ***" in text and "access_token=***&x=1" in text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_log_file_never_holds_a_known_secret(tmp_path: Path, log_format: str) -> None:
    log_file = tmp_path / "run.log"
    REDACT.secrets.clear()
    REDACT.add("hunter2-secret")
    try:
        setup_logging(str(log_file), False, log_format)
        logging.getLogger("wrapup_batch").info(
            "token request with hunter2-secret failed", extra={"source": "x hunter2-secret"}
        )
    finally:
        setup_logging(None, False)
        REDACT.secrets.clear()
    text = log_file.read_text("utf-8")
    assert "token request with *** failed" in text
    assert "hunter2-secret" not in text
    if log_format == "json":
        assert json.loads(text.splitlines()[-1])["source"] == "x ***"


def test_a_log_file_that_cannot_be_written_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot write the log to"):
        setup_logging(str(tmp_path / "no-such-folder" / "run.log"), False)


# -- execution --------------------------------------------------------------------------------


def test_a_batch_is_checked_before_anything_is_created(tmp_path: Path) -> None:
    params = run_params(tmp_path, input_path=str(tmp_path / "missing.csv"))
    with pytest.raises(InputError):
        execution.prepare(params)
    params = run_params(tmp_path, results=str(tmp_path / "no-such-folder" / "out.csv"))
    with pytest.raises(UsageError, match="--results"):
        execution.prepare(params)
    with pytest.raises(OptionError, match="--max-runtime"):
        execution.prepare(run_params(tmp_path, max_runtime="later"))
    assert not (tmp_path / "ledger.db").exists()


def test_a_run_reports_progress_writes_its_files_and_a_revert_undoes_it(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    results = tmp_path / "results.csv"
    summary = tmp_path / "summary.json"
    params = run_params(tmp_path, results=str(results), summary_json=str(summary))
    batch = execution.prepare(params)
    heard: list[Progress] = []
    outcome = execution.execute(
        batch, progress=heard.append, stop=threading.Event(), settings=settings_of(emulator)
    )
    result = outcome.result
    assert outcome.results_written and not outcome.unwritten
    assert outcome.ledger_display.endswith("ledger.db")
    assert {p.phase for p in heard} >= {"ingest", "apply", "done"}
    assert heard[-1].phase == "done" and heard[-1].run_id == result.run_id
    with results.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == result.rows > 0
    applied = sum(1 for r in rows if r["status"] == "applied")
    assert applied == result.counts["applied"] > 0
    assert json.loads(summary.read_text("utf-8"))["run_id"] == result.run_id

    revert = execution.prepare(
        {**params, "results": None, "summary_json": None}, revert_of=result.run_id
    )
    undone = execution.execute(revert, settings=settings_of(emulator))
    book = Ledger.open(params["ledger"], create=False)
    try:
        run = book.get_run(undone.result.run_id)
    finally:
        book.close()
    assert run is not None and run.kind == "revert"
    assert (
        undone.result.counts.get("applied", 0) + undone.result.counts.get("not_revertible", 0)
        == applied
    )


def test_a_stop_set_before_the_work_stops_the_run_resumably(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    stop = threading.Event()
    stop.set()
    outcome = execution.execute(
        execution.prepare(run_params(tmp_path)), stop=stop, settings=settings_of(emulator)
    )
    assert outcome.result.exit_code == EXIT_STOPPED
    assert outcome.result.counts.get("applied", 0) == 0
    assert emulator.stats()["post_attempts"] == 0


def test_reading_codes_without_the_permission_names_it(emulator: EmulatorHandle) -> None:
    emulator.state.clients["no-codes"] = OAuthClient(
        client_id="no-codes",
        client_secret="no-codes-secret",
        name="no-codes",
        division_ids=frozenset({"d0000001-0000-4000-8000-000000000000"}),
        permissions=frozenset({"conversation:communication:view"}),
    )
    api = ApiSettings(emulator.base_url, "no-codes", "no-codes-secret", 10.0)
    with pytest.raises(AuthError, match="routing:wrapupCode:view") as refused:
        execution.read_codes(execution.client(api, 60000.0))
    assert refused.value.exit_code == 3


# -- checks -----------------------------------------------------------------------------------


def test_the_checks_write_their_lines_through_the_echo_they_are_given(
    emulator: EmulatorHandle,
) -> None:
    lines: list[str] = []
    checks = Checklist(lines.append)
    conversation = conversation_ids(["C0000001-0000-4000-8000-000000000000"], "--conversation")
    assert conversation == ["c0000001-0000-4000-8000-000000000000"]
    run_checks(checks, settings_of(emulator), 60000.0, conversation=conversation[0])
    assert lines[0].startswith("✓ credentials: OAuth client")
    assert any(line.startswith("✓ wrap-up codes:") for line in lines)
    assert any(line.startswith("✓ conversation c0000001") for line in lines)
    assert checks.finish() == 0
    assert lines[-1].endswith("not checked (the lines marked -)")
    with pytest.raises(UsageError, match="--lookup-compare 'nope' is not a conversation id"):
        conversation_ids(["c0000001-0000-4000-8000-000000000000,nope"], "--lookup-compare")


def test_refused_credentials_end_the_checks_with_exit_3(emulator: EmulatorHandle) -> None:
    lines: list[str] = []
    checks = Checklist(lines.append)
    api = ApiSettings(emulator.base_url, emulator.client_id, "not-the-secret", 10.0)
    run_checks(checks, api, 60000.0)
    assert len(lines) == 1 and lines[0].startswith("✗ credentials:")
    assert "not-the-secret" not in lines[0]
    assert checks.finish() == 3


# -- what the library imports -----------------------------------------------------------------

FACE_MODULES = ("click", "tqdm", "starlette", "jinja2", "uvicorn", "sse_starlette")


def loaded_by(imports: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after these imports."""
    code = (
        f"import sys\n{imports}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(done.stdout.split())


def test_the_application_layer_imports_no_face_and_no_sdk() -> None:
    loaded = loaded_by(
        "import wrapup_batch.execution, wrapup_batch.logs, wrapup_batch.options\n"
        "import wrapup_batch.checks, wrapup_batch.app, wrapup_batch.runner"
    )
    assert "wrapup_batch" in loaded
    assert loaded.isdisjoint(FACE_MODULES), sorted(loaded & set(FACE_MODULES))
    assert "PureCloudPlatformClientV2" not in loaded  # only once a run needs the API


def test_no_library_module_imports_click_tqdm_or_the_web_framework() -> None:
    import wrapup_batch

    library = [
        module.name
        for module in pkgutil.walk_packages(wrapup_batch.__path__, "wrapup_batch.")
        if not module.name.startswith(("wrapup_batch.cli", "wrapup_batch.web"))
        and module.name != "wrapup_batch.__main__"
    ]
    assert {"wrapup_batch.execution", "wrapup_batch.emulator.app"} <= set(library)
    loaded = loaded_by("\n".join(f"import {name}" for name in library))
    assert loaded.isdisjoint(FACE_MODULES), sorted(loaded & set(FACE_MODULES))
    assert {"click", "tqdm"} <= loaded_by("import wrapup_batch.cli")
