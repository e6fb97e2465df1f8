"""The ledger's tables, its schema version, and how a database becomes (or is found to be) a
ledger of this version: created when new, migrated when older, refused when newer or foreign.

Tables:

- `meta`: the schema version; from schema 5, the org the ledger belongs to (`org_*` keys,
  see `wrapup_batch/org.py`).
- `runs`: one row per run (started, finished, source, options, counts, exit code).
- `items`: one row per distinct request, keyed by (conversation id, requested code, agent id,
  notes) through `item_key`; holds the outcome: status, message, participant and
  communication ids, previous code, the wrap-up `endTime` sent (`wrapup_end_time`), HTTP
  status, Genesys error code and contextId, attempts.
  An item outlives runs: a rerun finds it and does not redo it.
- `run_rows`: one row per input row of a run, pointing at its item (`item_key`, and `item_id`
  for joins); row-level statuses (`invalid`, `duplicate`) live here, everything else on the
  item.
- `lock`: at most one row: a live run of a wrapup-batch older than schema 8, which owned the
  whole ledger (a newer run waits for none, but refuses to share a ledger with such a run).
- `workers` (schema 8): every process that works on a run (the run's own, and those that
  joined it with `work`): pid, host, OAuth client, heartbeat and lease.
- `conversation_claims` (schema 8): which worker is changing which conversation, until when.
- `rate_budgets` (schema 8): one OAuth client's shared send schedule (`ledger.budget`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    text,
    update,
)

from wrapup_batch.errors import LedgerError
from wrapup_batch.models import Status

SCHEMA_VERSION = 8

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
    # schema 7: who started the run: the signed-in user of the web page (Genesys user id and
    # name), or the operating-system account for the command line and cron ("os:<user>")
    Column("started_by_id", String),
    Column("started_by_name", Text),
    # schema 8: when the run's codes were resolved, so that workers may join it
    Column("work_ready", String),
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
    # schema 4: the `endTime` sent with the wrap-up, per communication (";"-joined like the ids)
    Column("wrapup_end_time", Text),
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
    # schema 6: the outcome of the row's item as this run left it (`snapshot_outcomes`, when
    # the run finishes), so that a run's report says what happened in that run, not what a
    # later run did to the same item (a dry run's rows stay `would_apply`)
    Column("outcome", String),
    Column("outcome_message", Text),
    Column("outcome_http_status", Integer),
    Column("outcome_error_code", String),
    Column("outcome_context_id", String),
    # schema 8: the run whose live worker was changing this row's conversation, so that this
    # run left the row to a later one
    Column("held_by", Integer),
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


workers = Table(
    "workers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False),
    Column("role", String, nullable=False),  # run (the process that started it) or work
    Column("pid", Integer, nullable=False),
    Column("host", String, nullable=False),
    Column("client_id", String, nullable=False, server_default=""),
    Column("started", String, nullable=False),
    Column("heartbeat", String, nullable=False),
    Column("lease_until", Float, nullable=False),  # epoch seconds
    Column("finished", String),
)

conversation_claims = Table(
    "conversation_claims",
    metadata,
    Column("conversation_id", String, primary_key=True),
    Column("worker_id", Integer, nullable=False),
    Column("run_id", Integer, nullable=False),
    Column("lease_until", Float, nullable=False),  # epoch seconds
)

rate_budgets = Table(
    "rate_budgets",
    metadata,
    Column("client_id", String, primary_key=True),
    Column("limit_per_minute", Float, nullable=False),
    Column("next_slot", Float, nullable=False),  # epoch seconds
    Column("paused_until", Float, nullable=False),
    Column("rate", Float, nullable=False),  # per minute, as of `rate_at`
    Column("rate_at", Float, nullable=False),
    Column("lowered_at", Float, nullable=False),
)

#: The tables schema 8 added (created by the migration to it).
_SCHEMA_8_TABLES = (workers, conversation_claims, rate_budgets)


def check_or_create(conn: Any, display: str, *, create: bool) -> None:
    """Create the ledger in an empty database, migrate an older one, refuse anything else."""
    existing = set(conn.dialect.get_table_names(conn))
    if "meta" not in existing:
        if existing - {"meta"} and "items" not in existing:
            raise LedgerError(
                f"{display} is a database but not a wrapup-batch ledger "
                f"(it has tables {', '.join(sorted(existing))}); "
                "give --ledger a new file"
            )
        if not create:
            raise LedgerError(f"{display} holds no wrapup-batch ledger yet")
        metadata.create_all(conn)
        conn.execute(insert(meta_table).values(key="schema_version", value=str(SCHEMA_VERSION)))
        return
    version = conn.execute(
        select(meta_table.c.value).where(meta_table.c.key == "schema_version")
    ).scalar()
    found = int(version or 0)
    if found > SCHEMA_VERSION:
        raise LedgerError(
            f"{display} was written by a newer wrapup-batch (ledger schema "
            f"{found}, this version knows up to {SCHEMA_VERSION}); upgrade "
            "wrapup-batch, or give --ledger another file"
        )
    if found < SCHEMA_VERSION:
        _migrate(conn, found)


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
    3: ("ALTER TABLE items ADD COLUMN wrapup_end_time TEXT",),
    # schema 5: the org a ledger belongs to, as `org_*` keys in `meta` (no table changes). The
    # first run that reaches an org records it; the version keeps older wrapup-batch, which
    # would not check the org, off a ledger that has one.
    4: (),
    # Runs finished before keep no outcome of their own: their reports show the items' latest.
    5: (
        "ALTER TABLE run_rows ADD COLUMN outcome VARCHAR",
        "ALTER TABLE run_rows ADD COLUMN outcome_message TEXT",
        "ALTER TABLE run_rows ADD COLUMN outcome_http_status INTEGER",
        "ALTER TABLE run_rows ADD COLUMN outcome_error_code VARCHAR",
        "ALTER TABLE run_rows ADD COLUMN outcome_context_id VARCHAR",
    ),
    6: (
        "ALTER TABLE runs ADD COLUMN started_by_id VARCHAR",
        "ALTER TABLE runs ADD COLUMN started_by_name TEXT",
    ),
    7: (
        "ALTER TABLE runs ADD COLUMN work_ready VARCHAR",
        "ALTER TABLE run_rows ADD COLUMN held_by INTEGER",
    ),
}


def _migrate(conn: Any, found: int) -> None:
    """Bring an older ledger forward, one version at a time, in the caller's transaction."""
    for version in range(found, SCHEMA_VERSION):
        for statement in _MIGRATIONS[version]:
            conn.execute(text(statement))
        if version == 7:
            metadata.create_all(conn, tables=list(_SCHEMA_8_TABLES))
    conn.execute(
        update(meta_table)
        .where(meta_table.c.key == "schema_version")
        .values(value=str(SCHEMA_VERSION))
    )
