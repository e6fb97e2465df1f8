"""The results ledger: every run, every input row and every item's outcome, in SQL.

SQLAlchemy Core; SQLite by default (a path), any SQLAlchemy URL accepted. Tables:

- `meta`: the schema version.
- `runs`: one row per run (started, finished, source, options, counts, exit code).
- `items`: one row per distinct request, keyed by (conversation id, requested code, agent id,
  notes) through `item_key`; holds the outcome: status, message, participant and
  communication ids, previous code, HTTP status, Genesys error code and contextId, attempts.
  An item outlives runs: a rerun finds it and does not redo it.
- `run_rows`: one row per input row of a run, pointing at its item (`item_key`, and `item_id`
  for joins); row-level statuses (`invalid`, `duplicate`) live here, everything else on the
  item.
- `lock`: at most one row: the live run that owns the ledger.

Writes come in batches, one transaction each; the runner's single writer thread calls
`record`, so worker threads never touch the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)

from wrapup_batch.errors import LedgerBusyError, LedgerError
from wrapup_batch.models import InputRow, Status

SCHEMA_VERSION = 3
DEFAULT_LEDGER = "wrapup-ledger.db"
STALE_LOCK_SECONDS = 300

metadata = MetaData()

meta_table = Table(
    "meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String, nullable=False, default="run"),
    Column("started", String, nullable=False),
    Column("finished", String),
    Column("source", Text, nullable=False),
    Column("options", Text, nullable=False),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("counts", Text),
    Column("summary", Text),
    Column("exit_code", Integer),
    Column("pid", Integer),
    Column("host", String),
)

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_key", String, nullable=False, unique=True),
    Column("conversation_id", String, nullable=False),
    Column("requested_code", Text, nullable=False),
    Column("agent_id", String, nullable=False, default=""),
    Column("notes", Text, nullable=False, default=""),
    # schema 2: a revert targets one communication, and only while it has the expected code
    Column("communication_target", String, nullable=False, server_default=""),
    Column("expected_code", String, nullable=False, server_default=""),
    Column("code_id", String),
    Column("code_name", Text),
    Column("status", String, nullable=False, default=Status.PENDING.value),
    Column("message", Text, nullable=False, default=""),
    Column("participant_id", Text),
    Column("communication_id", Text),
    Column("media", String),
    Column("previous_code", Text),
    Column("previous_code_name", Text),
    Column("http_status", Integer),
    Column("error_code", String),
    Column("context_id", String),
    Column("attempts", Integer, nullable=False, default=0),
    Column("first_run_id", Integer, nullable=False),
    Column("last_run_id", Integer, nullable=False),
    Column("created", String, nullable=False),
    Column("updated", String, nullable=False),
)

run_rows = Table(
    "run_rows",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("row", Integer, primary_key=True),
    Column("item_key", String),
    Column("conversation_id", Text, nullable=False),
    Column("wrapup_code", Text, nullable=False),
    Column("status", String),
    Column("message", Text),
    # schema 3: the item's id (its rowid), which run rows are joined to their items by: in
    # input order, the items are then read nearly in order, where the random item keys made
    # every row a lookup in the key index (a million-row results file: 4.6 s -> 2.0 s of SQL)
    Column("item_id", Integer),
    # No index on (run_id, item_key): kept up to date on every ingested row, in the random
    # order of the keys, it cost more than half of a million-row ingest. Every query walks
    # a run's rows by the primary key and reaches items through item_id; ledgers
    # created before keep theirs (harmless).
)

lock_table = Table(
    "lock",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer),
    Column("pid", Integer, nullable=False),
    Column("host", String, nullable=False),
    Column("acquired", String, nullable=False),
    Column("heartbeat", String, nullable=False),
)

#: What `Ledger.ingest` binds per item, in the order of its value tuples (the rest of a new
#: item is the same for every row).
_ITEM_COLUMNS = (
    "item_key",
    "conversation_id",
    "requested_code",
    "agent_id",
    "notes",
    "communication_target",
    "expected_code",
)


#: `Ledger.ingest`: each new run row gets its item's id.
_LINK_ITEMS = (
    update(run_rows)
    .where(run_rows.c.run_id == bindparam("b_run_id"))
    .where(run_rows.c.row.between(bindparam("b_first"), bindparam("b_last")))
    .where(run_rows.c.item_key.is_not(None))
    .values(
        item_id=select(items.c.id).where(items.c.item_key == run_rows.c.item_key).scalar_subquery()
    )
)


def _sql_literal(value: int | str) -> str:
    """An integer or text as an SQL literal (text quoted, quotes doubled)."""
    if isinstance(value, int):
        return str(int(value))
    return "'" + value.replace("'", "''") + "'"


#: `Ledger.record`: one item's outcome (built once; SQLite gets the plain SQL with tuples).
_RECORD_STATEMENT = (
    update(items)
    .where(items.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        message=bindparam("b_message"),
        participant_id=bindparam("b_participant_id"),
        communication_id=bindparam("b_communication_id"),
        media=bindparam("b_media"),
        previous_code=bindparam("b_previous_code"),
        previous_code_name=bindparam("b_previous_code_name"),
        http_status=bindparam("b_http_status"),
        error_code=bindparam("b_error_code"),
        context_id=bindparam("b_context_id"),
        attempts=items.c.attempts + bindparam("b_attempts"),
        last_run_id=bindparam("b_run_id"),
        updated=bindparam("b_updated"),
    )
)
_RECORD_SQLITE = (
    "UPDATE items SET status = ?, message = ?, participant_id = ?, communication_id = ?, "
    "media = ?, previous_code = ?, previous_code_name = ?, http_status = ?, error_code = ?, "
    "context_id = ?, attempts = attempts + ?, last_run_id = ?, updated = ? WHERE id = ?"
)

#: Item statuses a run does not process again (`skipped` joins them under --on-existing skip).
DONE = (Status.APPLIED.value, Status.UNCHANGED.value)
#: Set while resolving codes and finding conflicts: final for this run.
DECIDED_BEFORE_WORK = (
    Status.UNKNOWN_CODE.value,
    Status.AMBIGUOUS_CODE.value,
    Status.CONFLICT.value,
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


#: When this process started using ledgers (as `now_iso` stamps compare: as strings).
_PROCESS_STARTED = now_iso()


def item_key(row: InputRow) -> str:
    parts: tuple[str, ...] = (
        row.conversation_id,
        row.wrapup_code,
        row.agent_id or "",
        row.notes or "",
    )
    if row.communication_id or row.expected_code:
        parts += (row.communication_id or "", row.expected_code or "")
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class WorkItem:
    row: int
    item_id: int
    conversation_id: str
    code_id: str
    code_name: str
    agent_id: str | None
    notes: str | None
    status: str
    previous_code: str | None
    previous_code_name: str | None
    communication_id: str | None = None
    expected_code: str | None = None
    attempts: int = 0  # in_flight marks and applies recorded: a POST may have been sent


@dataclass(frozen=True, slots=True)
class AppliedItem:
    """What a run applied to one conversation: per communication, the code it replaced."""

    conversation_id: str
    code_id: str
    communication_ids: tuple[str, ...]
    previous_codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ItemUpdate:
    """An item's new state. Every field is written, so the runner says what it keeps."""

    item_id: int
    status: str
    message: str = ""
    participant_id: str | None = None
    communication_id: str | None = None
    media: str | None = None
    previous_code: str | None = None
    previous_code_name: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    context_id: str | None = None
    attempts: int = 0


class ResultRow(NamedTuple):
    """One line of the results: the fields in `report.RESULT_COLUMNS` order. A named tuple
    (not a dataclass): a million of them are built for a results file."""

    row: int
    conversation_id: str
    wrapup_code: str
    status: str
    message: str
    participant_id: str | None
    communication_id: str | None
    previous_code: str | None
    previous_code_id: str | None
    code_id: str | None
    http_status: int | None
    error_code: str | None
    context_id: str | None
    notes: str | None
    agent_id: str | None


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: int
    kind: str
    started: str
    finished: str | None
    source: str
    options: dict[str, Any]
    dry_run: bool
    counts: dict[str, int] | None
    summary: dict[str, Any] | None
    exit_code: int | None


def ledger_url(target: str) -> str:
    """A SQLAlchemy URL for `--ledger`: a URL as given, anything else a SQLite file path."""
    if "://" in target:
        return target
    return "sqlite:///" + str(Path(target).expanduser())


def masked(url: str) -> str:
    """The URL for messages: as given (not re-rendered: `file:` stays readable), its password
    hidden."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


#: SQLite page cache per connection, in KiB (memory is taken only as pages are read).
SQLITE_CACHE_KB = 32 * 1024
#: How long a SQLite ledger waits for another program's lock before giving up (milliseconds).
BUSY_TIMEOUT_MS = 10_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
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


class Ledger:
    """Open with `Ledger.open(path_or_url)`; every failure is a LedgerError for a person."""

    def __init__(self, engine: Engine, display: str) -> None:
        self.engine = engine
        self.display = display
        self.is_sqlite = engine.dialect.name == "sqlite"

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, target: str = DEFAULT_LEDGER, *, create: bool = True) -> Ledger:
        url = ledger_url(target)
        display = masked(url) if "://" in target else target
        if url.startswith("sqlite") and "://" not in target:
            _check_sqlite_path(Path(target).expanduser(), display, create=create)
        try:
            engine = create_engine(url)
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise LedgerError(f"cannot use ledger {display}: {_first_line(exc)}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        ledger = cls(engine, display)
        try:
            ledger._prepare(create=create)
        except BaseException:
            engine.dispose()  # a refused file is left with no connection (nor -wal, -shm) open
            raise
        return ledger

    def _prepare(self, *, create: bool) -> None:
        try:
            with self.engine.begin() as conn:
                if self.is_sqlite and create:
                    # Check and create (or migrate) as one step: two runs opening a new ledger
                    # at once would otherwise both find it empty and both try to create it.
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                self._check_or_create(conn, create=create)
            if self.is_sqlite and create:  # a ledger only read (status, report) is not changed
                self._use_wal()
        except DBAPIError as exc:
            raise LedgerError(_db_failure(self.display, exc)) from None

    def _use_wal(self) -> None:
        """Switch the file to WAL (a no-op once it is in WAL).

        The switch needs the file to itself and SQLite does not wait for that: another run
        opening the ledger at the same moment makes it fail at once with "database is locked".
        So it is tried again for as long as a lock would be waited for.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA journal_mode = WAL")
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _check_or_create(self, conn: Any, *, create: bool) -> None:
        existing = set(self.engine.dialect.get_table_names(conn))
        if "meta" not in existing:
            if existing - {"meta"} and "items" not in existing:
                raise LedgerError(
                    f"{self.display} is a database but not a wrapup-batch ledger "
                    f"(it has tables {', '.join(sorted(existing))}); "
                    "give --ledger a new file"
                )
            if not create:
                raise LedgerError(f"{self.display} holds no wrapup-batch ledger yet")
            metadata.create_all(conn)
            conn.execute(insert(meta_table).values(key="schema_version", value=str(SCHEMA_VERSION)))
            return
        version = conn.execute(
            select(meta_table.c.value).where(meta_table.c.key == "schema_version")
        ).scalar()
        found = int(version or 0)
        if found > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.display} was written by a newer wrapup-batch (ledger schema "
                f"{found}, this version knows up to {SCHEMA_VERSION}); upgrade "
                "wrapup-batch, or give --ledger another file"
            )
        if found < SCHEMA_VERSION:
            _migrate(conn, found)

    def close(self) -> None:
        self.engine.dispose()

    # -- the lock -----------------------------------------------------------------------------

    def acquire_lock(self) -> None:
        """Own the ledger, or raise LedgerBusyError while another live run does."""
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            stamp = now_iso()
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(lock_table).values(id=1, acquired=stamp, heartbeat=stamp, **me)
                    )
                return
            except IntegrityError:
                holder = self._lock_holder()
                if holder is None:
                    continue
                if not _lock_is_stale(holder):
                    raise LedgerBusyError(_busy_message(self.display, holder)) from None
                with self.engine.begin() as conn:
                    conn.execute(
                        delete(lock_table).where(
                            and_(
                                lock_table.c.id == 1,
                                lock_table.c.pid == holder["pid"],
                                lock_table.c.acquired == holder["acquired"],
                            )
                        )
                    )
            except DBAPIError as exc:
                raise LedgerError(_db_failure(self.display, exc)) from None
        raise LedgerBusyError(f"{self.display} is being claimed by another run; try again")

    def _lock_holder(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(lock_table).where(lock_table.c.id == 1)).mappings().first()
        return dict(row) if row else None

    def set_lock_run(self, run_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(lock_table)
                .where(lock_table.c.pid == os.getpid())
                .values(run_id=run_id, heartbeat=now_iso())
            )

    def heartbeat(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(lock_table)
                .where(lock_table.c.pid == os.getpid())
                .values(heartbeat=now_iso())
            )

    def release_lock(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(lock_table).where(lock_table.c.pid == os.getpid()))

    # -- runs -----------------------------------------------------------------------------------

    def start_run(
        self, *, source: str, options: Mapping[str, Any], dry_run: bool, kind: str = "run"
    ) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(runs).values(
                    kind=kind,
                    started=now_iso(),
                    source=source,
                    options=json.dumps(dict(options), sort_keys=True, default=str),
                    dry_run=dry_run,
                    pid=os.getpid(),
                    host=socket.gethostname(),
                )
            )
            run_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        if run_id is None:
            raise LedgerError(f"{self.display}: could not record the run")
        self.set_lock_run(int(run_id))
        return int(run_id)

    def finish_run(
        self, run_id: int, *, counts: Mapping[str, int], summary: Mapping[str, Any], exit_code: int
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    finished=now_iso(),
                    counts=json.dumps(dict(counts), sort_keys=True),
                    summary=json.dumps(dict(summary), sort_keys=True, default=str),
                    exit_code=exit_code,
                )
            )

    def list_runs(self) -> list[RunInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.id)).mappings().all()
        return [_run_info(row) for row in rows]

    def get_run(self, run_id: int | None = None) -> RunInfo | None:
        query = select(runs)
        query = (
            query.where(runs.c.id == run_id)
            if run_id is not None
            else query.order_by(runs.c.id.desc()).limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _run_info(row) if row else None

    # -- ingest ---------------------------------------------------------------------------------

    def ingest(self, run_id: int, chunk: Sequence[InputRow]) -> None:
        """Record one chunk of input rows, and a pending item for each new valid request.

        One transaction per chunk. Values go to the database as tuples through the driver's
        `executemany` on SQLite (SQLAlchemy's per-row parameter processing costs more than
        SQLite's own work for a million rows); other databases take the Core statement.
        """
        stamp = now_iso()
        item_values: list[tuple[Any, ...]] = []
        row_values: list[tuple[Any, ...]] = []
        invalid_values: list[tuple[Any, ...]] = []
        for row in chunk:
            if row.problem is not None:
                status = (row.status or Status.INVALID).value
                invalid_values.append(
                    (row.row, row.conversation_id, row.wrapup_code, status, row.problem)
                )
                continue
            key = item_key(row)
            row_values.append((row.row, key, row.conversation_id, row.wrapup_code))
            item_values.append(
                (
                    key,
                    row.conversation_id,
                    row.wrapup_code,
                    row.agent_id or "",
                    row.notes or "",
                    row.communication_id or "",
                    row.expected_code or "",
                )
            )
        new_item: dict[str, int | str] = {
            "status": Status.PENDING.value,
            "message": "",
            "attempts": 0,
            "first_run_id": run_id,
            "last_run_id": run_id,
            "created": stamp,
            "updated": stamp,
        }
        with self._begin() as conn:
            self._bulk_insert(
                conn, items, _ITEM_COLUMNS, item_values, new_item, ignore_conflicts=True
            )
            self._bulk_insert(
                conn,
                run_rows,
                ("row", "item_key", "conversation_id", "wrapup_code"),
                row_values,
                {"run_id": run_id},
            )
            if row_values:  # the rows' item ids: one statement, while the pages are in cache
                conn.execute(
                    _LINK_ITEMS,
                    {"b_run_id": run_id, "b_first": row_values[0][0], "b_last": row_values[-1][0]},
                )
            self._bulk_insert(
                conn,
                run_rows,
                ("row", "conversation_id", "wrapup_code", "status", "message"),
                invalid_values,
                {"run_id": run_id},
            )

    def _bulk_insert(
        self,
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
        if self.is_sqlite:
            verb = "INSERT OR IGNORE" if ignore_conflicts else "INSERT"
            names = ", ".join(f'"{column}"' for column in (*columns, *constants))
            marks = ", ".join(["?"] * len(columns) + [_sql_literal(v) for v in constants.values()])
            conn.exec_driver_sql(f"{verb} INTO {table.name} ({names}) VALUES ({marks})", values)
            return
        statement = self._insert_ignore(table) if ignore_conflicts else insert(table)
        conn.execute(
            statement, [{**dict(zip(columns, value, strict=True)), **constants} for value in values]
        )

    def _insert_ignore(self, table: Table) -> Any:
        if self.is_sqlite:
            return sqlite_insert(table).on_conflict_do_nothing()
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        return insert(table).prefix_with("IGNORE")

    def mark_duplicates(self, run_id: int) -> int:
        """Rows repeating an earlier row of the same run, to the letter, are `duplicate`.

        Linear in the run's rows: the repeated keys are grouped once into a temporary table,
        the run's rows are walked once against it (CROSS JOIN: SQLite keeps the run's rows as
        the outer loop), and only the repeats are updated, through the primary key. (A
        correlated MIN per row made SQLite scan the whole run for every row: quadratic.)
        """
        group = text(
            """
            INSERT INTO wrapup_repeated (item_key, first_row)
            SELECT item_key, MIN("row") FROM run_rows
            WHERE run_id = :run_id AND item_key IS NOT NULL
            GROUP BY item_key HAVING COUNT(*) > 1
            """
        )
        find = text(
            """
            INSERT INTO wrapup_duplicates ("row", first_row)
            SELECT r."row", g.first_row
            FROM run_rows r CROSS JOIN wrapup_repeated g
            WHERE r.run_id = :run_id AND g.item_key = r.item_key AND r."row" > g.first_row
            """
        )
        mark = text(
            """
            UPDATE run_rows SET status = :status, message = 'same as row ' || (
                SELECT d.first_row FROM wrapup_duplicates d WHERE d."row" = run_rows."row")
            WHERE run_id = :run_id AND "row" IN (SELECT "row" FROM wrapup_duplicates)
            """
        )
        temporary = {
            "wrapup_repeated": "(item_key VARCHAR PRIMARY KEY, first_row INTEGER NOT NULL)",
            "wrapup_duplicates": '("row" INTEGER PRIMARY KEY, first_row INTEGER NOT NULL)',
        }
        found = 0
        with self._begin() as conn:
            for name, columns in temporary.items():
                conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
                conn.execute(text(f"CREATE TEMPORARY TABLE {name} {columns}"))
            try:
                if conn.execute(group, {"run_id": run_id}).rowcount:
                    conn.execute(find, {"run_id": run_id})
                    count = text("SELECT COUNT(*) FROM wrapup_duplicates")
                    found = int(conn.execute(count).scalar() or 0)
                    conn.execute(mark, {"status": Status.DUPLICATE.value, "run_id": run_id})
            finally:
                for name in temporary:
                    conn.execute(text(f"DROP TABLE {name}"))
        return found

    # -- before the work: codes and conflicts ---------------------------------------------------

    def _todo_keys(self, run_id: int) -> Any:
        return (
            select(run_rows.c.item_key)
            .where(run_rows.c.run_id == run_id)
            .where(run_rows.c.status.is_(None))
        )

    def requested_codes(self, run_id: int, done: Sequence[str]) -> list[str]:
        """The distinct wrap-up code values of the run's items still to do."""
        # First the codes of any item not done, in one sequential pass over items: when
        # there is none (a rerun of finished work), the join of every run row with its item
        # (a random lookup each) is skipped.
        candidates = select(items.c.requested_code).where(items.c.status.not_in(done)).limit(1)
        with self.engine.connect() as conn:
            if conn.execute(candidates).first() is None:
                return []
        query = (
            select(items.c.requested_code)
            .distinct()
            .where(items.c.item_key.in_(self._todo_keys(run_id)))
            .where(items.c.status.not_in(done))
        )
        with self.engine.connect() as conn:
            values: list[Any] = list(conn.execute(query).scalars())
        return [str(value) for value in values]

    def apply_resolution(
        self,
        run_id: int,
        done: Sequence[str],
        requested: str,
        *,
        code_id: str | None,
        code_name: str | None,
        status: Status | None,
        message: str,
    ) -> None:
        """Record how one requested code value resolved, on every item of the run asking it.

        One UPDATE per call. When the run is a large part of the ledger (a first run of a
        million rows), SQLite is made to walk `items` in order and test each against the run's
        keys (`+item_key` keeps it off the key index), instead of looking each of the run's
        keys up in the index: in random order that rewrote the table page by page (measured:
        3 codes x 1M rows, 50 s before, 17 s so).
        """
        with self._begin() as conn:
            key: Any = items.c.item_key
            if self.is_sqlite and self._run_is_large(conn, run_id):
                key = literal_column("+items.item_key")
            where = and_(
                items.c.requested_code == requested,
                key.in_(self._todo_keys(run_id)),
                items.c.status.not_in(done),
            )
            if status is None:
                decided = items.c.status.in_(DECIDED_BEFORE_WORK)
                conn.execute(
                    update(items)
                    .where(where)
                    .values(
                        code_id=code_id,
                        code_name=code_name,
                        # rows decided before the work by an earlier run are to do again
                        status=case((decided, Status.PENDING.value), else_=items.c.status),
                        message=case((decided, ""), else_=items.c.message),
                        updated=case((decided, now_iso()), else_=items.c.updated),
                    )
                )
            else:
                conn.execute(
                    update(items)
                    .where(where)
                    .where(items.c.status != Status.IN_FLIGHT.value)
                    .values(
                        status=status.value,
                        message=message,
                        last_run_id=run_id,
                        updated=now_iso(),
                    )
                )

    def _run_is_large(self, conn: Any, run_id: int) -> bool:
        """Whether the run's rows are at least a quarter of the ledger's items."""
        rows = conn.execute(
            select(func.count()).select_from(run_rows).where(run_rows.c.run_id == run_id)
        ).scalar()
        known = conn.execute(select(func.max(items.c.id))).scalar()
        return int(rows or 0) * 4 >= int(known or 0)

    def mark_conflicts(self, run_id: int, done: Sequence[str]) -> int:
        """A conversation asked for different wrap-ups in one input: none of them is applied.

        Rows for one conversation that each name a different agent (agent_id) are not a conflict.
        """
        find = text(
            """
            SELECT i.conversation_id, GROUP_CONCAT(rr.row, ', ') AS rows_
            FROM run_rows rr JOIN items i ON i.id = rr.item_id
            WHERE rr.run_id = :run_id AND rr.status IS NULL
            GROUP BY i.conversation_id
            HAVING COUNT(*) > 1 AND (
                SUM(CASE WHEN i.communication_target = '' AND i.agent_id = ''
                    THEN 1 ELSE 0 END) > 0
                OR COUNT(DISTINCT i.communication_target || '/' || i.agent_id) < COUNT(*))
            """
        )
        with self._begin() as conn:
            conflicts = conn.execute(find, {"run_id": run_id}).all()
            for conversation_id, rows_ in conflicts:
                rows_ = ", ".join(sorted(str(rows_).split(", "), key=int))
                conn.execute(
                    update(items)
                    .where(items.c.conversation_id == conversation_id)
                    .where(items.c.item_key.in_(self._todo_keys(run_id)))
                    .where(items.c.status.not_in(done))
                    .where(items.c.status != Status.IN_FLIGHT.value)
                    .values(
                        status=Status.CONFLICT.value,
                        message=(
                            f"this input asks for different wrap-ups on this conversation "
                            f"(rows {rows_}); none was applied: keep one row per conversation"
                        ),
                        last_run_id=run_id,
                        updated=now_iso(),
                    )
                )
        return len(conflicts)

    # -- the work -------------------------------------------------------------------------------

    def _work_query(self, run_id: int, skip: Sequence[str]) -> Any:
        return (
            select(
                run_rows.c.row,
                items.c.id,
                items.c.conversation_id,
                items.c.code_id,
                items.c.code_name,
                items.c.agent_id,
                items.c.notes,
                items.c.status,
                items.c.previous_code,
                items.c.previous_code_name,
                items.c.communication_target,
                items.c.expected_code,
                items.c.attempts,
            )
            .select_from(run_rows.join(items, items.c.id == run_rows.c.item_id))
            .where(run_rows.c.run_id == run_id)
            .where(run_rows.c.status.is_(None))
            .where(items.c.status.not_in(skip))
        )

    def count_work(self, run_id: int, done: Sequence[str]) -> int:
        skip = [*done, *DECIDED_BEFORE_WORK]
        query = select(func.count()).select_from(self._work_query(run_id, skip).subquery())
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def iter_work(
        self, run_id: int, done: Sequence[str], *, batch: int = 1000
    ) -> Iterator[list[WorkItem]]:
        """The run's items still to do, in input order, a page at a time."""
        skip = [*done, *DECIDED_BEFORE_WORK]
        for rows in self._run_row_pages(self._work_query(run_id, skip), batch):
            yield [
                WorkItem(
                    row=r[0],
                    item_id=r[1],
                    conversation_id=r[2],
                    code_id=r[3] or "",
                    code_name=r[4] or "",
                    agent_id=r[5] or None,
                    notes=r[6] or None,
                    status=r[7],
                    previous_code=r[8],
                    previous_code_name=r[9],
                    communication_id=r[10] or None,
                    expected_code=r[11] or None,
                    attempts=int(r[12] or 0),
                )
                for r in rows
            ]

    def record(self, run_id: int, updates: Sequence[ItemUpdate]) -> None:
        """Write a batch of item outcomes in one transaction.

        Called twice per applied row (the in_flight mark, then the outcome): on SQLite the
        values go to the driver's `executemany` as tuples, the statement built once.
        """
        if not updates:
            return
        stamp = now_iso()
        if self.is_sqlite:
            rows = [
                (
                    u.status,
                    u.message,
                    u.participant_id,
                    u.communication_id,
                    u.media,
                    u.previous_code,
                    u.previous_code_name,
                    u.http_status,
                    u.error_code,
                    u.context_id,
                    u.attempts,
                    run_id,
                    stamp,
                    u.item_id,
                )
                for u in updates
            ]
            with self._begin() as conn:
                conn.exec_driver_sql(_RECORD_SQLITE, rows)
            return
        values = [
            {
                "b_id": u.item_id,
                "b_status": u.status,
                "b_message": u.message,
                "b_participant_id": u.participant_id,
                "b_communication_id": u.communication_id,
                "b_media": u.media,
                "b_previous_code": u.previous_code,
                "b_previous_code_name": u.previous_code_name,
                "b_http_status": u.http_status,
                "b_error_code": u.error_code,
                "b_context_id": u.context_id,
                "b_attempts": u.attempts,
                "b_run_id": run_id,
                "b_updated": stamp,
            }
            for u in updates
        ]
        with self._begin() as conn:
            conn.execute(_RECORD_STATEMENT, values)

    def iter_applied(self, run_id: int, *, batch: int = 1000) -> Iterator[list[AppliedItem]]:
        """The items this run applied (it was the last to write them), in input order."""
        base = (
            select(
                run_rows.c.row,
                items.c.conversation_id,
                items.c.code_id,
                items.c.communication_id,
                items.c.previous_code,
            )
            .select_from(run_rows.join(items, items.c.id == run_rows.c.item_id))
            .where(run_rows.c.run_id == run_id)
            .where(run_rows.c.status.is_(None))
            .where(items.c.status == Status.APPLIED.value)
            .where(items.c.last_run_id == run_id)
        )
        for rows in self._run_row_pages(base, batch):
            yield [
                AppliedItem(
                    conversation_id=r[1],
                    code_id=r[2] or "",
                    communication_ids=tuple((r[3] or "").split(";")),
                    previous_codes=tuple((r[4] or "").split(";")),
                )
                for r in rows
            ]

    # -- results ----------------------------------------------------------------------------------

    def status_counts(self, run_id: int) -> dict[str, int]:
        status = func.coalesce(run_rows.c.status, items.c.status)
        query = (
            select(status, func.count())
            .select_from(run_rows.outerjoin(items, items.c.id == run_rows.c.item_id))
            .where(run_rows.c.run_id == run_id)
            .group_by(status)
        )
        with self.engine.connect() as conn:
            found: list[Any] = list(conn.execute(query).all())
        return {str(s): int(n) for s, n in found}

    def iter_results(
        self, run_id: int, *, statuses: Sequence[str] | None = None, batch: int = 5000
    ) -> Iterator[list[ResultRow]]:
        """Every input row of a run in input order with its outcome, a page at a time."""
        make = ResultRow._make
        for rows in self.iter_result_tuples(run_id, statuses=statuses, batch=batch):
            yield [make(r) for r in rows]

    def iter_result_tuples(
        self,
        run_id: int,
        *,
        statuses: Sequence[str] | None = None,
        cell: Callable[[ColumnElement[Any]], ColumnElement[Any]] | None = None,
        batch: int = 5000,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """`iter_results` as plain tuples (`ResultRow` order), with `cell` (when given) wrapped
        around every text column's SQL expression: that is how the report's formula
        neutraliser runs inside SQLite, so that a million rows reach the CSV writer untouched.
        """
        status = func.coalesce(run_rows.c.status, items.c.status)
        texts: list[ColumnElement[Any]] = [
            run_rows.c.conversation_id,
            run_rows.c.wrapup_code,
            status,
            func.coalesce(run_rows.c.message, items.c.message, ""),
            items.c.participant_id,
            items.c.communication_id,
            items.c.previous_code_name,
            items.c.previous_code,
            items.c.code_id,
            items.c.error_code,
            items.c.context_id,
            items.c.notes,
            items.c.agent_id,
        ]
        if cell is not None:
            texts = [cell(column) for column in texts]
        base = (
            select(run_rows.c.row, *texts[:9], items.c.http_status, *texts[9:])
            .select_from(run_rows.outerjoin(items, items.c.id == run_rows.c.item_id))
            .where(run_rows.c.run_id == run_id)
        )
        if statuses:
            base = base.where(status.in_(list(statuses)))
        yield from self._run_row_pages(base, batch)

    def _run_row_pages(self, base: Any, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """`base` (a query whose first column is `run_rows.row`) a page at a time, in order."""
        query = (
            base.where(run_rows.c.row > bindparam("after_row", value=0))
            .order_by(run_rows.c.row)
            .limit(batch)
        )
        yield from self._pages(query, "after_row")

    def _pages(self, query: Any, after: str) -> Iterator[list[tuple[Any, ...]]]:
        """The pages of a keyset-paged query (first column: the key; bind `after`: the last
        key seen), as plain tuples.

        On SQLite the statement is compiled once and run on the driver's own cursor: for a
        million rows, SQLAlchemy's Row objects cost more than SQLite's own work.
        """
        last: Any = 0
        if not self.is_sqlite:
            while True:
                with self.engine.connect() as conn:
                    rows = [tuple(r) for r in conn.execute(query, {after: last}).all()]
                if not rows:
                    return
                yield rows
                last = rows[-1][0]
        compiled = query.compile(
            dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True}
        )
        names = list(compiled.positiontup or ())
        params = dict(compiled.params)
        while True:
            params[after] = last
            with self.engine.connect() as conn:
                driver = conn.connection.driver_connection
                assert driver is not None
                cursor = driver.cursor()
                try:
                    rows = cursor.execute(compiled.string, [params[n] for n in names]).fetchall()
                finally:
                    cursor.close()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    # -- helpers ----------------------------------------------------------------------------------

    def _begin(self) -> Any:
        return _Transaction(self)


class _Transaction:
    """`engine.begin()` that turns database failures into a LedgerError for a person."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._ctx: Any = None

    def __enter__(self) -> Any:
        try:
            self._ctx = self._ledger.engine.begin()
            return self._ctx.__enter__()
        except DBAPIError as exc:
            raise LedgerError(_db_failure(self._ledger.display, exc)) from None

    def __exit__(self, *exc_info: Any) -> bool:
        try:
            return bool(self._ctx.__exit__(*exc_info))
        except DBAPIError as exc:
            raise LedgerError(_db_failure(self._ledger.display, exc)) from None


#: Schema migrations: version -> the statements that bring a ledger from it to the next one.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE items ADD COLUMN communication_target VARCHAR NOT NULL DEFAULT ''",
        "ALTER TABLE items ADD COLUMN expected_code VARCHAR NOT NULL DEFAULT ''",
    ),
    2: (
        "ALTER TABLE run_rows ADD COLUMN item_id INTEGER",
        "UPDATE run_rows SET item_id = (SELECT id FROM items WHERE items.item_key = "
        "run_rows.item_key) WHERE item_key IS NOT NULL",
    ),
}


def _migrate(conn: Any, found: int) -> None:
    """Bring an older ledger forward, one version at a time, in the caller's transaction."""
    for version in range(found, SCHEMA_VERSION):
        for statement in _MIGRATIONS[version]:
            conn.execute(text(statement))
    conn.execute(
        update(meta_table)
        .where(meta_table.c.key == "schema_version")
        .values(value=str(SCHEMA_VERSION))
    )


def _run_info(row: Any) -> RunInfo:
    return RunInfo(
        id=int(row["id"]),
        kind=str(row["kind"]),
        started=str(row["started"]),
        finished=row["finished"],
        source=str(row["source"]),
        options=json.loads(row["options"] or "{}"),
        dry_run=bool(row["dry_run"]),
        counts=json.loads(row["counts"]) if row["counts"] else None,
        summary=json.loads(row["summary"]) if row["summary"] else None,
        exit_code=row["exit_code"],
    )


def _check_sqlite_path(path: Path, display: str, *, create: bool) -> None:
    if path.is_dir():
        raise LedgerError(f"ledger {display} is a directory; give --ledger a file path")
    if not path.exists():
        if not create:
            raise LedgerError(f"no ledger at {display}; run `wrapup-batch run` first")
        if not path.parent.exists():
            raise LedgerError(
                f"cannot create ledger {display}: folder {path.parent} does not exist"
            )
        return
    with path.open("rb") as handle:
        header = handle.read(16)
    if header and header != b"SQLite format 3\x00":
        raise LedgerError(
            f"{display} is not a SQLite database (nothing was changed); give --ledger another file"
        )


def _lock_is_stale(holder: Mapping[str, Any]) -> bool:
    if holder["host"] == socket.gethostname():
        pid = int(holder["pid"])
        if pid == os.getpid():
            # Our own pid: a lock this process took (another Ledger object on the file), or
            # one left by a dead process whose pid we now have (a restarted container's run
            # is often pid 1 again): the latter was taken before this process started.
            return str(holder["acquired"]) < _PROCESS_STARTED
        return not _pid_alive(pid)
    try:
        beat = datetime.fromisoformat(str(holder["heartbeat"]))
    except ValueError:
        return True
    return (datetime.now(UTC) - beat).total_seconds() > STALE_LOCK_SECONDS


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy_message(display: str, holder: Mapping[str, Any]) -> str:
    run = f"run {holder['run_id']}" if holder.get("run_id") else "a run"
    return (
        f"ledger {display} is in use by {run} (pid {holder['pid']} on {holder['host']}, "
        f"started {holder['acquired']}); wait for it to finish, or use another --ledger"
    )


def _db_failure(display: str, exc: DBAPIError) -> str:
    detail = _first_line(exc.orig) if exc.orig is not None else _first_line(exc)
    lowered = detail.lower()
    if "readonly" in lowered or "read-only" in lowered:
        hint = "the file or its folder is read-only: give --ledger a writable path"
    elif "locked" in lowered:
        hint = "another program holds the database locked: close it and try again"
    elif "not a database" in lowered or "malformed" in lowered:
        hint = "the file is damaged or not a ledger (nothing was changed); use another --ledger"
    else:
        hint = "check the --ledger path or URL"
    return f"ledger {display}: {detail}; {hint}"


def _first_line(exc: object) -> str:
    text_ = str(exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__
