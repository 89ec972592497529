"""Storage underneath the services, one concern a module:

- `engine`: the `Database` (engine, sessions), the inline SQLite connection, the writer
  file lock and the WAL checkpointer;
- `driver`: the driver connection, its prebuilt statements (`Sql`) and writes sent
  together;
- `group_commit`: SQLite writers of one process sharing one commit;
- `transactions`: `Tx`, `unit_of_work`, `money_transaction`, conflict retries.

Services use what is exported here; SQL text lives in the store (`app.store`).
"""

from app.db.driver import Sql, locking
from app.db.engine import Database
from app.db.group_commit import BodyWaited
from app.db.transactions import (
    Tx,
    database_of,
    end_reads,
    money_transaction,
    read_snapshot,
    retry_on_conflict,
    session_tx,
    unit_of_work,
)

__all__ = [
    "BodyWaited",
    "Database",
    "Sql",
    "Tx",
    "database_of",
    "end_reads",
    "locking",
    "money_transaction",
    "read_snapshot",
    "retry_on_conflict",
    "session_tx",
    "unit_of_work",
]
