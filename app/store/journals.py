"""The ledger's one writer (tables journals, entries, accounts' balances, and the daily
limit's outgoing_minutes).

`post_journal` is the only function that writes entries: deposits, withdrawals,
transfers, and every later hold, release, disbursement, repayment, interest posting and
reversal go through it. It refuses an unbalanced journal; PostgreSQL checks again at
COMMIT (a deferred constraint trigger), and the accounts table's CHECK refuses a negative
available balance as the last guard.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from app.db import Sql, Tx
from app.models import JournalKind, JournalStatus
from app.store.accounts import Locked, LockedAccount, minute_of

OUTGOING = (JournalKind.withdrawal, JournalKind.transfer)
PRUNE_EVERY = 64  # journals: a customer's minutes older than the window go now and then


class UnbalancedJournal(AssertionError):
    """A programming error: entries of one journal must sum to zero per currency."""


@dataclass(frozen=True, slots=True)
class NewJournal:
    """A journal's header, as the service that moves the money decides it."""

    kind: JournalKind
    amount: int
    currency: str
    description: str | None
    customer_id: int | None  # whose movement it is (the daily limit counts it)
    initiated_by: int | None  # the user who asked for it
    from_account: LockedAccount | None = None
    to_account: LockedAccount | None = None
    status: JournalStatus = JournalStatus.completed


@dataclass(frozen=True, slots=True)
class Posted:
    """A journal as `post_journal` wrote it."""

    id: int
    kind: str
    status: str
    amount: int
    currency: str
    description: str | None
    created_at: datetime
    flagged: bool | None = None


_INSERT_JOURNAL = Sql(
    "INSERT INTO journals (id, kind, status, amount, currency, from_account_id,"
    " to_account_id, description, customer_id, initiated_by, reverses_id, flagged, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)"
)
_ADD_OUTGOING = Sql(
    "INSERT INTO outgoing_minutes (customer_id, minute, amount) VALUES (?, ?, ?)"
    " ON CONFLICT (customer_id, minute)"
    " DO UPDATE SET amount = outgoing_minutes.amount + excluded.amount"
)
# Minutes that left the window: never the one the same journal adds to (`disjoint`), so
# it goes with the journal's other writes.
_PRUNE_OUTGOING = Sql(
    "DELETE FROM outgoing_minutes WHERE customer_id = ? AND minute < ?", disjoint=True
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


def _check_balanced(lines: list[tuple[LockedAccount, int]]) -> None:
    sums: dict[str, int] = defaultdict(int)
    for account, delta in lines:
        sums[account.currency] += delta
    if len(lines) < 2 or any(sums.values()) or any(delta == 0 for _, delta in lines):
        raise UnbalancedJournal(f"journal lines do not balance: {sums}")
    if len({account.id for account, _ in lines}) != len(lines):
        raise UnbalancedJournal("a journal names each account once")


async def post_journal(
    tx: Tx,
    locked: Locked,
    journal: NewJournal,
    lines: list[tuple[LockedAccount, int]],
    *,
    at: datetime | None = None,
) -> Posted:
    """Write one balanced journal: its header, its balance moves, its entries and, for a
    customer's outgoing movement, its minute of the daily total. The accounts of
    `lines` are locked (`locked`, whose reserved id the journal takes); their `balance`
    moves here, so the entries and the caller can state each balance after it. `at`
    backdates the posting (default: now)."""
    _check_balanced(lines)
    held = {account.id for account in locked.accounts.values()}
    if locked.internal is not None:
        held.add(locked.internal.id)
    if any(account.id not in held for account, _ in lines):
        raise ValueError("every account of a journal is locked with it (lock_movement)")
    journal_id = locked.take_journal_id()
    at = at or datetime.now(UTC)
    stamp = tx.timestamp(at)
    entries: list[object] = []
    moves: list[object] = []
    for account, delta in lines:
        account.balance += delta
        entries += (journal_id, account.id, account.currency, delta, account.balance, stamp)
        moves += (account.id, delta)
    source, target = journal.from_account, journal.to_account
    await tx.write(
        _INSERT_JOURNAL,
        journal_id,
        journal.kind,
        journal.status,
        journal.amount,
        journal.currency,
        source.id if source else None,
        target.id if target else None,
        journal.description,
        journal.customer_id,
        journal.initiated_by,
        stamp,
    )
    await tx.write(_move_balances_sql(len(lines)), *moves, *(account.id for account, _ in lines))
    await tx.write(_insert_entries_sql(len(lines)), *entries)
    if (
        journal.kind in OUTGOING
        and journal.customer_id is not None
        and journal.status != JournalStatus.rejected
    ):
        minute = minute_of(at)
        await tx.write(_ADD_OUTGOING, journal.customer_id, minute, journal.amount)
        if journal_id % PRUNE_EVERY == 0:  # the customer's minutes that left the window
            await tx.write(_PRUNE_OUTGOING, journal.customer_id, minute - 24 * 60 - 1)
    return Posted(
        journal_id,
        journal.kind,
        journal.status,
        journal.amount,
        journal.currency,
        journal.description,
        at,
    )
