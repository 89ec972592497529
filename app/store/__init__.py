"""The store: every SQL text the services run by hand, and every difference between the
engines, one module per table group. Services call these typed functions on a `Tx`
(app.db) and never see a placeholder or branch on the engine.

- `accounts`: customers' and accounts' locks, the bank's own accounts;
- `journals`: the one writer of journals, entries, balances and the daily totals;
- `idempotency`: keys claimed and answered;
- `audit`: the hash-chained audit log;
- `jobs`: durable background jobs;
- `fraud`: holds, the scoring queue, the features a score reads and its writes;
- `logins`: the login throttle.
"""

from app.store.accounts import (
    Locked,
    LockedAccount,
    add_internal_account,
    lock_customer,
    lock_movement,
)
from app.store.audit import AuditEntry, append_audit, chain_page, compute_hash
from app.store.fraud import add_hold
from app.store.idempotency import (
    Claim,
    IdempotencyKey,
    StoredAnswer,
    claim_key,
    store_answer,
    stored_answer,
)
from app.store.jobs import enqueue_job
from app.store.journals import (
    NewJournal,
    Posted,
    Settlement,
    UnbalancedJournal,
    post_journal,
)
from app.store.logins import create_throttle

__all__ = [
    "AuditEntry",
    "Claim",
    "IdempotencyKey",
    "Locked",
    "LockedAccount",
    "NewJournal",
    "Posted",
    "Settlement",
    "StoredAnswer",
    "UnbalancedJournal",
    "add_hold",
    "add_internal_account",
    "append_audit",
    "chain_page",
    "claim_key",
    "compute_hash",
    "create_throttle",
    "enqueue_job",
    "lock_customer",
    "lock_movement",
    "post_journal",
    "store_answer",
    "stored_answer",
]
