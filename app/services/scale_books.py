"""Large, valid books for benchmarks and demos (`bank demo --scale N`).

Built in batches through the same rules as the API: every journal balances to zero, no
customer account goes below zero (balances are tracked as the journals are made), the
stored balances move with their entries, `balance_after` runs per account, and every
journal has its hash-chained audit record. It only skips the per-request overhead: one
transaction and one executemany per table per batch instead of one per payment.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import driver, unit_of_work
from app.models import (
    Account,
    AccountKind,
    AuditRecord,
    Customer,
    CustomerStatus,
    Entry,
    Journal,
    JournalKind,
    KycStatus,
    Role,
    User,
)
from app.money import format_amount
from app.security import Security
from app.services import accounts, audit, ledger
from app.services.audit import GENESIS, SYSTEM
from app.services.customers import national_id_hmac
from app.settings import Settings

BATCH = 5_000
SEED_PASSWORD = "scale-password-1"
OPENING_MINOR = 10_000_000  # 100,000.00 per account


@dataclass
class ScaleResult:
    customers: int
    accounts: int
    journals: int
    entries: int
    audit_records: int
    usernames: list[str]
    account_numbers: list[str]


class _Ids:
    """Explicit ids, safe because the batch holds the writer lock (SQLite) or the tables'
    sequences are moved past them before commit (PostgreSQL)."""

    def __init__(self, start: int) -> None:
        self.next = start

    def take(self) -> int:
        value = self.next
        self.next += 1
        return value


async def _max_id(db: AsyncSession, column: Any) -> int:
    return int(await db.scalar(select(func.coalesce(func.max(column), 0))) or 0)


class _Chain:
    """Appends audit records in bulk, continuing the hash chain."""

    def __init__(self, seq: int, prev_hash: str) -> None:
        self.seq, self.prev_hash = seq, prev_hash
        self.rows: list[dict[str, Any]] = []

    def add(
        self, at: datetime, action: str, entity_type: str, entity_id: Any, details: dict[str, Any]
    ) -> None:
        self.seq += 1
        fields: dict[str, Any] = {
            "seq": self.seq,
            "at": at,
            "actor_id": SYSTEM.id,
            "actor_role": SYSTEM.role,
            "action": action,
            "entity_type": entity_type,
            "entity_id": str(entity_id),
            "outcome": "success",
            "ip": None,
            "request_id": None,
            "details": orjson.loads(orjson.dumps(details)),
            "prev_hash": self.prev_hash,
        }
        fields["hash"] = self.prev_hash = audit.compute_hash(**fields)
        self.rows.append(fields)

    async def flush(self, db: AsyncSession) -> int:
        count = len(self.rows)
        if self.rows:
            await (await db.connection()).execute(insert(AuditRecord), self.rows)
            self.rows = []
        return count


async def _chain(db: AsyncSession) -> _Chain:
    if db.bind.dialect.name == "postgresql":  # take turns with the sealing trigger
        await db.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": audit.AUDIT_CHAIN_LOCK})
    tail = (
        await db.execute(
            select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
        )
    ).first()
    return _Chain(tail[0], tail[1]) if tail else _Chain(0, GENESIS)


async def pad_audit_log(db: AsyncSession, total: int, batch: int = 10_000) -> int:
    """Append `bench.filler` records (hash-chained like any other) until the audit log
    holds `total`: verification is measured over a log of that length without building
    that many journals. Returns how many were added."""
    added = 0
    while True:
        async with unit_of_work(db):
            chain = await _chain(db)
            missing = min(batch, total - chain.seq)
            if missing <= 0:
                return added
            now = datetime.now(UTC)
            for n in range(missing):
                chain.add(now, "bench.filler", "bench", chain.seq + 1, {"n": n})
            added += await chain.flush(db)


async def _sync_sequences(db: AsyncSession) -> None:
    if db.bind.dialect.name != "postgresql":
        return
    for table in ("users", "accounts", "journals", "entries"):
        await db.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
            )
        )
    await db.execute(
        text(
            "SELECT setval(pg_get_serial_sequence('customers', 'id'), "
            "(SELECT GREATEST(COALESCE(MAX(id), 1000), 1000) FROM customers))"
        )
    )


async def build(
    db: AsyncSession,
    settings: Settings,
    security: Security,
    *,
    customers: int,
    accounts_per_customer: int,
    journals: int,
    hot_account_entries: int = 0,
    prefix: str = "scale",
    progress: Callable[[int], None] | None = None,
    seed: int = 11,
) -> ScaleResult:
    """Customers (Active), accounts with opening deposits, then `journals` transfers among
    them; the first account also takes part in `hot_account_entries` of them (for
    statement and history measurements)."""
    rng = random.Random(seed)
    password_hash = await security.hash_password(SEED_PASSWORD)
    now = datetime.now(UTC)
    usernames: list[str] = []
    numbers: list[str] = []
    account_ids: list[int] = []
    owner: dict[int, int] = {}
    balances: dict[int, int] = {}
    total_entries = 0
    audit_count = 0

    async with unit_of_work(db):
        cash = await ledger.internal_account(await driver(db), ledger.CASH, settings.currency)
        users, custs = (
            _Ids(await _max_id(db, User.id) + 1),
            _Ids(max(await _max_id(db, Customer.id), 1000) + 1),
        )
        accts = _Ids(await _max_id(db, Account.id) + 1)
        chain = await _chain(db)
        user_rows, customer_rows, account_rows = [], [], []
        used_numbers = set((await db.scalars(select(Account.number))).all())
        for index in range(customers):
            uid, cid = users.take(), custs.take()
            username = f"{prefix}{index}"
            usernames.append(username)
            user_rows.append(
                {
                    "id": uid,
                    "username": username,
                    "email": f"{username}@scale.example",
                    "password_hash": password_hash,
                    "role": Role.customer,
                    "is_active": True,
                    "created_at": now,
                }
            )
            customer_rows.append(
                {
                    "id": cid,
                    "user_id": uid,
                    "full_name": f"Scale Customer {index}",
                    "date_of_birth": date(1980, 1, 1),
                    "phone": "+14155550100",
                    "address": "1 Scale Street",
                    "national_id_hmac": national_id_hmac(settings, f"SC{prefix}{index}"),
                    "national_id_last4": f"{index % 10000:04d}",
                    "status": CustomerStatus.active,
                    "kyc_status": KycStatus.verified,
                    "kyc_reasons": [],
                    "kyc_checked_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            chain.add(now, "customer.seed", "customer", cid, {"username": username})
            for _ in range(accounts_per_customer):
                number = accounts.new_number()
                while number in used_numbers:
                    number = accounts.new_number()
                used_numbers.add(number)
                aid = accts.take()
                account_rows.append(
                    {
                        "id": aid,
                        "number": number,
                        "customer_id": cid,
                        "kind": AccountKind.customer,
                        "code": None,
                        "type": "checking",
                        "currency": settings.currency,
                        "balance": 0,
                        "held": 0,
                        "status": "active",
                        "opened_at": now,
                        "closed_at": None,
                    }
                )
                numbers.append(number)
                account_ids.append(aid)
                owner[aid] = cid
                balances[aid] = 0
        conn = await db.connection()
        for rows, model in ((user_rows, User), (customer_rows, Customer), (account_rows, Account)):
            for start in range(0, len(rows), BATCH):
                await conn.execute(insert(model), rows[start : start + BATCH])
        audit_count += await chain.flush(db)
        await _sync_sequences(db)

    balances[cash.id] = cash.balance
    plan: list[tuple[str, int | None, int, int]] = [
        ("deposit", None, aid, OPENING_MINOR) for aid in account_ids
    ]
    hot = account_ids[0]
    for n in range(journals):
        src = hot if n < hot_account_entries and n % 2 else rng.choice(account_ids)
        dst = hot if n < hot_account_entries and not n % 2 else rng.choice(account_ids)
        while src == dst:
            dst = rng.choice(account_ids)
        plan.append(("transfer", src, dst, rng.randrange(1, 500)))

    made = 0
    started = now - timedelta(days=30)
    recent = now - timedelta(hours=25)
    step = timedelta(days=30) / max(1, len(plan))
    for start in range(0, len(plan), BATCH):
        async with unit_of_work(db):
            journal_ids = _Ids(await _max_id(db, Journal.id) + 1)
            entry_ids = _Ids(await _max_id(db, Entry.id) + 1)
            chain = await _chain(db)
            journal_rows, entry_rows = [], []
            touched: set[int] = set()
            for offset, (kind, src, dst, amount) in enumerate(plan[start : start + BATCH]):
                at = started + step * (start + offset)
                source = cash.id if src is None else src
                if src is not None and balances[src] < amount:
                    continue  # no overdraft: skip, as the API would refuse it
                jid = journal_ids.take()
                customer_id = owner[dst if src is None else src]
                journal_rows.append(
                    {
                        "id": jid,
                        "kind": JournalKind(kind),
                        "status": "completed",
                        "amount": amount,
                        "currency": settings.currency,
                        "from_account_id": src,
                        "to_account_id": dst,
                        "description": None,
                        "customer_id": customer_id,
                        "initiated_by": None,
                        "reverses_id": None,
                        "flagged": None,
                        "created_at": at,
                    }
                )
                for account_id, delta in ((source, -amount), (dst, amount)):
                    balances[account_id] += delta
                    touched.add(account_id)
                    entry_rows.append(
                        {
                            "id": entry_ids.take(),
                            "journal_id": jid,
                            "account_id": account_id,
                            "currency": settings.currency,
                            "amount": delta,
                            "balance_after": balances[account_id],
                            "created_at": at,
                        }
                    )
                chain.add(
                    at,
                    f"transaction.{kind}",
                    "transaction",
                    jid,
                    {"amount": format_amount(amount), "seeded": True},
                )
            conn = await db.connection()
            if journal_rows:
                await conn.execute(insert(Journal), journal_rows)
                await conn.execute(insert(Entry), entry_rows)
                await conn.execute(
                    update(Account)
                    .where(Account.id == bindparam("aid"))
                    .values(balance=bindparam("bal")),
                    [{"aid": aid, "bal": balances[aid]} for aid in sorted(touched)],
                )
                # The daily limit's per-minute totals (only the last day can matter).
                sql = await driver(db)
                for row in journal_rows:
                    if row["kind"] in ledger.OUTGOING and row["created_at"] > recent:
                        await sql.write(
                            *ledger.outgoing_writes(
                                row["customer_id"], row["created_at"], row["amount"]
                            )
                        )
            audit_count += await chain.flush(db)
            await _sync_sequences(db)
        made += len(journal_rows)
        total_entries += len(entry_rows)
        if progress is not None:
            progress(len(plan[start : start + BATCH]))
    return ScaleResult(
        customers, len(account_ids), made, total_entries, audit_count, usernames, numbers
    )
