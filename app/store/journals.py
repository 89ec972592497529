"""The ledger's one writer (tables journals, entries, accounts' balances, and the daily
limit's outgoing_minutes).

`post_journal` is the only function that writes entries and holds: deposits,
withdrawals, transfers, holds on large ones and their approval or release, and every
later disbursement, repayment, interest posting and reversal go through it. It refuses
an unbalanced journal; PostgreSQL checks again at COMMIT (a deferred constraint
trigger), and the accounts table's CHECK refuses a negative available balance as the
last guard.

A hold moves `held`, not `balance`: the customer's account holds the amount and the
bank's holds account the opposite, so holds too sum to zero per currency. A held journal
(`pending_review`) has no entries until it is settled: approved, its entries move the
money and the hold is released in one posting; rejected, only the hold is released and
the daily total gives the amount back.

Every new deposit, withdrawal and transfer is queued for fraud scoring here, in its own
transaction (table score_queue; app.services.scoring takes it from there).
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
SCORED = (JournalKind.deposit, JournalKind.withdrawal, JournalKind.transfer)
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
    scored: bool = True  # queued for fraud scoring (BANK_FRAUD_SCORING)


@dataclass(frozen=True, slots=True)
class Settlement:
    """The decision on a held journal: `completed` (its entries move the money) or
    `rejected` (the daily total of its customer's minute `counted_at` gives it back)."""

    journal_id: int
    kind: str
    status: JournalStatus
    amount: int
    currency: str
    description: str | None
    customer_id: int | None
    counted_at: datetime  # when the journal was created: the minute its amount went to


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
_SUB_OUTGOING = Sql(
    "UPDATE outgoing_minutes SET amount = amount - ? WHERE customer_id = ? AND minute = ?"
)
_SETTLE_JOURNAL = Sql("UPDATE journals SET status = ? WHERE id = ?")
_QUEUE_SCORE = Sql("INSERT INTO score_queue (journal_id, created_at) VALUES (?, ?)")
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


@functools.cache
def _move_held_sql(count: int) -> Sql:
    cases = " ".join("WHEN ? THEN CAST(? AS BIGINT)" for _ in range(count))
    marks = ", ".join("?" * count)
    return Sql(f"UPDATE accounts SET held = held + CASE id {cases} END WHERE id IN ({marks})")  # noqa: S608


def _check_balanced(lines: list[tuple[LockedAccount, int]], what: str = "journal lines") -> None:
    sums: dict[str, int] = defaultdict(int)
    for account, delta in lines:
        sums[account.currency] += delta
    if len(lines) < 2 or any(sums.values()) or any(delta == 0 for _, delta in lines):
        raise UnbalancedJournal(f"{what} do not balance: {sums}")
    if len({account.id for account, _ in lines}) != len(lines):
        raise UnbalancedJournal(f"{what} name each account once")


async def post_journal(
    tx: Tx,
    locked: Locked,
    journal: NewJournal | Settlement,
    lines: list[tuple[LockedAccount, int]],
    *,
    holds: list[tuple[LockedAccount, int]] | None = None,
    at: datetime | None = None,
) -> Posted:
    """Write one balanced journal: its header (or, settling a held one, its new status),
    its balance moves and entries, its hold moves, and, for a customer's outgoing
    movement, its minute of the daily total. The accounts of `lines` and `holds` are
    locked (`locked`, whose reserved id a new journal takes); their `balance` and `held`
    move here, so the entries and the caller can state each balance after it. `at`
    backdates the posting (default: now). A new journal is queued for fraud scoring."""
    if lines:
        _check_balanced(lines)
    if holds:
        _check_balanced(holds, "hold lines")
    if not lines and not holds:
        raise UnbalancedJournal("a journal moves a balance or a hold")
    ours = {account.id for account in (*locked.accounts.values(), *locked.bank.values())}
    if any(account.id not in ours for account, _ in (*lines, *(holds or ()))):
        raise ValueError("every account of a journal is locked with it (lock_movement)")
    journal_id = journal.journal_id if isinstance(journal, Settlement) else locked.take_journal_id()
    at = at or datetime.now(UTC)
    stamp = tx.timestamp(at)
    if isinstance(journal, Settlement):
        await tx.write(_SETTLE_JOURNAL, journal.status, journal_id)
    else:
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
    if holds:  # first: a release makes room for the balance move of the same posting
        held: list[object] = []
        for account, delta in holds:
            account.held += delta
            held += (account.id, delta)
        await tx.write(_move_held_sql(len(holds)), *held, *(account.id for account, _ in holds))
    if lines:
        entries: list[object] = []
        moves: list[object] = []
        for account, delta in lines:
            account.balance += delta
            entries += (journal_id, account.id, account.currency, delta, account.balance, stamp)
            moves += (account.id, delta)
        ids = (account.id for account, _ in lines)
        await tx.write(_move_balances_sql(len(lines)), *moves, *ids)
        await tx.write(_insert_entries_sql(len(lines)), *entries)
    if journal.kind in OUTGOING and journal.customer_id is not None:
        if isinstance(journal, Settlement):
            if journal.status == JournalStatus.rejected:  # its amount leaves the daily total
                minute = minute_of(journal.counted_at)
                await tx.write(_SUB_OUTGOING, journal.amount, journal.customer_id, minute)
        elif journal.status != JournalStatus.rejected:
            minute = minute_of(at)
            await tx.write(_ADD_OUTGOING, journal.customer_id, minute, journal.amount)
            if journal_id % PRUNE_EVERY == 0:  # the customer's minutes that left the window
                await tx.write(_PRUNE_OUTGOING, journal.customer_id, minute - 24 * 60 - 1)
    if isinstance(journal, NewJournal) and journal.kind in SCORED and journal.scored:
        await tx.write(_QUEUE_SCORE, journal_id, stamp)
    return Posted(
        journal_id,
        journal.kind,
        journal.status,
        journal.amount,
        journal.currency,
        journal.description,
        at,
    )
