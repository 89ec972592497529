"""Customers and accounts as a money movement locks them (tables customers, accounts).

Every movement takes its row locks in one global order: the caller's customer row first
(`lock_customer`, or `idempotency.claim_key` in the same statement), then the accounts
of its journal in ascending id, the bank's own account among them (`lock_movement`). Two
movements so never wait for each other in a circle, and one customer's movements take
turns, which the daily limit relies on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.db import Sql, Tx, locking

_COLUMNS = "id, number, customer_id, kind, currency, balance, held, status"


@dataclass(slots=True)
class LockedAccount:
    """An account row as the money path reads it under its lock."""

    id: int
    number: str
    customer_id: int | None
    kind: str
    currency: str
    balance: int
    held: int
    status: str
    blocked: bool = False  # a live block entry names it, its customer or their national id
    code: str | None = None  # the bank's own accounts: cash, holds, …

    @property
    def available_balance(self) -> int:
        return self.balance - self.held


@dataclass(slots=True)
class Locked:
    """A movement's accounts under lock, read in one statement (one round trip), and
    what its journal needs: the id reserved for it and the caller's daily total."""

    accounts: dict[str, LockedAccount]  # by number, locked in id order
    journal_id: int  # reserved for the journal (0 if no account was found; used once)
    sent_today: int | None  # the customer's outgoing total in the rolling 24 hours
    bank: dict[str, LockedAccount] = field(default_factory=dict)
    """The bank's own accounts asked for, by code (those that exist)."""

    @property
    def internal(self) -> LockedAccount | None:
        """The bank's account asked for first, if it exists."""
        return next(iter(self.bank.values()), None)

    def take_journal_id(self) -> int:
        """The reserved id, for the one journal posted under this lock."""
        journal_id, self.journal_id = self.journal_id, 0
        if not journal_id:
            raise ValueError("a lock posts one journal, with the id reserved with it")
        return journal_id


_LOCK_CUSTOMER = locking("SELECT status FROM customers WHERE id = ?")


async def lock_customer(tx: Tx, customer_id: int | None) -> str | None:
    """Lock a customer's row and return its status (None: no such customer)."""
    row = await tx.one(_LOCK_CUSTOMER, customer_id)
    return row[0] if row else None


# Rolling 24 hours = whole minutes after the window's first one (outgoing_minutes, written
# with each outgoing journal: app.store.journals) + the journals of that first minute
# that fall inside the window.
_SENT_SINCE = (
    "CAST("
    " (SELECT COALESCE(SUM(amount), 0) FROM outgoing_minutes"
    "  WHERE customer_id = ? AND minute > ?)"
    " + (SELECT COALESCE(SUM(amount), 0) FROM journals"
    "  WHERE customer_id = ? AND created_at > ? AND created_at < ?"
    "  AND kind IN ('withdrawal', 'transfer') AND status <> 'rejected')"
    " AS BIGINT)"
)
# The journal's id: the sequence's next value on PostgreSQL (a subquery, so drawn once
# per statement); on SQLite, where writers take turns, the next free id.
_NEXT_JOURNAL_ID = Sql(
    "(SELECT COALESCE(MAX(id), 0) + 1 FROM journals)", "(SELECT nextval('journals_id_seq'))"
)


# Built from placeholders only (the values travel as parameters), one text per shape.
@functools.cache
def _lock_movement_sql(count: int, outgoing: bool, internal: int) -> Sql:
    marks = ", ".join("?" * count)
    sent = _SENT_SINCE if outgoing else "NULL"
    # The bank's own accounts in the first account's currency, when asked, are locked in
    # the same statement and id order.
    codes = ", ".join("?" * internal)
    bank = (
        f" OR (code IN ({codes}) AND currency = (SELECT currency FROM accounts WHERE number = ?))"  # noqa: S608
    )
    query = (
        f"SELECT {_COLUMNS}, code, blocked_until, {{next_id}}, {sent} FROM accounts"  # noqa: S608
        f" WHERE number IN ({marks}){bank if internal else ''} ORDER BY id"
    )
    postgresql = Sql(query.format(next_id=_NEXT_JOURNAL_ID.postgresql)).postgresql
    return Sql(query.format(next_id=_NEXT_JOURNAL_ID.sqlite), postgresql + " FOR NO KEY UPDATE")


def _blocked(until: datetime | None, now: datetime) -> bool:
    """Whether a block (an account's `blocked_until`) holds."""
    return until is not None and until > now


def minute_of(at: datetime) -> int:
    """Whole minutes since the Unix epoch: the unit of the daily total's buckets."""
    return int(at.timestamp()) // 60


async def lock_movement(
    tx: Tx,
    numbers: list[str],
    *,
    outgoing_of: int | None = None,
    internal: str | tuple[str, ...] | None = None,
) -> Locked:
    """Lock the accounts `numbers` and the bank's own accounts `internal` (their codes)
    in the first one's currency, in id order; say of each whether a live block entry
    names it (`blocked`, from its `blocked_until`: app.services.blocks); reserve the
    journal's id; and, for an outgoing movement of customer `outgoing_of`, sum what that
    customer sent in the rolling 24 hours. The caller holds that customer's lock, taken
    in an earlier statement: this one's snapshot so includes every movement of theirs
    that committed before, and none can commit until this one does."""
    window: tuple[Any, ...] = ()
    if outgoing_of is not None:
        since = datetime.now(UTC) - timedelta(hours=24)
        first = minute_of(since)
        first_ends = datetime.fromtimestamp((first + 1) * 60, UTC)
        window = (outgoing_of, first, outgoing_of, tx.timestamp(since), tx.timestamp(first_ends))
    codes = (internal,) if isinstance(internal, str) else internal or ()
    bank = (*codes, numbers[0]) if codes else ()
    statement = _lock_movement_sql(len(numbers), outgoing_of is not None, len(codes))
    rows = await tx.all(statement, *window, *numbers, *bank)
    now = datetime.now(UTC)
    locked = [
        LockedAccount(*row[:-4], blocked=_blocked(tx.read_time(row[-3]), now), code=row[-4])
        for row in rows
    ]
    internals = {a.code: a for a in locked if a.kind == "internal"}
    return Locked(
        {account.number: account for account in locked if account.kind != "internal"},
        rows[0][-2] if rows else 0,
        rows[0][-1] if rows else None,
        {code: internals[code] for code in codes if code in internals},
    )


_INTERNAL_ACCOUNT = locking(
    f"SELECT {_COLUMNS}, FALSE, code FROM accounts WHERE code = ? AND currency = ?"  # noqa: S608
)
_CREATE_INTERNAL = Sql(
    "INSERT INTO accounts (number, customer_id, kind, code, type, currency, balance, held,"
    " status, opened_at) VALUES (?, NULL, 'internal', ?, 'internal', ?, 0, 0, 'active', ?)"
    " ON CONFLICT DO NOTHING"
)


async def add_internal_account(
    tx: Tx, locked: Locked, code: str, currency: str, *, new_number: Callable[[], str]
) -> LockedAccount:
    """The bank's own account `code` (cash, …) in `currency` when `lock_movement` found
    none: created with a number from `new_number` (a concurrent creator's row wins: ON
    CONFLICT DO NOTHING, then read again), locked, and added to `locked` as its internal
    account. Only a currency's first movement needs this."""
    row = await tx.one(_INTERNAL_ACCOUNT, code, currency)
    while row is None:  # again only if the random number was taken
        now = tx.timestamp(datetime.now(UTC))
        await tx.write(_CREATE_INTERNAL, new_number(), code, currency, now)
        row = await tx.one(_INTERNAL_ACCOUNT, code, currency)
    account = LockedAccount(*row[:-2], code=code)
    locked.bank[code] = account
    return account
