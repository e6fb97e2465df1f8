"""The ledger on real SQLite files: ingest, duplicates, conflicts, work, results, the lock."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from wrapup_batch.errors import LedgerBusyError, LedgerError
from wrapup_batch.ledger import DONE, SCHEMA_VERSION, ItemUpdate, Ledger, lock_table
from wrapup_batch.models import InputRow, Status

A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
C = "cccccccc-0000-4000-8000-000000000003"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(str(tmp_path / "ledger.db"))
    yield opened
    opened.close()


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


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    first = Ledger.open(str(tmp_path / "l.db"))
    second = Ledger.open(str(tmp_path / "l.db"))
    first.acquire_lock()
    with pytest.raises(LedgerBusyError, match="is in use by"):
        second.acquire_lock()
    first.release_lock()
    second.acquire_lock()
    second.release_lock()


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


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(LedgerError, match="not a wrapup-batch ledger"):
        Ledger.open(str(path))


def test_a_ledger_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Ledger.open(str(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match="newer wrapup-batch"):
        Ledger.open(str(path))


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


@pytest.mark.parametrize("schema", [1, 2, 3, 4, 5, 6])
def test_an_older_ledger_is_migrated_forward_keeping_its_rows(tmp_path: Path, schema: int) -> None:
    """Made from today's schema with the later columns dropped; the real ledgers written by
    schema 1 and 2 are in test_ledger_migration.py."""
    path = tmp_path / "old.db"
    ledger = Ledger.open(str(path))
    run_id = _start(ledger)
    ledger.ingest(run_id, [InputRow(1, A, "Sales"), InputRow(2, B, "Sales")])
    ledger.close()
    with sqlite3.connect(path) as conn:  # make it look like a ledger of that schema
        if schema < 6:
            for column in OUTCOME_COLUMNS:  # added in schema 6
                conn.execute(f"ALTER TABLE run_rows DROP COLUMN {column}")
        conn.execute("ALTER TABLE runs DROP COLUMN work_ready")  # added in schema 7, with:
        conn.execute("ALTER TABLE run_rows DROP COLUMN held_by")
        for table in ("workers", "conversation_claims", "rate_budgets"):
            conn.execute(f"DROP TABLE {table}")
        if schema < 4:
            conn.execute("ALTER TABLE items DROP COLUMN wrapup_end_time")  # added in schema 4
        if schema < 3:
            conn.execute("ALTER TABLE run_rows DROP COLUMN item_id")  # added in schema 3
        if schema == 1:
            conn.execute("ALTER TABLE items DROP COLUMN communication_target")
            conn.execute("ALTER TABLE items DROP COLUMN expected_code")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(schema),))

    migrated = Ledger.open(str(path))

    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
        row_columns = {row[1] for row in conn.execute("PRAGMA table_info(run_rows)")}
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        links = conn.execute(
            "SELECT rr.row, i.conversation_id FROM run_rows rr JOIN items i ON i.id = rr.item_id"
        ).fetchall()
    assert {"communication_target", "expected_code", "wrapup_end_time"} <= columns
    assert version == (str(SCHEMA_VERSION),)
    assert set(OUTCOME_COLUMNS) <= row_columns
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"workers", "conversation_claims", "rate_budgets"} <= tables
    assert sorted(links) == [(1, A), (2, B)]
    work = [w for page in migrated.iter_work(run_id, DONE) for w in page]
    assert [(w.conversation_id, w.communication_id) for w in work] == [(A, None), (B, None)]
    rows = [r for page in migrated.iter_results(run_id) for r in page]
    assert [(r.row, r.conversation_id, r.status) for r in rows] == [
        (1, A, "pending"),
        (2, B, "pending"),
    ]
    migrated.close()
