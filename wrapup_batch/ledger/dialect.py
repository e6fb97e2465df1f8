"""Where SQLite, PostgreSQL and other databases differ: the SQLite version, connection
settings and WAL, aggregates, bulk inserts (that may ignore conflicts), planner statistics, and
reading many rows fast.

SQLite gets plain SQL on the driver's own cursor where SQLAlchemy's per-row work would cost
more than SQLite's own (a million-row ingest or results file); PostgreSQL gets COPY for bulk
inserts and the driver's cursor for pages of results; other databases take the Core
statements. Statements written once for all (resolution, conflicts, duplicates) use SQL that
SQLite 3.33+ and PostgreSQL both run.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Table, insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError

from wrapup_batch.errors import LedgerError

#: SQLite page cache per connection, in KiB (memory is taken only as pages are read).
SQLITE_CACHE_KB = 32 * 1024
#: How long a SQLite ledger waits for another program's lock before giving up (milliseconds).
BUSY_TIMEOUT_MS = 10_000


#: UPDATE ... FROM (resolution and conflicts in one pass) came with SQLite 3.33.
SQLITE_MINIMUM = (3, 33, 0)


def check_sqlite_version(display: str) -> None:
    if sqlite3.sqlite_version_info < SQLITE_MINIMUM:
        raise LedgerError(
            f"cannot use ledger {display}: this Python's SQLite is {sqlite3.sqlite_version}, "
            "the ledger needs 3.33 or newer; use a newer Python build, or a PostgreSQL ledger"
        )


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}")
        # journal_mode = WAL is a property of the file: set once the file is known to be a
        # ledger this version can use (`Ledger._prepare`), so that a refused file is untouched.
        cursor.execute("PRAGMA synchronous = NORMAL")
        # A 32 MB page cache (SQLite's default is 2 MB) keeps the item-key index of a
        # million-row ledger in memory while rows are ingested and joined to their items.
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KB}")
    finally:
        cursor.close()


def use_wal(engine: Engine) -> None:
    """Switch the file to WAL (a no-op once it is in WAL).

    The switch needs the file to itself and SQLite does not wait for that: another run
    opening the ledger at the same moment makes it fail at once with "database is locked".
    So it is tried again for as long as a lock would be waited for.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            return
        except OperationalError as exc:
            if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def sql_literal(value: int | str) -> str:
    """An integer or text as an SQL literal (text quoted, quotes doubled)."""
    if isinstance(value, int):
        return str(int(value))
    return "'" + value.replace("'", "''") + "'"


def joined_numbers(engine: Engine, column: str) -> str:
    """SQL for an aggregate: a group's integers in `column` as one text, "1, 5, 9" (in no
    particular order)."""
    if engine.dialect.name == "sqlite":
        return f"GROUP_CONCAT({column}, ', ')"
    return f"STRING_AGG(CAST({column} AS TEXT), ', ')"


def insert_ignore(engine: Engine, table: Table) -> Any:
    """An INSERT that skips rows whose unique key exists already."""
    if engine.dialect.name == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing()
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    return insert(table).prefix_with("IGNORE")


def bulk_insert(
    engine: Engine,
    conn: Any,
    table: Table,
    columns: Sequence[str],
    values: list[tuple[Any, ...]],
    constants: Mapping[str, int | str],
    *,
    ignore_conflicts: bool = False,
) -> None:
    """Insert `values` (tuples in `columns` order), each with the same `constants`.

    On SQLite the constants are written into the statement, so that only what differs
    from row to row is bound: binding is most of `executemany`'s own cost.
    """
    if not values:
        return
    if engine.dialect.name == "sqlite":
        verb = "INSERT OR IGNORE" if ignore_conflicts else "INSERT"
        names = ", ".join(f'"{column}"' for column in (*columns, *constants))
        marks = ", ".join(["?"] * len(columns) + [sql_literal(v) for v in constants.values()])
        conn.exec_driver_sql(f"{verb} INTO {table.name} ({names}) VALUES ({marks})", values)
        return
    if engine.dialect.name == "postgresql" and not ignore_conflicts:
        _copy_insert(conn, table, columns, values, constants)
        return
    statement = insert_ignore(engine, table) if ignore_conflicts else insert(table)
    conn.execute(
        statement, [{**dict(zip(columns, value, strict=True)), **constants} for value in values]
    )


#: `copy_ingest`: the columns of its rows.
_INGEST_COLUMNS = (
    ('"row"', "INTEGER"),
    ("item_key", "VARCHAR"),
    ("conversation_id", "TEXT"),
    ("wrapup_code", "TEXT"),
    ("agent_id", "VARCHAR"),
    ("notes", "TEXT"),
    ("communication_target", "VARCHAR"),
    ("expected_code", "VARCHAR"),
)


def copy_ingest(
    conn: Any, run_id: int, values: list[tuple[Any, ...]], new_item: Mapping[str, int | str]
) -> None:
    """PostgreSQL: a chunk of valid input rows (tuples in `_INGEST_COLUMNS` order) through one
    COPY into a temporary table; from it, the new items (the rest of their columns from
    `new_item`), then the run's rows joined to their items' ids: each row is written once
    (an UPDATE to link rows to items afterwards wrote every row twice)."""
    if not values:
        return
    typed = ", ".join(f"{name} {kind}" for name, kind in _INGEST_COLUMNS)
    names = ", ".join(name for name, _ in _INGEST_COLUMNS)
    constants = ", ".join(f'"{column}"' for column in new_item)
    literals = ", ".join(sql_literal(value) for value in new_item.values())
    driver = conn.connection.driver_connection
    with driver.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE wrapup_ingest ({typed}) ON COMMIT DROP")
        with cursor.copy(f"COPY wrapup_ingest ({names}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        cursor.execute("ANALYZE wrapup_ingest")  # its size, for the join below
        cursor.execute(
            "INSERT INTO items (item_key, conversation_id, requested_code, agent_id, notes, "
            f"communication_target, expected_code, {constants}) "
            "SELECT item_key, conversation_id, wrapup_code, agent_id, notes, "
            f"communication_target, expected_code, {literals} FROM wrapup_ingest "
            'ORDER BY "row" ON CONFLICT DO NOTHING'
        )
        cursor.execute(
            'INSERT INTO run_rows (run_id, "row", item_key, conversation_id, wrapup_code, '
            f'item_id) SELECT {int(run_id)}, w."row", w.item_key, w.conversation_id, '
            "w.wrapup_code, i.id FROM wrapup_ingest w JOIN items i ON i.item_key = w.item_key"
        )
        cursor.execute("DROP TABLE wrapup_ingest")


def _copy_insert(
    conn: Any,
    table: Table,
    columns: Sequence[str],
    values: list[tuple[Any, ...]],
    constants: Mapping[str, int | str],
) -> None:
    """PostgreSQL: the rows through COPY (an INSERT per row, even pipelined, is ~10x slower),
    in the caller's transaction."""
    every = ", ".join(f'"{column}"' for column in (*columns, *constants))
    extra = tuple(constants.values())
    driver = conn.connection.driver_connection
    with driver.cursor() as cursor, cursor.copy(f"COPY {table.name} ({every}) FROM STDIN") as copy:
        for value in values:
            copy.write_row(value + extra)


def refresh_statistics(conn: Any) -> None:
    """After a run's rows are in: PostgreSQL's planner statistics brought up to date (a few
    hundred ms), as autovacuum would do a minute later. Without them it takes a new ledger's
    tables for a few hundred rows, and reads the whole rest of a run for every page of its
    results (quadratic: a 200,000-row results file took 32 s instead of 2)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE run_rows, items")


def pages(engine: Engine, query: Any, after: str) -> Iterator[list[tuple[Any, ...]]]:
    """The pages of a keyset-paged query (first column: the key; bind `after`: the last
    key seen), as plain tuples.

    On SQLite and PostgreSQL the statement is compiled once and run on the driver's own
    cursor: for a million rows, SQLAlchemy's Row objects cost more than the database's work.
    """
    last: Any = 0
    if engine.dialect.name not in ("sqlite", "postgresql"):
        while True:
            with engine.connect() as conn:
                rows = [tuple(r) for r in conn.execute(query, {after: last}).all()]
            if not rows:
                return
            yield rows
            last = rows[-1][0]
    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    names = compiled.positiontup
    params = dict(compiled.params)
    while True:
        params[after] = last
        bound: Any = [params[n] for n in names] if names is not None else params
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            cursor = driver.cursor()
            try:
                if engine.dialect.name == "postgresql":  # a page is too small for parallel workers
                    cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                rows = cursor.execute(compiled.string, bound).fetchall()
            finally:
                cursor.close()
        if not rows:
            return
        yield rows
        last = rows[-1][0]
