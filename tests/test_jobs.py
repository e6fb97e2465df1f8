"""Job files: `wrapup-batch run --job FILE.toml`, and the shipped jobs/ run in the sandbox.

`load_job` is checked on real files in tmp_path; runs go through the CLI (CliRunner) against
the emulator on loopback, or `--sandbox`, with real SQLite ledgers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from test_run_cli import (
    CRM,
    NIGHTLY_EXPECTED,
    POST_WRAPUP,
    RECLASSIFY,
    SAMPLE_APPLIED,
    SAMPLE_EXPECTED,
    check_each_posted_once,
    comm,
    conv,
    env_for,
    query,
    read_results,
    write_csv,
)

from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle
from wrapup_batch.errors import UsageError
from wrapup_batch.jobs import JOB_KEYS, load_job

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0)


@pytest.fixture(autouse=True)
def no_job_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CRM_DB_URL", "STATE_DIRECTORY", "LOGS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


def write_job(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: str | Path, env: Mapping[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(
        main, [str(a) for a in args], env=dict(env or {}), catch_exceptions=False
    )


# -- load_job ------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_job_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "jobs"
    write_job(
        folder / "nightly.toml",
        """
input = "../data/in.csv"
ledger = "state/ledger.db"
results = "out/results.csv"
summary_json = "/abs/summary.json"
log_file = "nightly.log"
encoding = "latin-1"
sheet = 2
dry_run = true
on_existing = "replace"
participant = "all-agents"
rate_limit = 1200
concurrency = 8
max_runtime = "90m"
request_timeout = 12.5
lookup = "analytics"
lookup_batch = 50
analytics_settle = "30m"
sandbox = false
log_format = "json"
quiet = true
verbose = false

[columns]
conversation_id = "Conversation ID"
notes = "Comment"
""",
    )
    monkeypatch.chdir(tmp_path)  # the working directory does not matter

    job = load_job(Path("etc/jobs/nightly.toml"), {})

    assert job.params == {
        "input_path": str(tmp_path / "etc" / "data" / "in.csv"),
        "ledger": str(folder / "state" / "ledger.db"),
        "results": str(folder / "out" / "results.csv"),
        "summary_json": "/abs/summary.json",
        "log_file": str(folder / "nightly.log"),
        "encoding": "latin-1",
        "sheet": "2",
        "dry_run": True,
        "on_existing": "replace",
        "participant": "all-agents",
        "rate_limit": 1200.0,
        "concurrency": 8,
        "max_runtime": 5400.0,
        "request_timeout": 12.5,
        "lookup": "analytics",
        "lookup_batch": 50,
        "analytics_settle": 1800.0,
        "sandbox": False,
        "log_format": "json",
        "quiet": True,
        "verbose": False,
        "columns": ("conversation_id=Conversation ID", "notes=Comment"),
    }
    assert job.secrets == ()


def test_sqlite_urls_resolve_against_the_job_folder_and_others_are_kept(tmp_path: Path) -> None:
    path = write_job(
        tmp_path / "jobs" / "q.toml",
        """
source_url = "sqlite:///../crm.sqlite"
query = "SELECT 1"
ledger = "sqlite:///ledger.db"
""",
    )

    job = load_job(path, {})

    assert job.params["source_url"] == f"sqlite:///{tmp_path / 'crm.sqlite'}"
    assert job.params["ledger"] == f"sqlite:///{tmp_path / 'jobs' / 'ledger.db'}"
    assert job.params["query"] == "SELECT 1"

    absolute = write_job(
        tmp_path / "abs.toml",
        'source_url = "sqlite:////data/crm.sqlite"\nquery_file = "q.sql"\n'
        'ledger = "postgresql://u@db/ledger"\n',
    )
    job = load_job(absolute, {})
    assert job.params["source_url"] == "sqlite:////data/crm.sqlite"
    assert job.params["query_file"] == str(tmp_path / "q.sql")
    assert job.params["ledger"] == "postgresql://u@db/ledger"


def test_environment_variables_are_expanded_and_passwords_remembered(tmp_path: Path) -> None:
    path = write_job(
        tmp_path / "job.toml",
        """
source_url = "${CRM_DB_URL}"
query = "SELECT * FROM t WHERE x = '${NOT_EXPANDED}'"
ledger = "${STATE_DIRECTORY:-/var/lib/wrapup-batch}/ledger.db"
results = "${STATE_DIRECTORY:-/var/lib/wrapup-batch}/results.csv"
log_file = "${LOGS_DIRECTORY:-logs}/x.log"
""",
    )
    env = {
        "CRM_DB_URL": "postgresql+psycopg://wrapup:pa$$w0rd@crm-db:5432/crm",
        "LOGS_DIRECTORY": "",  # empty counts as unset: the default applies
    }

    job = load_job(path, env)

    assert job.params["source_url"] == "postgresql+psycopg://wrapup:pa$$w0rd@crm-db:5432/crm"
    assert job.params["query"] == "SELECT * FROM t WHERE x = '${NOT_EXPANDED}'"
    assert job.params["ledger"] == "/var/lib/wrapup-batch/ledger.db"
    assert job.params["results"] == "/var/lib/wrapup-batch/results.csv"
    assert job.params["log_file"] == str(tmp_path / "logs" / "x.log")
    assert job.secrets == ("pa$$w0rd",)

    job = load_job(path, {**env, "STATE_DIRECTORY": str(tmp_path / "state")})
    assert job.params["ledger"] == str(tmp_path / "state" / "ledger.db")


def _error(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> str:
    path = write_job(tmp_path / "job.toml", text)
    with pytest.raises(UsageError) as caught:
        load_job(path, env or {})
    assert caught.value.exit_code == 2
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'rate_limit = "fast"',
            "key 'rate_limit' must be a number (requests per minute, at least 1); "
            'got the string "fast"',
        ),
        ("concurrency = 0", "key 'concurrency' must be an integer from 1 to 64; got the integer 0"),
        (
            "concurrency = 2.5",
            "key 'concurrency' must be an integer from 1 to 64; got the number 2.5",
        ),
        ("lookup_batch = true", "key 'lookup_batch' must be an integer from 1 to 100; got true"),
        (
            'analytics_settle = "soon"',
            'key \'analytics_settle\' must be a duration: a string such as "30m" or "2h", or '
            'a number of seconds (0 allowed); got the string "soon"',
        ),
        (
            'dry_run = "yes"',
            "key 'dry_run' must be a boolean (true or false); got the string \"yes\"",
        ),
        (
            'on_existing = "overwrite"',
            'key \'on_existing\' must be a string, one of "skip", "replace"; '
            'got the string "overwrite"',
        ),
        (
            'max_runtime = "soon"',
            'key \'max_runtime\' must be a duration: a string such as "45s", "90m" or "2h", '
            'or a number of seconds; got the string "soon"',
        ),
        (
            "request_timeout = 0",
            "key 'request_timeout' must be a number (seconds, at least 0.1); got the integer 0",
        ),
        (
            "source_url = 5",
            "key 'source_url' must be a string: a SQLAlchemy URL such as "
            '"sqlite:///crm.sqlite" or "${CRM_DB_URL}"; got an integer',
        ),
        (
            'source_url = ["postgresql://u:secret@db/x"]',
            "key 'source_url' must be a string: a SQLAlchemy URL such as "
            '"sqlite:///crm.sqlite" or "${CRM_DB_URL}"; got an array',
        ),
        (
            'input = ["a.csv"]',
            "key 'input' must be a string: a file path (relative to the job file's folder); "
            "got an array",
        ),
        (
            'columns = "ConvId"',
            "key 'columns' must be a table of column = \"header\", e.g. [columns] then "
            'conversation_id = "ConvId"; got the string "ConvId"',
        ),
        (
            "[columns]\nwrapup_code = 3",
            "key 'columns.wrapup_code' must be a string (the header of that column in the "
            "input); got the integer 3",
        ),
        (
            '[columns]\ncode = "Disposition"',
            "key 'columns.code' is not a column this tool reads; use conversation_id, "
            "wrapup_code, notes or agent_id",
        ),
        (
            "sheet = -1",
            "key 'sheet' must be a sheet name (a string) or a 0-based sheet index (an integer); "
            "got the integer -1",
        ),
        (
            "log_format = 'xml'",
            'key \'log_format\' must be a string, one of "text", "json"; got the string "xml"',
        ),
    ],
)
def test_wrong_types_name_the_file_the_key_and_the_type(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert _error(tmp_path, text) == f"job file {tmp_path / 'job.toml'}: {expected}"


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    known = ", ".join(sorted(JOB_KEYS))
    assert _error(tmp_path, "concurency = 4") == (
        f"job file {tmp_path / 'job.toml'}: unknown key 'concurency'; did you mean "
        f"'concurrency'? (known keys: {known})"
    )
    assert _error(tmp_path, "[log]\nformat = 'json'") == (
        f"job file {tmp_path / 'job.toml'}: unknown key 'log' (known keys: {known})"
    )
    assert _error(tmp_path, "client_secret = 'x'").startswith(
        f"job file {tmp_path / 'job.toml'}: unknown key 'client_secret' (known keys: "
    )


def test_environment_variable_errors(tmp_path: Path) -> None:
    where = f"job file {tmp_path / 'job.toml'}"
    assert _error(tmp_path, 'source_url = "${CRM_DB_URL}"\nquery = "SELECT 1"') == (
        f"{where}: key 'source_url' refers to ${{CRM_DB_URL}}, which is not set in the "
        "environment; set CRM_DB_URL (for cron or systemd: in the job's environment file), or "
        "write ${CRM_DB_URL:-default}"
    )
    assert _error(tmp_path, 'ledger = "${STATE_DIRECTORY/ledger.db"') == (
        f"{where}: key 'ledger' has a malformed ${{...}}: use ${{NAME}} or ${{NAME:-default}}, "
        "where NAME is letters, digits and _"
    )


def test_file_level_errors(tmp_path: Path) -> None:
    where = f"job file {tmp_path / 'job.toml'}"
    assert _error(tmp_path, "rate_limit = = 3").startswith(f"{where}: is not valid TOML: ")
    assert _error(tmp_path, 'input = "a.csv"\nquery = "SELECT 1"') == (
        f"{where}: give either input or query/query_file, not both"
    )
    assert _error(tmp_path, 'query = "SELECT 1"\nquery_file = "q.sql"') == (
        f"{where}: give either query or query_file, not both"
    )
    with pytest.raises(UsageError) as caught:
        load_job(tmp_path / "missing.toml", {})
    assert str(caught.value) == (
        f"job file {tmp_path / 'missing.toml'}: cannot read it: No such file or directory"
    )


def test_the_shipped_job_files_load() -> None:
    shipped = sorted(JOBS.glob("*.toml"))
    assert [p.name for p in shipped] == ["nightly_backfill.toml", "reclassify_csv.toml"]
    nightly = load_job(JOBS / "nightly_backfill.toml", {})
    assert nightly.params["source_url"] == f"sqlite:///{ROOT / 'sample_data' / 'crm.sqlite'}"
    assert nightly.params["ledger"] == str(JOBS / "nightly-ledger.db")
    assert nightly.params["max_runtime"] == 7200.0
    assert "FROM wrapup_backfill" in nightly.params["query"]
    reclassify = load_job(JOBS / "reclassify_csv.toml", {"STATE_DIRECTORY": "/srv/w"})
    assert reclassify.params["input_path"] == str(RECLASSIFY)
    assert reclassify.params["ledger"] == "/srv/w/reclassify-ledger.db"


def test_the_systemd_and_cron_examples_run_a_shipped_job() -> None:
    service = (JOBS / "wrapup-batch-nightly.service").read_text(encoding="utf-8")
    timer = (JOBS / "wrapup-batch-nightly.timer").read_text(encoding="utf-8")
    crontab = (JOBS / "crontab.example").read_text(encoding="utf-8")
    settings = dict(
        line.split("=", 1) for line in service.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["ExecStart"].endswith("run --job /opt/wrapup-batch/jobs/nightly_backfill.toml")
    assert settings["EnvironmentFile"] == "/etc/wrapup-batch/env"
    assert settings["SuccessExitStatus"] == "1 4"
    assert settings["StateDirectory"] == "wrapup-batch"
    assert settings["LogsDirectory"] == "wrapup-batch"
    assert "install -m 600 /dev/null /etc/wrapup-batch/env" in service
    assert "OnCalendar=" in timer and "WantedBy=timers.target" in timer
    entries = [line for line in crontab.splitlines() if line and line[0].isdigit()]
    assert len(entries) == 1
    assert entries[0].endswith("run --job /opt/wrapup-batch/jobs/nightly_backfill.toml")
    assert ". /etc/wrapup-batch/env" in entries[0]
    for text in (service, crontab):
        assert "SECRET=..." in text  # a placeholder, never a value


# -- run --job ------------------------------------------------------------------------------------


def test_run_from_a_job_file_then_flags_override_it(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "jobs"
    shutil.copy(RECLASSIFY, tmp_path / "reclassify.csv")
    job = write_job(
        folder / "analyst.toml",
        """
input = "../reclassify.csv"
ledger = "ledger.db"
results = "results.csv"
summary_json = "summary.json"
dry_run = true
rate_limit = 6000
quiet = true
""",
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = env_for(emulator)

    dry = cli("run", "--job", job, env=env)

    assert dry.exit_code == 1, dry.stderr
    rows, _ = read_results(folder / "results.csv")
    assert [r["status"] for r in rows].count("would_apply") == 9
    assert json.loads((folder / "summary.json").read_text("utf-8"))["dry_run"] is True
    assert emulator.stats()["post_attempts"] == 0
    assert "dry run: nothing was written" in dry.stderr
    assert "read 22 rows" not in dry.stderr  # quiet, from the job file
    assert list(elsewhere.iterdir()) == []

    real = cli("run", "--job", job, "--no-dry-run", "--results", "mine.csv", env=env)

    assert real.exit_code == 1, real.stderr
    rows, _ = read_results(elsewhere / "mine.csv")  # a flag's path: from the working directory
    assert {int(r["row"]): r["status"] for r in rows} == {
        n: e.status for n, e in SAMPLE_EXPECTED.items()
    }
    check_each_posted_once(emulator, SAMPLE_APPLIED)
    runs = query(folder / "ledger.db", "SELECT dry_run, exit_code FROM runs ORDER BY id")
    assert runs == [{"dry_run": 1, "exit_code": 1}, {"dry_run": 0, "exit_code": 1}]
    rows, _ = read_results(folder / "results.csv")  # the job's results file: untouched
    assert [r["status"] for r in rows].count("would_apply") == 9


def test_an_input_on_the_command_line_replaces_the_job_query(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    crm = shutil.copy(CRM, tmp_path / "crm.sqlite")
    job = write_job(
        tmp_path / "job.toml",
        f'source_url = "sqlite:///{crm}"\nquery = "SELECT * FROM wrapup_backfill"\n'
        'ledger = "ledger.db"\nquiet = true\nrate_limit = 6000\n',
    )
    source = write_csv(
        tmp_path / "one.csv", ["conversation_id", "wrapup_code"], [[conv(4), "Sales"]]
    )

    run = cli("run", "--job", job, source, "--results", tmp_path / "out.csv", env=env_for(emulator))

    assert run.exit_code == 0, run.stderr
    rows, _ = read_results(tmp_path / "out.csv")
    assert [(r["conversation_id"], r["status"]) for r in rows] == [(conv(4), "applied")]
    assert query(tmp_path / "ledger.db", "SELECT source FROM runs") == [{"source": str(source)}]


def test_job_columns_and_command_line_columns_combine(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "export.csv",
        ["ConvId", "Disposition", "Comment"],
        [[conv(1), "Support - Technical", "from the export"]],
    )
    job = write_job(
        tmp_path / "job.toml",
        'input = "export.csv"\nledger = "ledger.db"\nquiet = true\n'
        '[columns]\nconversation_id = "ConvId"\nwrapup_code = "Disposition"\n',
    )

    run = cli("run", "--job", job, "--column", "notes=Comment", env=env_for(emulator))

    assert run.exit_code == 0, run.stderr
    assert emulator.state.wrapups[comm(1, 3)].notes == "from the export"
    assert source.exists()


def test_a_bad_job_file_exits_2_before_any_request(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    job = write_job(tmp_path / "job.toml", 'input = "in.csv"\nconcurrency = "four"\n')

    run = cli("run", "--job", job, env=env_for(emulator))

    assert run.exit_code == 2
    assert run.stderr == (
        f"Error: job file {job}: key 'concurrency' must be an integer from 1 to 64; got the "
        'string "four"\n'
    )
    assert emulator.stats()["requests"] == {}
    assert not (tmp_path / "wrapup-ledger.db").exists()

    missing = cli("run", "--job", tmp_path / "nope.toml", env=env_for(emulator))
    assert missing.exit_code == 2
    assert missing.stderr == (
        f"Error: job file {tmp_path / 'nope.toml'}: cannot read it: No such file or directory\n"
    )


def test_a_password_from_the_environment_is_never_shown(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    password = "Sup3r-s3cret-pw"
    job = write_job(
        tmp_path / "job.toml",
        'source_url = "${CRM_DB_URL}"\nquery = "SELECT * FROM cases"\nledger = "ledger.db"\n'
        'log_file = "run.log"\nlog_format = "json"\n',
    )
    env = env_for(emulator, CRM_DB_URL=f"postgresql://wrapup:{password}@127.0.0.1:9/crm")

    run = cli("run", "--job", job, env=env)

    assert run.exit_code == 2
    assert "postgresql://wrapup:***@127.0.0.1:9/crm" in run.stderr
    outputs = [run.stdout, run.stderr, (tmp_path / "run.log").read_text("utf-8")]
    outputs += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.glob("ledger.db*")]
    for text in outputs:
        assert password not in text
    assert query(tmp_path / "ledger.db", "SELECT source FROM runs") == [
        {"source": "query on postgresql://wrapup:***@127.0.0.1:9/crm"}
    ]
    assert emulator.stats()["requests"] == {}

    unset = cli("run", "--job", job, env=env_for(emulator, CRM_DB_URL=None))
    assert unset.exit_code == 2
    assert unset.stderr.startswith(
        f"Error: job file {job}: key 'source_url' refers to ${{CRM_DB_URL}}, which is not set"
    )


# -- the shipped jobs, in the sandbox and on the emulator --------------------------------------


def test_the_nightly_job_runs_in_the_sandbox_from_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    env = {"STATE_DIRECTORY": str(tmp_path), "LOGS_DIRECTORY": str(tmp_path)}
    args = ("run", "--job", "jobs/nightly_backfill.toml", "--sandbox", "--rate-limit", "6000")

    run = cli(*args, env=env)

    assert run.exit_code == 1, run.stderr
    rows, _ = read_results(tmp_path / "nightly-results.csv")
    assert {r["conversation_id"]: r["status"] for r in rows} == NIGHTLY_EXPECTED
    summary = json.loads((tmp_path / "nightly-summary.json").read_text("utf-8"))
    assert (summary["run_id"], summary["exit_code"], summary["wrapup_posts"]) == (1, 1, 9)
    records = [
        json.loads(line) for line in (tmp_path / "nightly.log").read_text("utf-8").splitlines()
    ]
    outcomes = {r["conversation_id"]: r["status"] for r in records if "row" in r}
    assert outcomes == NIGHTLY_EXPECTED
    assert all(r["run_id"] == 1 for r in records if "row" in r)

    # The next night: a fresh sandbox, the same ledger; nothing is written again.
    rerun = cli(*args, env=env)
    assert rerun.exit_code == 1, rerun.stderr
    summary = json.loads((tmp_path / "nightly-summary.json").read_text("utf-8"))
    assert (summary["run_id"], summary["wrapup_posts"]) == (2, 0)
    assert not any(JOBS.glob("nightly-*")) and not (JOBS / "nightly.log").exists()


def test_the_reclassify_job_runs_in_the_sandbox(tmp_path: Path) -> None:
    run = cli(
        "run", "--job", JOBS / "reclassify_csv.toml", "--sandbox", "--rate-limit", "6000", "-q",
        env={"STATE_DIRECTORY": str(tmp_path)},
    )  # fmt: skip

    assert run.exit_code == 1, run.stderr
    assert run.stderr.startswith("run 1: finished; 10 row(s) need attention")
    rows, _ = read_results(tmp_path / "reclassify-results.csv")
    assert {int(r["row"]): r["status"] for r in rows} == {
        n: e.status for n, e in SAMPLE_EXPECTED.items()
    }
    assert (tmp_path / "reclassify-summary.json").exists()
    # a sandbox run keeps the job's ledger for the org: it writes one of its own beside it
    assert (tmp_path / "reclassify-ledger-sandbox.db").exists()
    assert not (tmp_path / "reclassify-ledger.db").exists()


def test_the_nightly_job_writes_to_the_org_named_by_the_environment(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    env = env_for(emulator, STATE_DIRECTORY=str(tmp_path), LOGS_DIRECTORY=str(tmp_path))

    run = cli("run", "--job", JOBS / "nightly_backfill.toml", "--rate-limit", "6000", env=env)

    assert run.exit_code == 1, run.stderr
    stats = emulator.stats(detail=True)
    assert set(stats["posts_per_communication"].values()) == {1}
    assert len(stats["posts_per_communication"]) == 9
    assert stats["requests"][POST_WRAPUP] == {"202": 9}
    assert emulator.state.wrapups[comm(1, 3)].notes == "Password reset"
