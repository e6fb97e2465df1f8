"""Opening a ledger: a path or URL to an engine, the database checked (and created or migrated)
before anything else; and `Ledger`, which gathers the parts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from wrapup_batch.errors import LedgerError
from wrapup_batch.ledger import dialect
from wrapup_batch.ledger.base import db_failure, first_line
from wrapup_batch.ledger.ingest import Ingest
from wrapup_batch.ledger.meta import Meta
from wrapup_batch.ledger.reading import Reading
from wrapup_batch.ledger.resolution import Resolving
from wrapup_batch.ledger.runs import Runs
from wrapup_batch.ledger.schema import check_or_create
from wrapup_batch.ledger.work import Work

DEFAULT_LEDGER = "wrapup-ledger.db"
#: PostgreSQL advisory lock held while a ledger is checked, created or migrated.
_SCHEMA_LOCK_KEY = 0x77726170  # "wrap"


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


class Ledger(Runs, Ingest, Resolving, Work, Reading, Meta):
    """Open with `Ledger.open(path_or_url)`; every failure is a LedgerError for a person."""

    @classmethod
    def open(cls, target: str = DEFAULT_LEDGER, *, create: bool = True) -> Ledger:
        url = ledger_url(target)
        display = masked(url) if "://" in target else target
        if url.startswith("sqlite"):
            dialect.check_sqlite_version(display)
        if url.startswith("sqlite") and "://" not in target:
            _check_sqlite_path(Path(target).expanduser(), display, create=create)
        try:
            engine = create_engine(url)
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise LedgerError(f"cannot use ledger {display}: {first_line(exc)}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", dialect.sqlite_pragmas)
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
                elif self.engine.dialect.name == "postgresql" and create:
                    # The same on PostgreSQL: a lock for the transaction, taken by every
                    # process that may create or migrate a ledger (the number names it).
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})")
                check_or_create(conn, self.display, create=create)
            if self.is_sqlite and create:  # a ledger only read (status, report) is not changed
                dialect.use_wal(self.engine)
        except DBAPIError as exc:
            raise LedgerError(db_failure(self.display, exc)) from None

    def close(self) -> None:
        self.engine.dispose()


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
    # Asked through SQLite, never by reading the file: closing any other handle on the file
    # drops every lock this process holds on it (POSIX), so another process's SQLite would
    # take the ledger for unused while this process's open connections still use its WAL,
    # and corrupt it (a page starting a run beside another one opened the ledger again).
    # SQLite keeps its own handles open while any of its connections holds a lock.
    try:
        probe = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=dialect.BUSY_TIMEOUT_MS / 1000
        )
    except sqlite3.Error:
        return  # not readable: the engine says why
    try:
        probe.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "encrypted" in str(exc):
            raise LedgerError(
                f"{display} is not a SQLite database (nothing was changed); "
                "give --ledger another file"
            ) from None
    finally:
        probe.close()
