"""Money movement: deposits, withdrawals and transfers, each one database transaction in
which balances, ledger entries, the idempotency record and the audit record commit
together or not at all.

`post_journal` is the only function that writes entries. It refuses an unbalanced
journal; PostgreSQL checks again at COMMIT (deferred constraint trigger), and the
accounts table's CHECK refuses a negative available balance as the last guard.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import BigInteger, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.db import database_of, retry_on_conflict, unit_of_work
from app.errors import (
    AmountTooLarge,
    CurrencyMismatch,
    DailyLimitExceeded,
    InsufficientFunds,
    SameAccount,
)
from app.models import Account, Entry, Journal, JournalKind, JournalStatus
from app.money import format_amount
from app.security import Principal
from app.services import accounts, audit, idempotency
from app.services.audit import Actor
from app.services.idempotency import IdempotencyKey, Outcome
from app.settings import Settings

CASH = "cash"
OUTGOING = (JournalKind.withdrawal, JournalKind.transfer)
_INSERT_JOURNAL = insert(Journal).returning(Journal.id)
_INSERT_ENTRY = insert(Entry)
# Relative update: correct even if a lock were ever missed.
_MOVE_BALANCE = (
    update(Account)
    .where(Account.id == bindparam("account_id"))
    .values(balance=Account.balance + bindparam("delta", type_=BigInteger))
    .returning(Account.balance)
)
_OUTGOING_SINCE = select(func.coalesce(func.sum(Journal.amount), 0)).where(
    Journal.customer_id == bindparam("customer_id"),
    Journal.created_at > bindparam("since"),
    Journal.kind.in_(OUTGOING),
    Journal.status != JournalStatus.rejected,
)
JOURNAL_COLUMNS = (
    "kind",
    "status",
    "amount",
    "currency",
    "from_account_id",
    "to_account_id",
    "description",
    "customer_id",
    "initiated_by",
    "reverses_id",
    "flagged",
    "created_at",
)

T = TypeVar("T")


def queued(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Take the database's admission slot (PostgreSQL) for the whole movement, retries
    included; SQLite writers queue in the group commit instead."""

    @functools.wraps(fn)
    async def wrapper(db: AsyncSession, *args: Any, **kwargs: Any) -> T:
        gate = database_of(db).admission
        if gate is None:
            return await fn(db, *args, **kwargs)
        async with gate:
            return await fn(db, *args, **kwargs)

    return wrapper


class UnbalancedJournal(AssertionError):
    """A programming error: entries of one journal must sum to zero per currency."""


async def post_journal(
    db: AsyncSession,
    *,
    kind: JournalKind,
    amount: int,
    currency: str,
    lines: list[tuple[Account, int]],
    description: str | None,
    customer_id: int | None,
    initiated_by: int | None,
    from_account: Account | None = None,
    to_account: Account | None = None,
) -> tuple[Journal, dict[int, int]]:
    """Write one balanced journal and move the cached balances. Accounts must already be
    locked by the caller. Returns the journal and each account's balance after it."""
    sums: dict[str, int] = defaultdict(int)
    for account, delta in lines:
        sums[account.currency] += delta
    if len(lines) < 2 or any(sums.values()) or any(delta == 0 for _, delta in lines):
        raise UnbalancedJournal(f"journal lines do not balance: {sums}")
    now = datetime.now(UTC)
    journal = Journal(
        kind=kind,
        status=JournalStatus.completed,
        amount=amount,
        currency=currency,
        from_account_id=from_account.id if from_account else None,
        to_account_id=to_account.id if to_account else None,
        description=description,
        customer_id=customer_id,
        initiated_by=initiated_by,
        reverses_id=None,
        flagged=None,
        created_at=now,
    )
    # Core statements built once, not the ORM unit of work: this is the service's hot path.
    conn = await db.connection()
    journal.id = (
        await conn.execute(
            _INSERT_JOURNAL, {column: getattr(journal, column) for column in JOURNAL_COLUMNS}
        )
    ).scalar_one()
    balances: dict[int, int] = {}
    entries = []
    for account, delta in sorted(lines, key=lambda line: line[0].id):
        new_balance = (
            await conn.execute(_MOVE_BALANCE, {"account_id": account.id, "delta": delta})
        ).scalar_one()
        set_committed_value(account, "balance", new_balance)
        balances[account.id] = new_balance
        entries.append(
            {
                "journal_id": journal.id,
                "account_id": account.id,
                "currency": account.currency,
                "amount": delta,
                "balance_after": new_balance,
                "created_at": now,
            }
        )
    await conn.execute(_INSERT_ENTRY, entries)
    return journal, balances


def transaction_view(
    journal: Journal, *, from_number: str | None, to_number: str | None, balance_after: int | None
) -> dict[str, Any]:
    """The API's transaction object (API.md §5)."""
    return {
        "transaction_id": str(journal.id),
        "type": journal.kind,
        "status": journal.status,
        "amount": format_amount(journal.amount),
        "currency": journal.currency,
        "from_account": from_number,
        "to_account": to_number,
        "description": journal.description,
        "created_at": journal.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "balance_after": format_amount(balance_after) if balance_after is not None else None,
        "flagged": journal.flagged,
    }


def check_amount(settings: Settings, amount: int) -> None:
    if amount > settings.max_transaction_minor:
        raise AmountTooLarge(
            f"{format_amount(amount)} is above the per-transaction maximum of "
            f"{format_amount(settings.max_transaction_minor)}.",
            field="amount",
        )


def check_funds(account: Account, amount: int) -> None:
    if account.available_balance < amount:
        raise InsufficientFunds(
            f"Account {account.number} has {format_amount(account.available_balance)} "
            f"available; {format_amount(amount)} was requested.",
            field="amount",
        )


async def outgoing_last_24h(db: AsyncSession, customer_id: int) -> int:
    since = datetime.now(UTC) - timedelta(hours=24)
    total = await db.scalar(_OUTGOING_SINCE, {"customer_id": customer_id, "since": since})
    return int(total or 0)


async def check_daily_limit(
    db: AsyncSession, settings: Settings, customer_id: int, amount: int
) -> None:
    used = await outgoing_last_24h(db, customer_id)
    if used + amount > settings.daily_limit_minor:
        left = max(0, settings.daily_limit_minor - used)
        raise DailyLimitExceeded(
            f"The rolling 24-hour outgoing limit is {format_amount(settings.daily_limit_minor)}"
            f"; {format_amount(left)} is left.",
            field="amount",
        )


async def _finish(
    db: AsyncSession,
    principal: Principal,
    idem: IdempotencyKey | None,
    journal: Journal,
    view: dict[str, Any],
) -> Outcome:
    await audit.record(
        db,
        actor=Actor.of(principal),
        action=f"transaction.{journal.kind}",
        entity_type="transaction",
        entity_id=journal.id,
        details={
            "amount": view["amount"],
            "currency": journal.currency,
            "from_account": view["from_account"],
            "to_account": view["to_account"],
        },
    )
    return await idempotency.complete(db, idem, Outcome(201, view))


async def deposit(
    db: AsyncSession,
    settings: Settings,
    *,
    principal: Principal,
    account_number: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Outcome:
    """Cash in: the caller's account is credited against the bank's cash account."""
    return await _cash_movement(
        db,
        settings,
        JournalKind.deposit,
        principal=principal,
        account_number=account_number,
        amount=amount,
        description=description,
        idempotency_key=idempotency_key,
    )


async def withdraw(
    db: AsyncSession,
    settings: Settings,
    *,
    principal: Principal,
    account_number: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Outcome:
    """Cash out: funds and the daily limit are checked under the account's lock."""
    return await _cash_movement(
        db,
        settings,
        JournalKind.withdrawal,
        principal=principal,
        account_number=account_number,
        amount=amount,
        description=description,
        idempotency_key=idempotency_key,
    )


@queued
@retry_on_conflict
async def _cash_movement(
    db: AsyncSession,
    settings: Settings,
    kind: JournalKind,
    *,
    principal: Principal,
    account_number: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Outcome:
    outgoing = kind == JournalKind.withdrawal
    number = accounts.parse_number(account_number, field="account_number")
    check_amount(settings, amount)
    idem = IdempotencyKey.of(
        principal.user_id,
        idempotency_key,
        kind,
        {"account_number": number, "amount": amount, "description": description},
    )
    async with (
        audit.denials_recorded(db, actor=Actor.of(principal), action=f"transaction.{kind}"),
        unit_of_work(db),
    ):
        if idem and (replay := await idempotency.claim(db, idem)):
            return replay
        customer = await accounts.lock_customer(db, principal)
        account = (await accounts.lock_accounts(db, [number])).get(number)
        account = accounts.owned(account, principal, number, "account_number")
        accounts.check_active(account, "account_number")
        if outgoing:
            check_funds(account, amount)
            await check_daily_limit(db, settings, customer.id, amount)
        cash = await accounts.internal_account(db, CASH, account.currency)
        delta = -amount if outgoing else amount
        journal, balances = await post_journal(
            db,
            kind=kind,
            amount=amount,
            currency=account.currency,
            lines=[(account, delta), (cash, -delta)],
            description=description,
            customer_id=customer.id,
            initiated_by=principal.user_id,
            from_account=account if outgoing else None,
            to_account=None if outgoing else account,
        )
        view = transaction_view(
            journal,
            from_number=number if outgoing else None,
            to_number=None if outgoing else number,
            balance_after=balances[account.id],
        )
        return await _finish(db, principal, idem, journal, view)


@queued
@retry_on_conflict
async def transfer(
    db: AsyncSession,
    settings: Settings,
    *,
    principal: Principal,
    from_account: str,
    to_account: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Outcome:
    source = accounts.parse_number(from_account, field="from_account")
    target = accounts.parse_number(to_account, field="to_account")
    if source == target:
        raise SameAccount("An account cannot transfer to itself.", field="to_account")
    check_amount(settings, amount)
    idem = IdempotencyKey.of(
        principal.user_id,
        idempotency_key,
        "transfer",
        {
            "from_account": source,
            "to_account": target,
            "amount": amount,
            "description": description,
        },
    )
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="transaction.transfer"):
        async with unit_of_work(db):
            if idem and (replay := await idempotency.claim(db, idem)):
                return replay
            customer = await accounts.lock_customer(db, principal)
            locked = await accounts.lock_accounts(db, [source, target])
            src = accounts.owned(locked.get(source), principal, source, "from_account")
            dst = locked.get(target)
            if dst is None or dst.kind != "customer":
                raise accounts.AccountNotFound(f"No account {target}.", field="to_account")
            accounts.check_active(src, "from_account")
            accounts.check_active(dst, "to_account")
            if src.currency != dst.currency:
                raise CurrencyMismatch(
                    f"Account {source} is in {src.currency}, account {target} in {dst.currency}.",
                    field="to_account",
                )
            check_funds(src, amount)
            await check_daily_limit(db, settings, customer.id, amount)
            journal, balances = await post_journal(
                db,
                kind=JournalKind.transfer,
                amount=amount,
                currency=src.currency,
                lines=[(src, -amount), (dst, amount)],
                description=description,
                customer_id=customer.id,
                initiated_by=principal.user_id,
                from_account=src,
                to_account=dst,
            )
            view = transaction_view(
                journal, from_number=source, to_number=target, balance_after=balances[src.id]
            )
            return await _finish(db, principal, idem, journal, view)
