"""The results ledger: every run, every input row and every item's outcome, in SQL.

SQLAlchemy Core; SQLite by default (a path), any SQLAlchemy URL accepted. One module per
part, gathered by `Ledger`:

- `schema`: the tables, the schema version, creating and migrating a ledger;
- `dialect`: where SQLite and other databases differ;
- `base`: the engine, transactions, failures for a person, paging through a run's rows;
- `locking`: the lock of an older wrapup-batch's run (which owned the whole ledger);
- `claims`: workers, their claims on conversations and leases (several runs and workers share
  a ledger); `budget`: one rate budget per OAuth client, shared by its processes;
- `runs`: the runs table;
- `ingest`: input rows and their items, duplicates;
- `resolution`: requested codes resolved, conflicts found, before the work;
- `work`: the items still to do, their outcomes, what a run applied;
- `reading`: counts and results, for `status`, `report` and the results file;
- `meta`: what the ledger records about itself (the org it belongs to);
- `records`: what the ledger hands out and takes in; `core`: opening (`Ledger.open`).

Writes come in batches, one transaction each; the runner's single writer thread calls
`record`, so worker threads never touch the database.
"""

from wrapup_batch.ledger.budget import SharedBudget
from wrapup_batch.ledger.claims import DEFAULT_LEASE_SECONDS, Claimed, LiveWorker
from wrapup_batch.ledger.core import DEFAULT_LEDGER, Ledger, ledger_url, masked
from wrapup_batch.ledger.dialect import BUSY_TIMEOUT_MS, SQLITE_CACHE_KB
from wrapup_batch.ledger.ingest import item_key
from wrapup_batch.ledger.locking import STALE_LOCK_SECONDS
from wrapup_batch.ledger.records import (
    DECIDED_BEFORE_WORK,
    DONE,
    AppliedItem,
    ItemUpdate,
    ResolvedCode,
    ResultRow,
    RunInfo,
    StartedBy,
    WorkItem,
    local_account,
    now_iso,
)
from wrapup_batch.ledger.schema import (
    SCHEMA_VERSION,
    conversation_claims,
    items,
    lock_table,
    meta_table,
    metadata,
    rate_budgets,
    run_rows,
    runs,
    workers,
)

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DECIDED_BEFORE_WORK",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_LEDGER",
    "DONE",
    "SCHEMA_VERSION",
    "SQLITE_CACHE_KB",
    "STALE_LOCK_SECONDS",
    "AppliedItem",
    "Claimed",
    "ItemUpdate",
    "Ledger",
    "LiveWorker",
    "ResolvedCode",
    "ResultRow",
    "RunInfo",
    "SharedBudget",
    "StartedBy",
    "WorkItem",
    "conversation_claims",
    "item_key",
    "items",
    "ledger_url",
    "local_account",
    "lock_table",
    "masked",
    "meta_table",
    "metadata",
    "now_iso",
    "rate_budgets",
    "run_rows",
    "runs",
    "workers",
]
