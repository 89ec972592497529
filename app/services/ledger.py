"""Money movement: deposits, withdrawals and transfers, each one database transaction in
which balances, ledger entries, the idempotency record and the audit record commit
together or not at all.

`journal_writes` is the only function that writes entries. It refuses an unbalanced
journal; PostgreSQL checks again at COMMIT (deferred constraint trigger), and the
accounts table's CHECK refuses a negative available balance as the last guard.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from app.db import Database, Driver, Sql, Write, locking, movement, retry_on_conflict
from app.errors import (
    AmountTooLarge,
    CurrencyMismatch,
    DailyLimitExceeded,
    InsufficientFunds,
    SameAccount,
)
from app.models import Journal, JournalKind, JournalStatus
from app.money import format_amount
from app.security import Principal
from app.services import accounts, audit, idempotency
from app.services.accounts import LockedAccount
from app.services.audit import Actor
from app.services.idempotency import IdempotencyKey, Outcome
from app.settings import Settings

CASH = "cash"
OUTGOING = (JournalKind.withdrawal, JournalKind.transfer)
# The money path's statements, on the unit of work's driver connection (app.db.Driver).
_INSERT_JOURNAL = Sql(
    "INSERT INTO journals (id, kind, status, amount, currency, from_account_id,"
    " to_account_id, description, customer_id, initiated_by, reverses_id, flagged, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)"
)
# Rolling 24 hours = whole minutes after the window's first one (outgoing_minutes) + the
# journals of that first minute that fall inside the window.
_SENT_SINCE = (
    "CAST("
    " (SELECT COALESCE(SUM(amount), 0) FROM outgoing_minutes"
    "  WHERE customer_id = ? AND minute > ?)"
    " + (SELECT COALESCE(SUM(amount), 0) FROM journals"
    "  WHERE customer_id = ? AND created_at > ? AND created_at < ?"
    "  AND kind IN ('withdrawal', 'transfer') AND status <> 'rejected')"
    " AS BIGINT)"
)
# The next journal id: the sequence's next value on PostgreSQL (a subquery, so drawn once
# per statement); on SQLite, where writers take turns, the next free id.
_NEXT_JOURNAL_ID = Sql(
    "(SELECT COALESCE(MAX(id), 0) + 1 FROM journals)", "(SELECT nextval('journals_id_seq'))"
)
_ADD_OUTGOING = Sql(
    "INSERT INTO outgoing_minutes (customer_id, minute, amount) VALUES (?, ?, ?)"
    " ON CONFLICT (customer_id, minute)"
    " DO UPDATE SET amount = outgoing_minutes.amount + excluded.amount"
)
_PRUNE_OUTGOING = Sql("DELETE FROM outgoing_minutes WHERE customer_id = ? AND minute < ?")
PRUNE_EVERY = 64  # journals: a customer's minutes older than the window go now and then
_CREATE_INTERNAL = Sql(
    "INSERT INTO accounts (number, customer_id, kind, code, type, currency, balance, held,"
    " status, opened_at) VALUES (?, NULL, 'internal', ?, 'internal', ?, 0, 0, 'active', ?)"
    " ON CONFLICT DO NOTHING"
)
_INTERNAL_ACCOUNT = locking(
    f"SELECT {accounts.ACCOUNT_COLUMNS} FROM accounts WHERE code = ? AND currency = ?"  # noqa: S608
)


# Built from placeholders only (the values travel as parameters), one text per line count.
@functools.cache
def _move_balances_sql(count: int) -> Sql:
    """Relative update of `count` balances in one statement (correct even if a lock were
    ever missed)."""
    cases = " ".join("WHEN ? THEN CAST(? AS BIGINT)" for _ in range(count))
    marks = ", ".join("?" * count)
    return Sql(f"UPDATE accounts SET balance = balance + CASE id {cases} END WHERE id IN ({marks})")  # noqa: S608


@functools.cache
def _insert_entries_sql(count: int) -> Sql:
    rows = ", ".join("(?, ?, ?, ?, ?, ?)" for _ in range(count))
    columns = "journal_id, account_id, currency, amount, balance_after, created_at"
    return Sql(f"INSERT INTO entries ({columns}) VALUES {rows}")  # noqa: S608


@functools.cache
def _lock_movement_sql(count: int, outgoing: bool, internal: bool) -> Sql:
    marks = ", ".join("?" * count)
    sent = _SENT_SINCE if outgoing else "NULL"
    # The bank's own account in the first account's currency, when asked, is locked in
    # the same statement and id order: every movement takes its locks in one order.
    bank = " OR (code = ? AND currency = (SELECT currency FROM accounts WHERE number = ?))"
    # Placeholders only: the values travel as parameters.
    query = (
        f"SELECT {accounts.ACCOUNT_COLUMNS}, {{next_id}}, {sent} FROM accounts"  # noqa: S608
        f" WHERE number IN ({marks}){bank if internal else ''} ORDER BY id"
    )
    postgresql = Sql(query.format(next_id=_NEXT_JOURNAL_ID.postgresql)).postgresql
    return Sql(query.format(next_id=_NEXT_JOURNAL_ID.sqlite), postgresql + " FOR UPDATE")


@dataclass(slots=True)
class Locked:
    """What a movement reads before it writes, in one statement (one round trip)."""

    accounts: dict[str, LockedAccount]  # by number, locked in id order
    journal_id: int  # reserved for the movement's journal (0 if no account was found)
    sent_today: int | None  # the customer's outgoing total in the rolling 24 hours
    internal: LockedAccount | None = None  # the bank's account asked for, if it exists


async def lock_movement(
    sql: Driver,
    numbers: list[str],
    *,
    outgoing_of: int | None = None,
    internal: str | None = None,
) -> Locked:
    """Lock the movement's accounts (as accounts.lock_accounts: same rows, same order)
    and the bank's own account `internal` in the first one's currency, reserve the
    journal's id and, for an outgoing movement of customer `outgoing_of`, sum what that
    customer sent in the rolling 24 hours. The caller holds that customer's lock, taken
    in an earlier statement: this one's snapshot so includes every movement of theirs
    that committed before, and none can commit until this one does."""
    window: tuple[Any, ...] = ()
    if outgoing_of is not None:
        since = datetime.now(UTC) - timedelta(hours=24)
        first = _minute(since)
        first_ends = datetime.fromtimestamp((first + 1) * 60, UTC)
        window = (outgoing_of, first, outgoing_of, sql.timestamp(since), sql.timestamp(first_ends))
    bank = (internal, numbers[0]) if internal is not None else ()
    statement = _lock_movement_sql(len(numbers), outgoing_of is not None, internal is not None)
    rows = await sql.all(statement, *window, *numbers, *bank)
    locked = [LockedAccount(*row[:-2]) for row in rows]
    return Locked(
        {account.number: account for account in locked},
        rows[0][-2] if rows else 0,
        rows[0][-1] if rows else None,
        next((a for a in locked if a.kind == "internal"), None) if internal else None,
    )


# PostgreSQL: the key's claim and the customer's lock in one statement (the claim's
# result in the same row). SQLite has no INSERT inside WITH: it runs the claim first.
_CLAIM_AND_LOCK_CUSTOMER = locking(
    f"WITH claimed AS ({idempotency.CLAIM.sqlite})"  # noqa: S608
    " SELECT status, (SELECT COUNT(*) FROM claimed) FROM customers WHERE id = ?"
)


async def _start(
    sql: Driver,
    principal: Principal,
    idem: IdempotencyKey | None,
    numbers: list[str],
    *,
    outgoing: bool,
    internal: str | None = None,
) -> Locked | Outcome:
    """A movement's reads: the key's claim and the customer's lock (one statement on
    PostgreSQL), then `lock_movement`. Returns the answer stored under the key instead if
    it was taken before (replayed whatever the customer's status is now; on PostgreSQL
    after the customer's in-flight movements, whose lock the statement also waits for);
    otherwise checks that the customer may move money."""
    claimed = True
    if idem is None:
        status = await accounts.lock_customer(sql, principal)
    elif sql.is_sqlite:
        claim, values = idempotency.claiming(sql, idem)
        claimed = await sql.one(claim, *values) is not None
        status = await accounts.lock_customer(sql, principal)
    else:
        _, values = idempotency.claiming(sql, idem)
        row = await sql.one(_CLAIM_AND_LOCK_CUSTOMER, *values, principal.customer_id)
        status, claimed = (row[0], row[1] == 1) if row else (None, True)
    if not claimed:
        assert idem is not None
        return await idempotency.stored(sql, idem)
    accounts.check_can_transact(status)
    outgoing_of = principal.customer_id if outgoing else None
    return await lock_movement(sql, numbers, outgoing_of=outgoing_of, internal=internal)


T = TypeVar("T")


def queued(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Take the database's admission slot (PostgreSQL) for the whole movement, retries
    included; SQLite writers queue in the group commit instead."""

    @functools.wraps(fn)
    async def wrapper(database: Database, *args: Any, **kwargs: Any) -> T:
        gate = database.admission
        if gate is None:
            return await fn(database, *args, **kwargs)
        async with gate:
            return await fn(database, *args, **kwargs)

    return wrapper


@dataclass(frozen=True, slots=True)
class Posted:
    """The journal `journal_writes` writes, as the response and the audit record need it."""

    id: int
    kind: str
    status: str
    amount: int
    currency: str
    description: str | None
    created_at: datetime
    flagged: bool | None = None


class UnbalancedJournal(AssertionError):
    """A programming error: entries of one journal must sum to zero per currency."""


def journal_writes(
    sql: Driver,
    *,
    journal_id: int,
    kind: JournalKind,
    amount: int,
    currency: str,
    lines: list[tuple[LockedAccount, int]],
    description: str | None,
    customer_id: int | None,
    initiated_by: int | None,
    from_account: LockedAccount | None = None,
    to_account: LockedAccount | None = None,
) -> tuple[Posted, list[Write]]:
    """The writes of one balanced journal (numbered `journal_id`, reserved when its
    accounts were locked): the journal, its balance moves, its entries and the customer's
    outgoing minute. The accounts must be locked by the caller; their `balance` moves
    here, so the entries and the answer can state each balance after the journal. The
    caller sends the writes (`Driver.write`), with the rest of its movement."""
    sums: dict[str, int] = defaultdict(int)
    for account, delta in lines:
        sums[account.currency] += delta
    if len(lines) < 2 or any(sums.values()) or any(delta == 0 for _, delta in lines):
        raise UnbalancedJournal(f"journal lines do not balance: {sums}")
    deltas = {account.id: delta for account, delta in lines}
    if len(deltas) != len(lines):
        raise UnbalancedJournal("a journal names each account once")
    now = datetime.now(UTC)
    stamp = sql.timestamp(now)
    journal = Posted(journal_id, kind, JournalStatus.completed, amount, currency, description, now)
    entries: list[Any] = []
    for account, delta in lines:
        account.balance += delta
        entries += (journal_id, account.id, account.currency, delta, account.balance, stamp)
    writes: list[Write] = [
        (
            _INSERT_JOURNAL,
            (
                journal_id,
                kind,
                JournalStatus.completed,
                amount,
                currency,
                from_account.id if from_account else None,
                to_account.id if to_account else None,
                description,
                customer_id,
                initiated_by,
                stamp,
            ),
        ),
        (_move_balances_sql(len(deltas)), (*[v for pair in deltas.items() for v in pair], *deltas)),
        (_insert_entries_sql(len(lines)), tuple(entries)),
    ]
    if kind in OUTGOING and customer_id is not None:
        writes += outgoing_writes(customer_id, now, amount, prune=journal_id % PRUNE_EVERY == 0)
    return journal, writes


def outgoing_writes(
    customer_id: int, at: datetime, amount: int, *, prune: bool = False
) -> list[Write]:
    """Count an outgoing movement in its minute (see OutgoingMinute); now and then drop
    the customer's minutes that have left the window."""
    minute = _minute(at)
    writes: list[Write] = [(_ADD_OUTGOING, (customer_id, minute, amount))]
    if prune:
        writes.append((_PRUNE_OUTGOING, (customer_id, minute - 24 * 60 - 1)))
    return writes


def transaction_view(
    journal: Journal | Posted,
    *,
    from_number: str | None,
    to_number: str | None,
    balance_after: int | None,
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


def check_funds(account: LockedAccount, amount: int) -> None:
    if account.available_balance < amount:
        raise InsufficientFunds(
            f"Account {account.number} has {format_amount(account.available_balance)} "
            f"available; {format_amount(amount)} was requested.",
            field="amount",
        )


def _minute(at: datetime) -> int:
    return int(at.timestamp()) // 60


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


async def internal_account(sql: Driver, code: str, currency: str) -> LockedAccount:
    """The bank's own account `code` (cash, …) in `currency`, locked like every account
    a journal moves (its entries state its balance after each one), and created on first
    use (a concurrent creator's row wins: ON CONFLICT DO NOTHING, then read again).
    Movements lock it with their other accounts (`lock_movement`); this is for its first
    use in a currency, and for tools."""
    row = await sql.one(_INTERNAL_ACCOUNT, code, currency)
    while row is None:  # again only if the random number was taken
        now = sql.timestamp(datetime.now(UTC))
        await sql.one(_CREATE_INTERNAL, accounts.new_number(), code, currency, now)
        row = await sql.one(_INTERNAL_ACCOUNT, code, currency)
    return LockedAccount(*row)


async def _finish(
    sql: Driver,
    principal: Principal,
    idem: IdempotencyKey | None,
    journal: Posted,
    writes: list[Write],
    view: dict[str, Any],
) -> Outcome:
    """The journal's writes, the answer stored under the key and the audit record, sent
    together: one round trip on PostgreSQL, where most of a movement's cost is round
    trips, and the rows stay locked until COMMIT."""
    outcome = Outcome(201, view)
    record = await audit.appending(
        sql,
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
    await sql.write(*writes, *idempotency.completion(idem, outcome), record)
    return outcome


async def _move(
    database: Database,
    principal: Principal,
    action: str,
    body: Callable[[Driver], Coroutine[Any, Any, Outcome]],
) -> Outcome:
    """Run a movement's `body` in its unit of work; a refusal for another customer's
    account is audited as a denial."""
    async with audit.denials_recorded(database, actor=Actor.of(principal), action=action):
        return await movement(database, body)


async def deposit(
    database: Database,
    *,
    principal: Principal,
    account_number: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Outcome:
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
) -> Outcome:
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


@queued
@retry_on_conflict
async def _cash_movement(
    database: Database,
    kind: JournalKind,
    *,
    principal: Principal,
    account_number: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Outcome:
    settings = database.settings
    outgoing = kind == JournalKind.withdrawal
    number = accounts.parse_number(account_number, field="account_number")
    check_amount(settings, amount)
    idem = IdempotencyKey.of(
        principal.user_id,
        idempotency_key,
        kind,
        {"account_number": number, "amount": amount, "description": description},
    )

    async def body(sql: Driver) -> Outcome:
        locked = await _start(sql, principal, idem, [number], outgoing=outgoing, internal=CASH)
        if isinstance(locked, Outcome):
            return locked
        account = accounts.owned(locked.accounts.get(number), principal, number, "account_number")
        accounts.check_active(account, "account_number")
        if outgoing:
            check_funds(account, amount)
            check_daily_limit(settings, locked.sent_today, amount)
        cash = locked.internal or await internal_account(sql, CASH, account.currency)
        delta = -amount if outgoing else amount
        journal, writes = journal_writes(
            sql,
            journal_id=locked.journal_id,
            kind=kind,
            amount=amount,
            currency=account.currency,
            lines=[(account, delta), (cash, -delta)],
            description=description,
            customer_id=principal.customer_id,
            initiated_by=principal.user_id,
            from_account=account if outgoing else None,
            to_account=None if outgoing else account,
        )
        view = transaction_view(
            journal,
            from_number=number if outgoing else None,
            to_number=None if outgoing else number,
            balance_after=account.balance,
        )
        return await _finish(sql, principal, idem, journal, writes, view)

    return await _move(database, principal, f"transaction.{kind}", body)


@queued
@retry_on_conflict
async def transfer(
    database: Database,
    *,
    principal: Principal,
    from_account: str,
    to_account: str,
    amount: int,
    description: str | None,
    idempotency_key: str | None,
) -> Outcome:
    settings = database.settings
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

    async def body(sql: Driver) -> Outcome:
        locked = await _start(sql, principal, idem, [source, target], outgoing=True)
        if isinstance(locked, Outcome):
            return locked
        src = accounts.owned(locked.accounts.get(source), principal, source, "from_account")
        dst = locked.accounts.get(target)
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
        check_daily_limit(settings, locked.sent_today, amount)
        journal, writes = journal_writes(
            sql,
            journal_id=locked.journal_id,
            kind=JournalKind.transfer,
            amount=amount,
            currency=src.currency,
            lines=[(src, -amount), (dst, amount)],
            description=description,
            customer_id=principal.customer_id,
            initiated_by=principal.user_id,
            from_account=src,
            to_account=dst,
        )
        view = transaction_view(
            journal, from_number=source, to_number=target, balance_after=src.balance
        )
        return await _finish(sql, principal, idem, journal, writes, view)

    return await _move(database, principal, "transaction.transfer", body)
