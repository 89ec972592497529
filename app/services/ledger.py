"""Money movement: deposits, withdrawals and transfers, and the rules they follow.

Each movement is one money transaction (`app.db.money_transaction`): the caller's lock,
the accounts' locks, the journal (written by the store's one posting function,
`app.store.post_journal`), the audit record and the answer filed under the idempotency
key commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from app import store
from app.db import Database, Tx, money_transaction
from app.errors import (
    AccountNotFound,
    AmountTooLarge,
    BlockedCounterparty,
    CurrencyMismatch,
    DailyLimitExceeded,
    InsufficientFunds,
    SameAccount,
)
from app.models import JobKind, Journal, JournalKind, JournalStatus
from app.money import format_amount
from app.schemas.common import iso_utc
from app.security import Principal
from app.services import accounts, audit, idempotency
from app.services.audit import Actor
from app.settings import Settings
from app.store import IdempotencyKey, LockedAccount, NewJournal, Posted

CASH = "cash"  # the code of the bank's cash account, one per currency
HOLDS = "holds"  # the bank's holds account: the other side of every hold, per currency


@dataclass(frozen=True, slots=True)
class TransactionView:
    """The API's transaction object (API.md §5; its schema: TransactionOut)."""

    transaction_id: str
    type: str
    status: str
    amount: str
    currency: str
    from_account: str | None
    to_account: str | None
    description: str | None
    created_at: str
    balance_after: str | None
    flagged: bool | None

    @classmethod
    def stored(cls, body: dict[str, Any]) -> TransactionView:
        """The view filed under an Idempotency-Key (its JSON), whatever version of the
        view filed it: a field it lacks is null, one it has that the view lost is left."""
        return cls(*(body.get(name) for name in cls.__dataclass_fields__))

    @classmethod
    def of(
        cls,
        journal: Journal | Posted,
        *,
        from_number: str | None,
        to_number: str | None,
        balance_after: int | None,
    ) -> TransactionView:
        return cls(
            str(journal.id),
            journal.kind,
            journal.status,
            format_amount(journal.amount),
            journal.currency,
            from_number,
            to_number,
            journal.description,
            iso_utc(journal.created_at),
            format_amount(balance_after) if balance_after is not None else None,
            journal.flagged,
        )


@dataclass(frozen=True, slots=True)
class Movement:
    """A money endpoint's answer: the transaction, and whether it is a replay of the
    answer given to an earlier request with the same Idempotency-Key."""

    transaction: TransactionView
    replayed: bool = False


def check_amount(settings: Settings, amount: int) -> None:
    if amount > settings.max_transaction_minor:
        raise AmountTooLarge(
            f"{format_amount(amount)} is above the per-transaction maximum of "
            f"{format_amount(settings.max_transaction_minor)}.",
            field="amount",
        )


def check_funds(account: LockedAccount, amount: int) -> None:
    if account.available_balance < amount:
        raise InsufficientFunds(
            f"Account {account.number} has {format_amount(account.available_balance)} "
            f"available; {format_amount(amount)} was requested.",
            field="amount",
        )


def check_not_blocked(account: LockedAccount, field: str) -> None:
    """A movement from or to an account that a live block-list entry names (the account,
    its customer or the customer's national id) is refused."""
    if account.blocked:
        raise BlockedCounterparty(
            f"Account {account.number} cannot send or receive money: it is on the bank's"
            " block list.",
            field=field,
        )


def is_held(settings: Settings, kind: JournalKind, amount: int) -> bool:
    """Withdrawals and transfers at or above BANK_REVIEW_THRESHOLD wait for an admin;
    deposits are never held (large ones are scored)."""
    return kind != JournalKind.deposit and amount >= settings.review_threshold_minor


def check_daily_limit(settings: Settings, used: int | None, amount: int) -> None:
    """Rolling 24 hours of the customer's outgoing movements (`used`, as `lock_movement`
    read it under the customer's lock, so concurrent movements cannot both pass)."""
    if used is None:
        raise ValueError("lock_movement sums outgoing movements only when asked to")
    if used + amount > settings.daily_limit_minor:
        left = max(0, settings.daily_limit_minor - used)
        raise DailyLimitExceeded(
            f"The rolling 24-hour outgoing limit is {format_amount(settings.daily_limit_minor)}"
            f"; {format_amount(left)} is left.",
            field="amount",
        )


async def deposit(
    database: Database,
    *,
    principal: Principal,
    account_number: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Movement:
    """Cash in: the caller's account is credited against the bank's cash account."""
    return await _cash_movement(
        database,
        JournalKind.deposit,
        principal=principal,
        account_number=account_number,
        amount=amount,
        description=description,
        idempotency_key=idempotency_key,
    )


async def withdraw(
    database: Database,
    *,
    principal: Principal,
    account_number: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Movement:
    """Cash out: funds and the daily limit are checked under the account's lock."""
    return await _cash_movement(
        database,
        JournalKind.withdrawal,
        principal=principal,
        account_number=account_number,
        amount=amount,
        description=description,
        idempotency_key=idempotency_key,
    )


async def _cash_movement(
    database: Database,
    kind: JournalKind,
    *,
    principal: Principal,
    account_number: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Movement:
    settings = database.settings
    outgoing = kind == JournalKind.withdrawal
    number = accounts.parse_number(account_number, field="account_number")
    check_amount(settings, amount)
    held = is_held(settings, kind, amount)
    key = idempotency.key_for(
        principal.user_id,
        idempotency_key,
        kind,
        {"account_number": number, "amount": amount, "description": description},
    )

    async def move_cash(tx: Tx) -> Movement:
        if (replay := await _lock_caller(tx, principal, key)) is not None:
            return replay
        locked = await store.lock_movement(
            tx,
            [number],
            outgoing_of=principal.customer_id if outgoing else None,
            internal=HOLDS if held else CASH,
        )
        account = accounts.owned(locked.accounts.get(number), principal, number, "account_number")
        accounts.check_active(account, "account_number")
        check_not_blocked(account, "account_number")
        if outgoing:
            check_funds(account, amount)
            check_daily_limit(settings, locked.sent_today, amount)
        lines: list[tuple[LockedAccount, int]] = []
        if not held:
            cash = locked.internal or await store.add_internal_account(
                tx, locked, CASH, account.currency, new_number=accounts.new_number
            )
            delta = -amount if outgoing else amount
            lines = [(account, delta), (cash, -delta)]
        header = NewJournal(
            kind,
            amount,
            account.currency,
            description,
            customer_id=principal.customer_id,
            initiated_by=principal.user_id,
            from_account=account if outgoing else None,
            to_account=None if outgoing else account,
            status=JournalStatus.pending_review if held else JournalStatus.completed,
            scored=settings.fraud_scoring,
        )
        posted = await _post_or_hold(tx, locked, header, account, lines)
        view = TransactionView.of(
            posted,
            from_number=number if outgoing else None,
            to_number=None if outgoing else number,
            balance_after=account.balance,
        )
        return await _audit_and_answer(
            tx,
            principal,
            key,
            view,
            hold=_hold(settings, account, amount, posted) if held else None,
        )

    return await _in_transaction(database, principal, f"transaction.{kind}", move_cash)


async def transfer(
    database: Database,
    *,
    principal: Principal,
    from_account: str,
    to_account: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Movement:
    settings = database.settings
    source = accounts.parse_number(from_account, field="from_account")
    target = accounts.parse_number(to_account, field="to_account")
    if source == target:
        raise SameAccount("An account cannot transfer to itself.", field="to_account")
    check_amount(settings, amount)
    key = idempotency.key_for(
        principal.user_id,
        idempotency_key,
        JournalKind.transfer,
        {
            "from_account": source,
            "to_account": target,
            "amount": amount,
            "description": description,
        },
    )

    held = is_held(settings, JournalKind.transfer, amount)

    async def move_funds(tx: Tx) -> Movement:
        if (replay := await _lock_caller(tx, principal, key)) is not None:
            return replay
        locked = await store.lock_movement(
            tx,
            [source, target],
            outgoing_of=principal.customer_id,
            internal=HOLDS if held else None,
        )
        src = accounts.owned(locked.accounts.get(source), principal, source, "from_account")
        dst = locked.accounts.get(target)
        if dst is None or dst.kind != "customer":
            raise AccountNotFound(f"No account {target}.", field="to_account")
        accounts.check_active(src, "from_account")
        accounts.check_active(dst, "to_account")
        if src.currency != dst.currency:
            raise CurrencyMismatch(
                f"Account {source} is in {src.currency}, account {target} in {dst.currency}.",
                field="to_account",
            )
        check_not_blocked(src, "from_account")
        check_not_blocked(dst, "to_account")
        check_funds(src, amount)
        check_daily_limit(settings, locked.sent_today, amount)
        header = NewJournal(
            JournalKind.transfer,
            amount,
            src.currency,
            description,
            customer_id=principal.customer_id,
            initiated_by=principal.user_id,
            from_account=src,
            to_account=dst,
            status=JournalStatus.pending_review if held else JournalStatus.completed,
            scored=settings.fraud_scoring,
        )
        posted = await _post_or_hold(tx, locked, header, src, [(src, -amount), (dst, amount)])
        view = TransactionView.of(
            posted, from_number=source, to_number=target, balance_after=src.balance
        )
        return await _audit_and_answer(
            tx, principal, key, view, hold=_hold(settings, src, amount, posted) if held else None
        )

    return await _in_transaction(database, principal, "transaction.transfer", move_funds)


async def _post_or_hold(
    tx: Tx,
    locked: store.Locked,
    header: NewJournal,
    source: LockedAccount,
    lines: list[tuple[LockedAccount, int]],
) -> Posted:
    """Post the movement's `lines`; or, held (`pending_review`), hold its amount on
    `source` against the bank's holds account instead: an admin's approval moves it."""
    if header.status != JournalStatus.pending_review:
        return await store.post_journal(tx, locked, header, lines)
    holds = locked.bank.get(HOLDS) or await store.add_internal_account(
        tx, locked, HOLDS, source.currency, new_number=accounts.new_number
    )
    return await store.post_journal(
        tx, locked, header, [], holds=[(source, header.amount), (holds, -header.amount)]
    )


def _hold(
    settings: Settings, account: LockedAccount, amount: int, posted: Posted
) -> tuple[LockedAccount, int, datetime]:
    return account, amount, posted.created_at + settings.hold_expiry


async def _in_transaction(
    database: Database,
    principal: Principal,
    action: str,
    movement: Callable[[Tx], Coroutine[Any, Any, Movement]],
) -> Movement:
    """`movement` in its money transaction; a refusal for another customer's account is
    audited as a denial (in a transaction of its own: the movement's rolled back)."""
    async with audit.denials_recorded(database, actor=Actor.of(principal), action=action):
        return await money_transaction(database, movement)


async def _lock_caller(tx: Tx, principal: Principal, key: IdempotencyKey | None) -> Movement | None:
    """Lock the caller's customer row (claiming the Idempotency-Key in the same
    statement) and check that the caller may move money. A key used before is answered
    what it was answered then, whatever the customer's status is now."""
    if key is None:
        status = await store.lock_customer(tx, principal.customer_id)
    else:
        claim = await store.claim_key(tx, key, customer_id=principal.customer_id)
        if not claim.claimed:
            body = idempotency.replayed_body(await store.stored_answer(tx, key), key)
            return Movement(TransactionView.stored(body), replayed=True)
        status = claim.customer_status
    accounts.check_can_transact(status)
    return None


async def _audit_and_answer(
    tx: Tx,
    principal: Principal,
    key: IdempotencyKey | None,
    view: TransactionView,
    *,
    hold: tuple[LockedAccount, int, datetime] | None = None,
) -> Movement:
    """The movement's audit record, and its answer filed under its key: on PostgreSQL
    they go with the journal's writes, in one statement. A held movement (`hold`: its
    source account) also files its hold and the job that expires it."""
    await audit.record(
        tx,
        actor=Actor.of(principal),
        action=f"transaction.{view.type}",
        entity_type="transaction",
        entity_id=view.transaction_id,
        details={
            "amount": view.amount,
            "currency": view.currency,
            "from_account": view.from_account,
            "to_account": view.to_account,
        },
    )
    if hold is not None:
        account, amount, expires = hold
        journal_id = int(view.transaction_id)
        await store.add_hold(
            tx, journal_id, principal.customer_id, account.id, amount, expires_at=expires
        )
    if key is not None:
        await store.store_answer(tx, key, 201, orjson.dumps(view))
    if hold is not None:  # the queued job goes last: its insert returns the job's id
        await store.enqueue_job(
            tx, JobKind.hold_expiry, {"journal_id": journal_id}, run_after=expires
        )
    return Movement(view)
