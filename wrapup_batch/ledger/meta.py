"""What a ledger records about itself in `meta`, besides its schema version: the org it
belongs to (the `org_*` keys, read and written by the runner and `status`; see
`wrapup_batch/org.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import delete, insert, select

from wrapup_batch.ledger.base import LedgerBase
from wrapup_batch.ledger.schema import meta_table


class Meta(LedgerBase):
    def read_meta(self, keys: Sequence[str]) -> dict[str, str]:
        """The values of these `meta` keys that are set."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(meta_table.c.key, meta_table.c.value).where(meta_table.c.key.in_(keys))
            ).all()
        return {str(key): str(value) for key, value in rows}

    def write_meta(self, values: Mapping[str, str]) -> None:
        """Set these `meta` keys, in one transaction."""
        with self._begin() as conn:
            conn.execute(delete(meta_table).where(meta_table.c.key.in_(list(values))))
            conn.execute(insert(meta_table), [{"key": k, "value": v} for k, v in values.items()])
