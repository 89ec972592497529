"""Large, valid books for the scale curves (bench.scale), built as the API builds them.

Customers (Active, one password hash shared) with accounts are inserted in bulk; every
journal after that — an opening deposit per account, then transfers among them — goes
through the store's one posting function (app.store.post_journal) under its accounts'
lock, with its audit record (app.services.audit.record), a few thousand per transaction.
Only the HTTP work and the per-request transactions are skipped.

    python -m bench.books --journals 100000 --customers 1000   # into BANK_DATA_DIR's db
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import store
from app.cli import migrate_database
from app.db import Database, Tx, end_reads, unit_of_work
from app.models import (
    Account,
    AccountKind,
    AuditRecord,
    Customer,
    CustomerStatus,
    JournalKind,
    KycStatus,
    Role,
    User,
)
from app.money import format_amount
from app.security import Security
from app.services import accounts, audit
from app.services.audit import SYSTEM
from app.services.customers import national_id_hmac
from app.services.ledger import CASH
from app.settings import Settings, load_settings

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


async def pad_audit_log(db: AsyncSession, total: int, batch: int = 10_000) -> int:
    """Append `bench.filler` records (hash-chained like any other) until the audit log
    holds `total`: verification is measured over a log of that length without building
    that many journals. Returns how many were added."""
    added = 0
    while True:
        held = int(await db.scalar(select(func.coalesce(func.max(AuditRecord.seq), 0))) or 0)
        await end_reads(db)
        missing = min(batch, total - held)
        if missing <= 0:
            return added
        async with unit_of_work(db) as tx:
            for n in range(missing):
                await audit.record(
                    tx,
                    actor=SYSTEM,
                    action="bench.filler",
                    entity_type="bench",
                    entity_id=held + n + 1,
                    details={"n": n},
                )
        added += missing


async def _add_customers(
    db: AsyncSession,
    tx: Tx,
    settings: Settings,
    password_hash: str,
    *,
    count: int,
    accounts_each: int,
    prefix: str,
) -> tuple[list[str], list[str]]:
    """`count` Active customers, each with `accounts_each` empty checking accounts."""
    now = datetime.now(UTC)
    usernames = [f"{prefix}{index}" for index in range(count)]
    user_ids = await db.scalars(
        insert(User).returning(User.id, sort_by_parameter_order=True),
        [
            {
                "username": name,
                "email": f"{name}@scale.example",
                "password_hash": password_hash,
                "role": Role.customer,
                "is_active": True,
            }
            for name in usernames
        ],
    )
    customer_ids = list(
        await db.scalars(
            insert(Customer).returning(Customer.id, sort_by_parameter_order=True),
            [
                {
                    "user_id": user_id,
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
                }
                for index, user_id in enumerate(user_ids)
            ],
        )
    )
    taken = set((await db.scalars(select(Account.number))).all())
    numbers: list[str] = []
    rows = []
    for customer_id in customer_ids:
        for _ in range(accounts_each):
            number = accounts.new_number()
            while number in taken:
                number = accounts.new_number()
            taken.add(number)
            numbers.append(number)
            rows.append(
                {
                    "number": number,
                    "customer_id": customer_id,
                    "kind": AccountKind.customer,
                    "type": "checking",
                    "currency": settings.currency,
                    "balance": 0,
                    "held": 0,
                    "status": "active",
                }
            )
    for start in range(0, len(rows), BATCH):
        await db.execute(insert(Account), rows[start : start + BATCH])
    for customer_id, username in zip(customer_ids, usernames, strict=True):
        await audit.record(
            tx,
            actor=SYSTEM,
            action="customer.seed",
            entity_type="customer",
            entity_id=customer_id,
            details={"username": username},
        )
    return usernames, numbers


async def _post(
    tx: Tx,
    settings: Settings,
    kind: JournalKind,
    source: str | None,
    target: str,
    amount: int,
    at: datetime,
) -> int:
    """One seeded journal (a deposit when `source` is None), as the API would post it;
    0 if it would overdraw its source, else its entry count."""
    numbers = [target] if source is None else [source, target]
    locked = await store.lock_movement(tx, numbers, internal=CASH if source is None else None)
    dst = locked.accounts[target]
    if source is None:
        src = locked.internal or await store.add_internal_account(
            tx, locked, CASH, settings.currency, new_number=accounts.new_number
        )
    else:
        src = locked.accounts[source]
        if src.available_balance < amount:
            return 0  # no overdraft: skipped, as the API would refuse it
    journal = store.NewJournal(
        kind,
        amount,
        settings.currency,
        None,
        customer_id=dst.customer_id if source is None else src.customer_id,
        initiated_by=None,
        from_account=None if source is None else src,
        to_account=dst,
    )
    posted = await store.post_journal(tx, locked, journal, [(src, -amount), (dst, amount)], at=at)
    await audit.record(
        tx,
        actor=SYSTEM,
        action=f"transaction.{kind}",
        entity_type="transaction",
        entity_id=posted.id,
        details={"amount": format_amount(amount), "seeded": True},
    )
    return 2


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
    them, spread over the last 30 days; the first account also takes part in
    `hot_account_entries` of them (for statement and history measurements)."""
    rng = random.Random(seed)
    password_hash = await security.hash_password(SEED_PASSWORD)
    async with unit_of_work(db) as tx:
        usernames, numbers = await _add_customers(
            db,
            tx,
            settings,
            password_hash,
            count=customers,
            accounts_each=accounts_per_customer,
            prefix=prefix,
        )
    plan: list[tuple[JournalKind, str | None, str, int]] = [
        (JournalKind.deposit, None, number, OPENING_MINOR) for number in numbers
    ]
    hot = numbers[0]
    for n in range(journals):
        src = hot if n < hot_account_entries and n % 2 else rng.choice(numbers)
        dst = hot if n < hot_account_entries and not n % 2 else rng.choice(numbers)
        while src == dst:
            dst = rng.choice(numbers)
        plan.append((JournalKind.transfer, src, dst, rng.randrange(1, 500)))
    now = datetime.now(UTC)
    started, step = now - timedelta(days=30), timedelta(days=30) / max(1, len(plan))
    entries = made = 0
    for start in range(0, len(plan), BATCH):
        async with unit_of_work(db) as tx:
            for offset, (kind, src, dst, amount) in enumerate(plan[start : start + BATCH]):
                at = started + step * (start + offset)
                posted = await _post(tx, settings, kind, src, dst, amount, at)
                entries += posted
                made += posted > 0
        if progress is not None:
            progress(len(plan[start : start + BATCH]))
    return ScaleResult(
        customers,
        len(numbers),
        made,
        entries,
        customers + made,
        usernames,
        numbers,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.books", description=__doc__)
    parser.add_argument("--journals", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--accounts", type=int, default=1, help="accounts per customer")
    args = parser.parse_args(argv)
    settings = load_settings()
    migrate_database(settings)

    async def go() -> ScaleResult:
        database = Database(settings)
        try:
            async with database.session() as db:
                return await build(
                    db,
                    settings,
                    Security(settings),
                    customers=args.customers,
                    accounts_per_customer=args.accounts,
                    journals=args.journals,
                )
        finally:
            await database.dispose()

    result = asyncio.run(go())
    print(
        f"scale books: {result.customers} customers, {result.accounts} accounts, "
        f"{result.journals} journals, {result.entries} entries; customers log in with "
        f"{SEED_PASSWORD!r}"
    )


if __name__ == "__main__":
    main()
