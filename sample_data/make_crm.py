"""Build `sample_data/crm.sqlite`: a small "CRM" whose closed cases point at seeded conversations.

The kind of table a nightly job queries to backfill wrap-up codes:

    SELECT genesys_conversation_id AS conversation_id,
           disposition AS wrapup_code,
           agent_note AS notes
    FROM crm_cases
    WHERE status = 'closed'
      AND genesys_conversation_id IS NOT NULL
      AND closed_at >= '2026-11-20'
    ORDER BY case_id

(also saved in the database as the view `wrapup_backfill`). The conversation ids are those of
`sample_data/emulator_seed.json`; the query leaves out an open case, a case without a
conversation and a case closed the day before. Run: `python sample_data/make_crm.py [OUT]`.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

NIGHTLY_QUERY = """SELECT genesys_conversation_id AS conversation_id,
       disposition AS wrapup_code,
       agent_note AS notes
FROM crm_cases
WHERE status = 'closed'
  AND genesys_conversation_id IS NOT NULL
  AND closed_at >= '2026-11-20'
ORDER BY case_id"""


def conversation(n: int) -> str:
    return f"c00000{n:02d}-0000-4000-8000-000000000000"


# (case id, channel, status, closed at, conversation id, disposition, agent note)
CASES: list[tuple[int, str, str, str | None, str | None, str, str | None]] = [
    (1001, "phone", "closed", "2026-11-20T08:15:00Z", conversation(1), "Support - Technical",
     "Password reset"),
    (1002, "phone", "closed", "2026-11-20T09:20:00Z", conversation(2), "Support - Billing",
     "Refund of the duplicate charge"),
    (1003, "phone", "closed", "2026-11-20T10:30:00Z", conversation(3), "Sales", None),
    (1004, "email", "closed", "2026-11-20T11:45:00Z", conversation(4), "Complaint",
     "Late delivery"),
    (1005, "chat", "closed", "2026-11-20T11:50:00Z", conversation(5), "Support - Technical",
     None),
    (1006, "phone", "closed", "2026-11-20T12:10:00Z", conversation(6), "Callback Scheduled",
     "Called back as promised"),
    (1007, "phone", "closed", "2026-11-20T13:15:00Z", conversation(7), "Sales",
     "Already coded in Genesys"),
    (1008, "phone", "closed", "2026-11-20T14:20:00Z", conversation(8), "Support - Billing",
     "Invoice question, not a complaint"),
    (1009, "phone", "closed", "2026-11-20T15:05:00Z", conversation(9), "Sales",
     "Closed while the call was still up"),
    (1010, "phone", "closed", "2026-11-20T15:35:00Z", conversation(10), "Spam", None),
    (1011, "phone", "closed", "2026-11-20T16:50:00Z", conversation(12), "Follow-up Required",
     "Specialist joined the call"),
    (1012, "phone", "closed", "2026-11-20T17:40:00Z", conversation(14), "Support - Billing",
     "Outbound follow-up"),
    (1013, "phone", "closed", "2026-11-20T20:15:00Z", conversation(19).upper(),
     "Support - Technical", "Id typed in upper case by the CRM"),
    (1014, "walk-in", "closed", "2026-11-20T10:00:00Z", None, "Sales", "No conversation"),
    (1015, "phone", "closed", "2026-11-19T17:00:00Z", conversation(13), "No Answer",
     "Closed yesterday: not in tonight's run"),
    (1016, "phone", "open", None, conversation(15), "Sales", "Still open"),
]  # fmt: skip


def build(path: Path) -> None:
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(
            """CREATE TABLE crm_cases (
                case_id INTEGER PRIMARY KEY,
                channel TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
                closed_at TEXT,
                genesys_conversation_id TEXT,
                disposition TEXT NOT NULL,
                agent_note TEXT
            )"""
        )
        db.executemany("INSERT INTO crm_cases VALUES (?, ?, ?, ?, ?, ?, ?)", CASES)
        db.execute(f"CREATE VIEW wrapup_backfill AS {NIGHTLY_QUERY}")
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")
    db.close()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "crm.sqlite"
    build(out)
    with sqlite3.connect(out) as db:
        count = db.execute("SELECT count(*) FROM wrapup_backfill").fetchone()[0]
    db.close()
    print(f"wrote {out}: {len(CASES)} cases, {count} rows for the nightly query")


if __name__ == "__main__":
    main()
