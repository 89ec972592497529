"""A customer's transaction history: newest first, keyset-paginated by transaction id.

A page is read per account, newest journal first, below the cursor. With an index on
entries (account_id, journal_id) that is a short backward range read however deep the
page, so page 100 costs what page 1 costs and neither grows with the account's history;
without one, each page reads and sorts the account's entries (the cost before keysets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CompoundSelect, Select, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import TransactionNotFound, ValidationFailed
from app.models import Account, AccountKind, Entry, Hold, HoldStatus, Journal
from app.security import Principal
from app.services import accounts, audit
from app.services.audit import Actor
from app.services.ledger import TransactionView
from app.services.pagination import Slice, decode_cursor, read_limit, slice_of


async def views_of(
    db: AsyncSession, journals: list[Journal], *, of: Callable[[int, int | None], bool]
) -> list[TransactionView]:
    """Transaction objects with `balance_after` of the account `of(account id, customer
    id)` says is the reader's (none: no balance)."""
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
        if of(e.account_id, e.customer_id)
    }
    views = []
    for journal in journals:
        balance_after = None
        for account_id in (journal.from_account_id, journal.to_account_id):
            if account_id is not None and (journal.id, account_id) in own_balance:
                balance_after = own_balance[(journal.id, account_id)]
                break
        views.append(
            TransactionView.of(
                journal,
                from_number=numbers.get(journal.from_account_id),
                to_number=numbers.get(journal.to_account_id),
                balance_after=balance_after,
            )
        )
    return views


# Up to this many accounts, each is read as its own index range and the pages merged;
# beyond it (rare), one read over all of them, sorted.
MERGED_ACCOUNTS = 16


def journals_touching(
    account_ids: list[int],
    *,
    before_id: int | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> Select[tuple[int]]:
    """Ids of the newest `limit` journals with an entry on one of the accounts, below
    `before_id`, posted in [since, until)."""
    query = select(Entry.journal_id)
    if len(account_ids) == 1:
        query = query.where(Entry.account_id == account_ids[0])
    else:
        query = query.where(Entry.account_id.in_(account_ids))
    if before_id is not None:
        query = query.where(Entry.journal_id < before_id)
    if since is not None or until is not None:
        query = query.join(Journal, Journal.id == Entry.journal_id)
        if since is not None:
            query = query.where(Journal.created_at >= since)
        if until is not None:
            query = query.where(Journal.created_at < until)
    # Grouped, so a journal with two lines on these accounts counts once and never cuts
    # a page short; GROUP BY rather than DISTINCT: without the index SQLite then sorts
    # once instead of twice, with it neither sorts.
    return query.group_by(Entry.journal_id).order_by(Entry.journal_id.desc()).limit(limit)


async def list_transactions(
    db: AsyncSession,
    *,
    principal: Principal,
    account_number: str | None,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
) -> Slice[TransactionView]:
    """The caller's transactions, newest first, a page of `limit` below the cursor."""
    before_id = decode_cursor(cursor)
    staff = accounts.is_staff(principal)
    if staff and account_number is None:
        raise ValidationFailed("Staff name the account to list.", field="account_number")
    owned = select(Account.id).where(Account.kind == AccountKind.customer)
    if not staff:
        owned = owned.where(Account.customer_id == principal.customer_id)
    if account_number is not None:
        number = accounts.parse_number(account_number, field="account_number")
        owned = owned.where(Account.number == number)
    account_ids = list((await db.scalars(owned.order_by(Account.id))).all())
    if not account_ids:
        return Slice([], None)
    if staff:
        await audit.record_read(
            db,
            actor=Actor.of(principal),
            action="transaction.list",
            entity_type="account",
            entity_id=number,
        )
    rows = read_limit(limit)

    def page(of: list[int]) -> Select[tuple[int]]:
        return journals_touching(of, before_id=before_id, since=since, until=until, limit=rows)

    pages = (
        [page([a]) for a in account_ids]
        if len(account_ids) <= MERGED_ACCOUNTS
        else [page(account_ids)]
    )
    # A held transaction has no entries until it is approved: its hold names the account.
    held = select(Hold.journal_id).where(
        Hold.account_id.in_(account_ids), Hold.status != HoldStatus.approved
    )
    if before_id is not None:
        held = held.where(Hold.journal_id < before_id)
    if since is not None:
        held = held.where(Hold.created_at >= since)
    if until is not None:
        held = held.where(Hold.created_at < until)
    pages.append(held.order_by(Hold.journal_id.desc()).limit(rows))
    ids: CompoundSelect[tuple[int]] = union(*(select(p.subquery().c[0]) for p in pages))
    query = select(Journal).where(Journal.id.in_(ids)).order_by(Journal.id.desc()).limit(rows)
    journals = list((await db.scalars(query)).all())
    listed = set(account_ids)
    views = await views_of(db, journals, of=lambda account_id, _: account_id in listed)
    return slice_of(views, limit, key=lambda view: int(view.transaction_id))


async def get_transaction(
    db: AsyncSession, *, principal: Principal, transaction_id: str
) -> TransactionView:
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="transaction.read"):
        journal_id = (
            int(transaction_id) if transaction_id.isdigit() and len(transaction_id) <= 18 else None
        )
        journal = await db.get(Journal, journal_id) if journal_id is not None else None
        if journal is None:
            raise TransactionNotFound(f"No transaction {transaction_id}.")
        if accounts.is_staff(principal):
            views = await views_of(db, [journal], of=lambda _, __: False)
            await audit.record_read(
                db,
                actor=Actor.of(principal),
                action="transaction.read",
                entity_type="transaction",
                entity_id=journal.id,
            )
            return views[0]
        views = await views_of(db, [journal], of=lambda _, owner: owner == principal.customer_id)
        mine = await db.scalar(
            select(Entry.id)
            .join(Account, Account.id == Entry.account_id)
            .where(Entry.journal_id == journal.id, Account.customer_id == principal.customer_id)
            .limit(1)
        )
        if mine is None:  # held, so no entries yet (or rejected): its hold names the account
            mine = await db.scalar(
                select(Hold.journal_id)
                .join(Account, Account.id == Hold.account_id)
                .where(Hold.journal_id == journal.id, Account.customer_id == principal.customer_id)
            )
        if mine is None:
            raise TransactionNotFound(f"No transaction {transaction_id}.").denying(
                "transaction", transaction_id
            )
        return views[0]


@dataclass(frozen=True, slots=True)
class TransactionFilter:
    customer_id: int | None = None
    kind: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_amount: int | None = None


async def list_all(
    db: AsyncSession, *, where: TransactionFilter, cursor: str | None, limit: int
) -> Slice[tuple[TransactionView, str | None]]:
    """Every customer's transactions (and the bank's own postings), newest first, with
    whose they are: the auditors' view."""
    query = select(Journal).order_by(Journal.id.desc()).limit(read_limit(limit))
    for column, value in (
        (Journal.customer_id, where.customer_id),
        (Journal.kind, where.kind),
        (Journal.status, where.status),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(Journal.created_at >= where.since)
    if where.until is not None:
        query = query.where(Journal.created_at < where.until)
    if where.min_amount is not None:
        query = query.where(Journal.amount >= where.min_amount)
    if (before := decode_cursor(cursor)) is not None:
        query = query.where(Journal.id < before)
    journals = list((await db.scalars(query)).all())
    views = await views_of(db, journals, of=lambda _, __: False)
    owners = [str(j.customer_id) if j.customer_id is not None else None for j in journals]
    return slice_of(
        list(zip(views, owners, strict=True)), limit, key=lambda row: int(row[0].transaction_id)
    )
