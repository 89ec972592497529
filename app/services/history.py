"""A customer's transaction history: newest first, keyset-paginated by transaction id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import TransactionNotFound
from app.models import Account, Entry, Journal
from app.security import Principal
from app.services import accounts, audit
from app.services.audit import Actor
from app.services.ledger import transaction_view


async def _views(
    db: AsyncSession, principal: Principal, journals: list[Journal]
) -> list[dict[str, Any]]:
    """Transaction objects with `balance_after` of the caller's account."""
    if not journals:
        return []
    ids = [j.id for j in journals]
    entries = (
        await db.execute(
            select(Entry.journal_id, Entry.account_id, Entry.balance_after, Account.customer_id)
            .join(Account, Account.id == Entry.account_id)
            .where(Entry.journal_id.in_(ids))
        )
    ).all()
    account_ids = {j.from_account_id for j in journals} | {j.to_account_id for j in journals}
    numbers = dict(
        (
            await db.execute(
                select(Account.id, Account.number).where(Account.id.in_(account_ids - {None}))
            )
        ).all()
    )
    own_balance: dict[tuple[int, int], int] = {
        (e.journal_id, e.account_id): e.balance_after
        for e in entries
        if e.customer_id == principal.customer_id
    }
    views = []
    for journal in journals:
        balance_after = None
        for account_id in (journal.from_account_id, journal.to_account_id):
            if account_id is not None and (journal.id, account_id) in own_balance:
                balance_after = own_balance[(journal.id, account_id)]
                break
        views.append(
            transaction_view(
                journal,
                from_number=numbers.get(journal.from_account_id),
                to_number=numbers.get(journal.to_account_id),
                balance_after=balance_after,
            )
        )
    return views


async def list_transactions(
    db: AsyncSession,
    *,
    principal: Principal,
    account_number: str | None,
    since: datetime | None,
    until: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    touched = (
        select(Entry.journal_id)
        .join(Account, Account.id == Entry.account_id)
        .where(Account.customer_id == principal.customer_id)
    )
    if account_number is not None:
        number = accounts.parse_number(account_number, field="account_number")
        touched = touched.where(Account.number == number)
    query = select(Journal).where(Journal.id.in_(touched)).order_by(Journal.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Journal.id < before_id)
    if since is not None:
        query = query.where(Journal.created_at >= since)
    if until is not None:
        query = query.where(Journal.created_at < until)
    journals = list((await db.scalars(query)).all())
    return await _views(db, principal, journals)


async def get_transaction(
    db: AsyncSession, *, principal: Principal, transaction_id: str
) -> dict[str, Any]:
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="transaction.read"):
        journal_id = (
            int(transaction_id) if transaction_id.isdigit() and len(transaction_id) <= 18 else None
        )
        journal = await db.get(Journal, journal_id) if journal_id is not None else None
        if journal is None:
            raise TransactionNotFound(f"No transaction {transaction_id}.")
        views = await _views(db, principal, [journal])
        mine = await db.scalar(
            select(Entry.id)
            .join(Account, Account.id == Entry.account_id)
            .where(Entry.journal_id == journal.id, Account.customer_id == principal.customer_id)
            .limit(1)
        )
        if mine is None:
            raise TransactionNotFound(f"No transaction {transaction_id}.").denying(
                "transaction", transaction_id
            )
        return views[0]
