"""Security (issue 5): secrets stay secret, TLS is verified, http only on loopback, CSV cells
cannot run, and the SQL source is read-only.

- The client secret and every access token the emulator issued (recorded as it issues them) are
  searched for, in every form a leak could take (as is, Basic-auth base64, "Bearer ..."), in a
  run's stdout, stderr, --log-file at debug level, the ledger's bytes (with its -wal), the
  results, the summary JSON, in exception messages and tracebacks, and in `repr()` of the
  config objects. The run has faults, dropped connections, 401s from expiring tokens and a
  POST that keeps failing: the error paths, where an Authorization header could slip into a
  message. (Another test module covers `--log-format json`.)
- TLS: a real HTTPS server on loopback with a self-signed certificate is refused, also with
  the SDK's own `verify_ssl` switched off and the usual "insecure" environment variables set.
- Plain http: refused for any host that is not loopback, before any network call; accepted for
  127.0.0.1, localhost and [::1].
- Results and `report` CSVs neutralise formula cells; Genesys gets the notes as written.
- The SQL source: a DELETE/UPDATE (even one RETURNING rows, even after a SELECT) fails and the
  database is unchanged; the query reaches the database exactly as given.
"""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
import urllib3
from click.testing import CliRunner
from PureCloudPlatformClientV2 import Configuration
from test_run_cli import (
    CRM,
    comm,
    conv,
    env_for,
    fast_retries,
    invoke,
    query,
    read_results,
    write_csv,
)

from wrapup_batch.api_settings import ApiSettings, settings_from_env
from wrapup_batch.cli import main
from wrapup_batch.emulator import EmulatorConfig, EmulatorHandle, generated_conversation_id
from wrapup_batch.errors import ApiError, AuthError, UsageError
from wrapup_batch.genesys import GenesysClient, Transport
from wrapup_batch.throttle import Throttle

__all__ = ["fast_retries"]  # a fixture, used by name

ROWS = 40


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(rate_limit=0, generate=ROWS, random_seed=3)


@pytest.fixture
def issued_tokens(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every access token the emulator hands out from now on (expired ones are forgotten by
    the emulator, so they are recorded as they are issued)."""
    tokens: list[str] = []
    issue = emulator.state.issue_token

    def recording(client: Any) -> str:
        token = issue(client)
        tokens.append(token)
        return token

    monkeypatch.setattr(emulator.state, "issue_token", recording)
    return tokens


def leak_forms(secret: str, client_id: str, tokens: list[str]) -> list[str]:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return [secret, basic, *tokens, *(f"Bearer {t}" for t in tokens)]


def assert_no_leak(where: str, text: str | bytes, forms: list[str]) -> None:
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    for form in forms:
        assert form.encode() not in data, f"{where} holds a secret ({form[:6]}...)"


# -- secrets ---------------------------------------------------------------------------------------


def test_secret_and_tokens_appear_nowhere_after_a_run_full_of_faults_and_401s(
    emulator: EmulatorHandle, tmp_path: Path, issued_tokens: list[str], fast_retries: None
) -> None:
    emulator.config.update(
        {
            "token_ttl": 1,  # a new token every second: 401s, and more tokens to leak
            "latency_ms": 30,
            "fault_rate": 0.1,
            "drop_rate": 0.05,
            "ghost_write_rate": 0.05,
            "failing_conversations": [generated_conversation_id(3)],
        }
    )
    rows = [[generated_conversation_id(i), "Sales", f"note {i}"] for i in range(ROWS)]
    source = write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code", "notes"], rows)
    log = tmp_path / "run.log"
    summary = tmp_path / "summary.json"

    run = invoke(
        emulator,
        tmp_path,
        source,
        "-v",
        "--log-file",
        log,
        "--summary-json",
        summary,
        "--request-timeout",  # a POST whose connection dropped waits this long to read back
        "1",
    )

    assert run.exit_code == 1, run.stderr  # the failing conversation
    stats = emulator.stats()
    assert len(issued_tokens) >= 2 and stats["faults"] > 0 and stats["dropped"] > 0
    assert any("401" in by_status for by_status in stats["requests"].values())
    logged = log.read_text(encoding="utf-8")
    assert "retrying" in logged and "access token refused (401)" in logged  # error paths taken
    forms = leak_forms(emulator.client_secret, emulator.client_id, issued_tokens)
    assert_no_leak("stdout", run.stdout, forms)
    assert_no_leak("stderr", run.stderr, forms)
    assert_no_leak("the log file", logged, forms)
    assert_no_leak("the summary", summary.read_bytes(), forms)
    assert_no_leak("the results", (tmp_path / "out.csv").read_bytes(), forms)
    for part in tmp_path.glob("ledger.db*"):
        assert_no_leak(part.name, part.read_bytes(), forms)
    messages = query(tmp_path / "ledger.db", "SELECT message FROM items WHERE message != ''")
    assert messages  # failures were recorded with their messages, and none holds a secret
    assert_no_leak("the ledger's messages", json.dumps(messages), forms)


def test_a_refused_fresh_token_aborts_without_showing_it(
    emulator: EmulatorHandle, tmp_path: Path, issued_tokens: list[str]
) -> None:
    emulator.config.token_ttl = 0  # every token is dead on arrival: 401, new token, 401 again
    source = write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code"], [[conv(1), "x"]])
    log = tmp_path / "run.log"

    run = invoke(emulator, tmp_path, source, "-v", "--log-file", log)

    assert run.exit_code == 3, run.stderr
    assert "refused a fresh access token (401)" in run.stderr
    assert len(issued_tokens) == 2
    forms = leak_forms(emulator.client_secret, emulator.client_id, issued_tokens)
    for where, text in (("output", run.stdout + run.stderr), ("log", log.read_text("utf-8"))):
        assert_no_leak(where, text, forms)


def _failure_text(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def test_exception_messages_and_reprs_hold_no_secret(
    emulator: EmulatorHandle, issued_tokens: list[str]
) -> None:
    secret = emulator.client_secret
    settings = ApiSettings(emulator.base_url, emulator.client_id, secret, timeout=2.0)
    assert secret not in repr(settings) and secret not in str(settings)
    client = GenesysClient(settings, throttle=Throttle(6000), max_attempts=2, backoff_initial=0)
    client.authenticate()
    assert secret not in repr(client) and issued_tokens[0] not in repr(client)
    failures: list[BaseException] = []

    wrong = ApiSettings(emulator.base_url, emulator.client_id, secret + "-wrong", timeout=2.0)
    with pytest.raises(AuthError) as refused:
        GenesysClient(wrong).authenticate()
    failures.append(refused.value)
    emulator.config.drop_rate = 1.0  # the connection dies with the bearer token on the wire
    with pytest.raises(ApiError) as dropped:
        client.get_conversation(conv(1))
    failures.append(dropped.value)
    emulator.config.drop_rate = 0.0
    emulator.config.failing_conversations = {conv(1)}
    with pytest.raises(ApiError) as failing:
        client.post_wrapup(
            "calls", conv(1), "a0000001-0000-4000-8000-000000000003", comm(1, 3), code_id="x"
        )
    failures.append(failing.value)
    emulator.config.token_ttl = 0
    client.authenticate()  # a token that is already dead: 401, a new one, 401 again
    with pytest.raises(AuthError) as dead:
        client.get_conversation(conv(1))
    failures.append(dead.value)

    assert [type(f).__name__ for f in failures] == [
        "AuthError",
        "TransientApiError",
        "TransientApiError",
        "AuthError",
    ]
    forms = [*leak_forms(secret, emulator.client_id, issued_tokens), secret + "-wrong"]
    for failure in failures:
        assert_no_leak(f"{type(failure).__name__}", _failure_text(failure), forms)


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def https_server(self_signed: tuple[Path, Path]) -> Iterator[tuple[str, list[str]]]:
    """An HTTPS server on loopback with a certificate no CA signed; it records each request."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"access_token": "t", "expires_in": 60}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_transport_requires_certificates_from_known_authorities() -> None:
    transport = Transport(timeout=5.0, throttle=None, pool_size=2)
    assert transport.pool.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
    assert transport.pool.connection_pool_kw["ca_certs"] == certifi.where()
    settings = ApiSettings("https://api.mypurecloud.com", "id", "secret")
    client = GenesysClient(settings)
    assert client.api_client.http_client.pool.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"


def test_a_self_signed_certificate_is_refused_even_with_verification_switched_off_elsewhere(
    emulator: EmulatorHandle,
    tmp_path: Path,
    https_server: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = https_server
    # The SDK's own switch, and the environment variables other HTTP stacks read: none of them
    # may turn verification off behind the user's back.
    monkeypatch.setattr(Configuration(), "verify_ssl", False)
    source = write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code"], [[conv(1), "x"]])
    env = env_for(
        emulator,
        GENESYSCLOUD_API_HOST=url,
        PYTHONHTTPSVERIFY="0",
        CURL_CA_BUNDLE="",
        REQUESTS_CA_BUNDLE="",
    )

    run = invoke(emulator, tmp_path, source, env=env)

    assert run.exit_code == 3, run.stderr
    assert f"TLS certificate verification failed for {url.removeprefix('https://')}" in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert seen == []  # the handshake failed: no request was ever read by the server


# -- plain http only on loopback -------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fails any connection urllib3 would open (a guard: the emulator cannot observe a call to
    a host that is not it)."""
    attempts: list[Any] = []

    def refuse(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        raise AssertionError(f"a connection to {address} was attempted")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", refuse)
    return attempts


@pytest.mark.parametrize(
    "host",
    [
        "http://example.com",
        "http://api.mypurecloud.com",
        "http://localhost.example.com:8642",
        "http://127.0.0.1.nip.io:8642",
        "http://localhost@example.com",
        "http://10.0.0.7:8642",
        "http://0.0.0.0:8642",
        "http://[::ffff:8.8.8.8]:8642",
    ],
)
def test_plain_http_to_a_host_that_is_not_loopback_is_refused_before_any_call(
    emulator: EmulatorHandle, tmp_path: Path, no_network: list[Any], host: str
) -> None:
    source = write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code"], [[conv(1), "x"]])

    run = invoke(emulator, tmp_path, source, env=env_for(emulator, GENESYSCLOUD_API_HOST=host))

    assert run.exit_code == 2, run.stderr
    assert run.stderr.splitlines() == [
        f"Error: GENESYSCLOUD_API_HOST={host!r} uses plain http to a host that is not this "
        "machine; Genesys Cloud is only reached over https (plain http is for the local emulator)"
    ]
    assert no_network == []
    with pytest.raises(UsageError):
        settings_from_env({**emulator.env(), "GENESYSCLOUD_API_HOST": host})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_plain_http_to_loopback_is_accepted(make_emulator: Any, tmp_path: Path, host: str) -> None:
    bind = "::1" if host == "[::1]" else "127.0.0.1"
    emulator = make_emulator(EmulatorConfig(rate_limit=0, host=bind))
    source = write_csv(
        tmp_path / "in.csv", ["conversation_id", "wrapup_code"], [[conv(1), "Sales"]]
    )
    url = f"http://{host}:{emulator.port}"

    run = invoke(emulator, tmp_path, source, env=env_for(emulator, GENESYSCLOUD_API_HOST=url))

    assert run.exit_code == 0, run.stderr
    assert run.statuses() == {1: "applied"}
    assert emulator.stats()["posts_accepted"] == 1


# -- CSV cells that a spreadsheet would run --------------------------------------------------------

FORMULAS = [
    '=HYPERLINK("http://evil.example","click")',
    "+1 555 0100",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "=cmd|' /C calc'!A0",
]


def test_results_and_report_csvs_neutralise_formulas_and_genesys_gets_the_notes_as_written(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    ids = [1, 2, 3, 4, 5, 6, 12]
    rows = [[conv(n), "Sales", note] for n, note in zip(ids, FORMULAS, strict=True)]
    rows.append(["=1+1", "@Sales", "-x"])  # an invalid row: its raw cells are echoed
    source = write_csv(tmp_path / "in.csv", ["conversation_id", "wrapup_code", "notes"], rows)

    run = invoke(emulator, tmp_path, source)

    assert run.exit_code == 1, run.stderr
    assert run.statuses() == {**{n: "applied" for n in range(1, 8)}, 8: "invalid"}
    for n, note in zip(ids, FORMULAS, strict=True):
        assert emulator.state.wrapups[_last_agent_comm(emulator, n)].notes == note
    report_file = tmp_path / "report.csv"
    reported = CliRunner().invoke(
        main, ["report", "--ledger", str(tmp_path / "ledger.db"), "-o", str(report_file)]
    )
    assert reported.exit_code == 0, reported.output
    to_stdout = CliRunner().invoke(main, ["report", "--ledger", str(tmp_path / "ledger.db")])
    assert to_stdout.exit_code == 0, to_stdout.output
    stdout_rows = list(__import__("csv").DictReader(to_stdout.stdout.splitlines(True)))
    for name, table in (
        ("results", run.ordered),
        ("report", read_results(report_file)[0]),
        ("report on stdout", stdout_rows),
    ):
        assert len(table) == 8, name
        for row, note in zip(table, FORMULAS, strict=False):
            assert row["notes"] == "'" + note, (name, row)
        assert (table[7]["conversation_id"], table[7]["wrapup_code"]) == ("'=1+1", "'@Sales")
        for row in table:
            for value in row.values():
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (name, row)


def _last_agent_comm(emulator: EmulatorHandle, n: int) -> str:
    """The communication a run wraps up in seeded conversation n (the sample's intent)."""
    return {1: comm(1, 3), 2: comm(2, 4), 3: comm(3, 3), 12: comm(12, 4)}.get(n, comm(n, 3))


# -- the SQL source runs the query given, read-only ------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM crm_cases",
        "UPDATE crm_cases SET disposition = 'Sales'",
        "UPDATE crm_cases SET disposition = 'Sales' "
        "RETURNING genesys_conversation_id AS conversation_id, disposition AS wrapup_code",
        "SELECT * FROM wrapup_backfill; DELETE FROM crm_cases",
        "DROP VIEW wrapup_backfill",
    ],
)
def test_a_query_that_writes_fails_and_changes_nothing(
    emulator: EmulatorHandle, tmp_path: Path, sql: str
) -> None:
    crm = shutil.copy(CRM, tmp_path / "crm.sqlite")
    before = Path(crm).read_bytes()

    run = invoke(emulator, tmp_path, "--source-url", f"sqlite:///{crm}", "--query", sql)

    assert run.exit_code == 2, run.stderr
    assert run.stderr.startswith(f"Error: query on sqlite:///{crm}: cannot run the query: ")
    assert "Traceback" not in run.stdout + run.stderr
    assert Path(crm).read_bytes() == before
    assert emulator.stats()["requests"] == {}


def test_the_query_reaches_the_database_exactly_as_given(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    crm = shutil.copy(CRM, tmp_path / "crm.sqlite")
    # ":name" is not a bind parameter, "%" and "%s" are not format markers, "?" is text.
    sql = (
        "SELECT conversation_id, wrapup_code, 'a:b :notes %s 100% ?' AS notes "
        f"FROM wrapup_backfill WHERE conversation_id = '{conv(1)}'"
    )

    run = invoke(emulator, tmp_path, "--source-url", f"sqlite:///{crm}", "--query", sql)

    assert run.exit_code == 0, run.stderr
    assert run.statuses() == {1: "applied"}
    assert emulator.state.wrapups[comm(1, 3)].notes == "a:b :notes %s 100% ?"
