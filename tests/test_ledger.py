"""The ledger on real SQLite files and a real PostgreSQL server (each test that is not about
files runs on both): ingest, duplicates, conflicts, work, results, the lock, schema checks."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text, update

from wrapup_batch.errors import LedgerBusyError, LedgerError
from wrapup_batch.ledger import (
    DONE,
    SCHEMA_VERSION,
    ItemUpdate,
    Ledger,
    ResolvedCode,
    StartedBy,
    ledger_url,
    lock_table,
)
from wrapup_batch.models import InputRow, Status

A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
C = "cccccccc-0000-4000-8000-000000000003"
D = "dddddddd-0000-4000-8000-000000000004"
E = "eeeeeeee-0000-4000-8000-000000000005"


@pytest.fixture
def ledger(ledger_target: str) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_target)
    yield opened
    opened.close()


def _sql(target: str, *statements: str, **params: object) -> list[tuple[object, ...]]:
    """Run SQL on the ledger's database from outside the tool; the last statement's rows."""
    engine = create_engine(ledger_url(target))
    try:
        with engine.begin() as conn:
            result = None
            for statement in statements:
                result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result is not None and result.returns_rows else []
    finally:
        engine.dispose()


def _start(ledger: Ledger) -> int:
    return ledger.start_run(source="test.csv", options={}, dry_run=False)


def test_ingest_records_every_row_and_marks_repeats_duplicate(ledger: Ledger) -> None:
    run_id = _start(ledger)
    ledger.ingest(
        run_id,
        [
            InputRow(1, A, "Sales"),
            InputRow(2, "nope", "Sales", problem="conversation_id: not a uuid"),
            InputRow(3, A, "Sales"),
            InputRow(4, B, "Sales", notes="n"),
        ],
    )
    assert ledger.mark_duplicates(run_id) == 1
    rows = [r for page in ledger.iter_results(run_id) for r in page]
    assert [(r.row, r.status) for r in rows] == [
        (1, "pending"),
        (2, "invalid"),
        (3, "duplicate"),
        (4, "pending"),
    ]
    assert rows[1].message == "conversation_id: not a uuid"
    assert rows[2].message == "same as row 1"
    assert ledger.status_counts(run_id) == {"pending": 2, "invalid": 1, "duplicate": 1}


def test_an_item_outlives_its_run(ledger: Ledger) -> None:
    first = _start(ledger)
    ledger.ingest(first, [InputRow(1, A, "Sales")])
    [[work]] = list(ledger.iter_work(first, DONE))
    ledger.record(first, [ItemUpdate(work.item_id, Status.APPLIED.value, attempts=1)])
    second = _start(ledger)
    ledger.ingest(second, [InputRow(1, A, "Sales"), InputRow(2, B, "Sales")])
    todo = [w.conversation_id for page in ledger.iter_work(second, DONE) for w in page]
    assert todo == [B]
    assert ledger.status_counts(second) == {"applied": 1, "pending": 1}


def test_conflicting_codes_for_one_conversation(ledger: Ledger) -> None:
    run_id = _start(ledger)
    ledger.ingest(
        run_id,
        [
            InputRow(1, A, "Sales"),
            InputRow(2, A, "Support"),
            InputRow(3, B, "Sales", agent_id=A),
            InputRow(4, B, "Support", agent_id=C),  # different agents: not a conflict
            InputRow(5, C, "Sales"),
        ],
    )
    for code in ("Sales", "Support"):
        ledger.apply_resolution(
            run_id, DONE, code, code_id=code.lower(), code_name=code, status=None, message=""
        )
    assert ledger.mark_conflicts(run_id, DONE) == 1
    rows = {r.row: r for page in ledger.iter_results(run_id) for r in page}
    assert rows[1].status == rows[2].status == "conflict"
    assert "rows 1, 2" in rows[1].message
    assert {rows[3].status, rows[4].status, rows[5].status} == {"pending"}
    todo = [w.row for page in ledger.iter_work(run_id, DONE) for w in page]
    assert todo == [3, 4, 5]


def test_unknown_code_is_recorded_and_resolves_on_a_later_run(ledger: Ledger) -> None:
    run_id = _start(ledger)
    ledger.ingest(run_id, [InputRow(1, A, "Sails")])
    ledger.apply_resolution(
        run_id,
        DONE,
        "Sails",
        code_id=None,
        code_name=None,
        status=Status.UNKNOWN_CODE,
        message="no code named Sails",
    )
    assert ledger.status_counts(run_id) == {"unknown_code": 1}
    assert list(ledger.iter_work(run_id, DONE)) == []
    rerun = _start(ledger)
    ledger.ingest(rerun, [InputRow(1, A, "Sails")])
    assert ledger.requested_codes(rerun, DONE) == ["Sails"]
    ledger.apply_resolution(
        rerun, DONE, "Sails", code_id="id-1", code_name="Sails", status=None, message=""
    )
    [[work]] = list(ledger.iter_work(rerun, DONE))
    assert (work.code_id, work.status) == ("id-1", "pending")


def test_every_code_value_of_a_run_resolves_in_one_call(ledger: Ledger) -> None:
    first = _start(ledger)
    ledger.ingest(first, [InputRow(1, A, "Sails"), InputRow(2, B, "Support")])
    ledger.apply_resolutions(
        first, DONE, [ResolvedCode("Sails", None, None, Status.UNKNOWN_CODE, "no Sails")]
    )
    [[support]] = list(ledger.iter_work(first, DONE))
    ledger.record(first, [ItemUpdate(support.item_id, Status.IN_FLIGHT.value, attempts=1)])
    rerun = _start(ledger)
    rows = [
        InputRow(1, A, "Sails"),  # unknown in the first run, known now
        InputRow(2, B, "Support"),  # in flight: its code no longer resolves, it stays in flight
        InputRow(3, C, "Sales"),
        InputRow(4, D, "Help"),
        InputRow(5, E, "Sales"),
    ]
    ledger.ingest(rerun, rows)
    assert sorted(ledger.requested_codes(rerun, DONE)) == ["Help", "Sails", "Sales", "Support"]

    ledger.apply_resolutions(
        rerun,
        DONE,
        [
            ResolvedCode("Sails", "id-sails", "Sails", None, ""),
            ResolvedCode("Support", None, None, Status.AMBIGUOUS_CODE, "two codes named so"),
            ResolvedCode("Sales", "id-sales", "Sales", None, ""),
            ResolvedCode("Help", None, None, Status.UNKNOWN_CODE, "no code named Help"),
        ],
    )

    results = {r.row: (r.status, r.message) for page in ledger.iter_results(rerun) for r in page}
    assert results == {
        1: ("pending", ""),
        2: ("in_flight", ""),
        3: ("pending", ""),
        4: ("unknown_code", "no code named Help"),
        5: ("pending", ""),
    }
    work = {w.row: (w.code_id, w.code_name) for page in ledger.iter_work(rerun, DONE) for w in page}
    assert work == {
        1: ("id-sails", "Sails"),
        2: ("", ""),
        3: ("id-sales", "Sales"),
        5: ("id-sales", "Sales"),
    }
    # the first run's results are the items' current state
    assert ledger.status_counts(first) == {"pending": 1, "in_flight": 1}


def test_record_keeps_the_outcome_details(ledger: Ledger) -> None:
    run_id = _start(ledger)
    ledger.ingest(run_id, [InputRow(1, A, "=Sales")])
    [[work]] = list(ledger.iter_work(run_id, DONE))
    ledger.record(
        run_id,
        [
            ItemUpdate(
                work.item_id,
                Status.REJECTED.value,
                message="bad request",
                participant_id="p1",
                communication_id="c1",
                media="calls",
                previous_code="old",
                previous_code_name="Old",
                http_status=400,
                error_code="bad.request",
                context_id="ctx-1",
                attempts=1,
            )
        ],
    )
    [[row]] = list(ledger.iter_results(run_id))
    assert (row.status, row.http_status, row.error_code, row.context_id) == (
        "rejected",
        400,
        "bad.request",
        "ctx-1",
    )
    assert (row.participant_id, row.communication_id, row.previous_code) == ("p1", "c1", "Old")


def test_a_second_run_is_refused_while_the_first_holds_the_lock(ledger_target: str) -> None:
    first = Ledger.open(ledger_target)
    second = Ledger.open(ledger_target)
    first.acquire_lock()
    with pytest.raises(LedgerBusyError, match="is in use by"):
        second.acquire_lock()
    first.release_lock()
    second.acquire_lock()
    second.release_lock()
    first.close()
    second.close()


def test_a_lock_left_by_a_dead_process_is_taken_over(ledger: Ledger) -> None:
    ledger.acquire_lock()
    with ledger.engine.begin() as conn:
        conn.execute(update(lock_table).values(pid=2**22 + 12345))  # no such process
    ledger.acquire_lock()
    holder = ledger._lock_holder()
    assert holder is not None and holder["pid"] != 2**22 + 12345


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 10)
    with pytest.raises(LedgerError, match="is not a SQLite database"):
        Ledger.open(str(path))
    assert path.read_bytes().startswith(b"these are my notes")


def test_another_programs_database_is_refused_untouched(ledger_target: str) -> None:
    _sql(ledger_target, "CREATE TABLE customers (id INTEGER)")
    with pytest.raises(LedgerError, match="not a wrapup-batch ledger"):
        Ledger.open(ledger_target)
    engine = create_engine(ledger_url(ledger_target))
    assert inspect(engine).get_table_names() == ["customers"]
    engine.dispose()


def test_a_ledger_from_a_newer_version_is_refused(ledger_target: str) -> None:
    Ledger.open(ledger_target).close()
    _sql(ledger_target, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match="newer wrapup-batch"):
        Ledger.open(ledger_target)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="does not exist"):
        Ledger.open(str(tmp_path / "nowhere" / "l.db"))


OUTCOME_COLUMNS = (
    "outcome",
    "outcome_message",
    "outcome_http_status",
    "outcome_error_code",
    "outcome_context_id",
)


@pytest.mark.parametrize("schema", [1, 2, 3, 4, 5, 6, 7])
def test_an_older_ledger_is_migrated_forward_keeping_its_rows(
    ledger_target: str, schema: int
) -> None:
    """Made from today's schema with the later columns dropped; the real ledgers written by
    schema 1 and 2 are in test_ledger_migration.py."""
    ledger = Ledger.open(ledger_target)
    run_id = _start(ledger)
    ledger.ingest(run_id, [InputRow(1, A, "Sales"), InputRow(2, B, "Sales")])
    ledger.close()
    # make it look like a ledger of that schema
    older = [
        "ALTER TABLE runs DROP COLUMN work_ready",  # added in schema 8, with:
        "ALTER TABLE run_rows DROP COLUMN held_by",
        "DROP TABLE workers",
        "DROP TABLE conversation_claims",
        "DROP TABLE rate_budgets",
    ]
    if schema < 7:
        older += [
            "ALTER TABLE runs DROP COLUMN started_by_id",  # added in schema 7
            "ALTER TABLE runs DROP COLUMN started_by_name",
        ]
    if schema < 6:
        older += [f"ALTER TABLE run_rows DROP COLUMN {column}" for column in OUTCOME_COLUMNS]
    if schema < 4:
        older.append("ALTER TABLE items DROP COLUMN wrapup_end_time")  # added in schema 4
    if schema < 3:
        older.append("ALTER TABLE run_rows DROP COLUMN item_id")  # added in schema 3
    if schema == 1:
        older += [
            "ALTER TABLE items DROP COLUMN communication_target",
            "ALTER TABLE items DROP COLUMN expected_code",
        ]
    _sql(ledger_target, *older, f"UPDATE meta SET value = '{schema}' WHERE key = 'schema_version'")

    migrated = Ledger.open(ledger_target)

    engine = create_engine(ledger_url(ledger_target))
    columns = {column["name"] for column in inspect(engine).get_columns("items")}
    row_columns = {column["name"] for column in inspect(engine).get_columns("run_rows")}
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    version = _sql(ledger_target, "SELECT value FROM meta WHERE key = 'schema_version'")
    links = _sql(
        ledger_target,
        'SELECT rr."row", i.conversation_id FROM run_rows rr JOIN items i ON i.id = rr.item_id',
    )
    assert {"communication_target", "expected_code", "wrapup_end_time"} <= columns
    assert version == [(str(SCHEMA_VERSION),)]
    assert set(OUTCOME_COLUMNS) <= row_columns
    assert {"workers", "conversation_claims", "rate_budgets"} <= tables
    assert sorted(links) == [(1, A), (2, B)]
    old_run = migrated.get_run(run_id)
    assert old_run is not None
    if schema < 7:
        assert old_run.started_by is None  # nobody was recorded then
    else:
        assert old_run.started_by is not None and old_run.started_by.id.startswith("os:")
    work = [w for page in migrated.iter_work(run_id, DONE) for w in page]
    assert [(w.conversation_id, w.communication_id) for w in work] == [(A, None), (B, None)]
    rows = [r for page in migrated.iter_results(run_id) for r in page]
    assert [(r.row, r.conversation_id, r.status) for r in rows] == [
        (1, A, "pending"),
        (2, B, "pending"),
    ]
    migrated.close()


def test_a_sqlite_too_old_for_the_ledger_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This Python's SQLite is new enough; an older one is what a user of another build has.
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(LedgerError, match=r"SQLite is 3\.31\.1, the ledger needs 3\.33 or newer"):
        Ledger.open(str(tmp_path / "l.db"))
    assert not (tmp_path / "l.db").exists()


def test_a_postgresql_ledger_that_cannot_be_reached_is_named_without_its_password() -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg://wrapup:s3cret-pw@127.0.0.1:{port}/ledger"
    with pytest.raises(LedgerError) as refused:
        Ledger.open(url)
    message = str(refused.value)
    assert "s3cret-pw" not in message
    assert f"ledger postgresql+psycopg://wrapup:***@127.0.0.1:{port}/ledger:" in message
    assert "check the --ledger path or URL" in message


def test_a_run_records_who_started_it(ledger: Ledger) -> None:
    by_user = ledger.start_run(
        source="a.csv", options={}, dry_run=False, started_by=StartedBy("u-1", "Ana Analyst")
    )
    by_os = _start(ledger)
    first, second = ledger.get_run(by_user), ledger.get_run(by_os)
    assert first is not None and first.started_by == StartedBy("u-1", "Ana Analyst")
    assert second is not None and second.started_by is not None
    assert second.started_by.id.startswith("os:")
    assert "@" in second.started_by.name
