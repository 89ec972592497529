"""Trial balance and reconciliation: the ledger is the truth, the cached balances (and
the daily limit's per-minute totals) must agree with it. Used by `bank verify`,
GET /api/audit/ledger and the tests."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import database_of, read_snapshot
from app.errors import InstantInFuture
from app.models import (
    Account,
    AccountKind,
    Entry,
    Hold,
    HoldStatus,
    Installment,
    Journal,
    JournalKind,
    JournalStatus,
    Loan,
    LoanStatus,
    OutgoingMinute,
)
from app.money import format_amount
from app.schemas.common import iso_utc
from app.services.loan_ledger import LOAN_INTEREST, LOANS
from app.services.pagination import decode_cursor, read_limit, slice_of


@dataclass
class LedgerReport:
    balanced: bool
    journals_checked: int
    accounts_checked: int
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, dict[str, str]] = field(default_factory=dict)


async def _check_outgoing_minutes(db: AsyncSession) -> list[dict[str, Any]]:
    """The daily limit's per-minute totals (OutgoingMinute) against the journals, over
    the last 24 hours (older minutes may have been pruned)."""
    first = int(datetime.now(UTC).timestamp()) // 60 - 24 * 60
    expected: dict[tuple[int, int], int] = defaultdict(int)
    journals = await db.execute(
        select(Journal.customer_id, Journal.created_at, Journal.amount).where(
            Journal.customer_id.is_not(None),
            Journal.kind.in_((JournalKind.withdrawal, JournalKind.transfer)),
            Journal.status != JournalStatus.rejected,
            Journal.created_at >= datetime.fromtimestamp(first * 60, UTC),
        )
    )
    for customer_id, created_at, amount in journals:
        expected[(customer_id, int(created_at.timestamp()) // 60)] += amount
    stored = await db.execute(
        select(OutgoingMinute.customer_id, OutgoingMinute.minute, OutgoingMinute.amount).where(
            OutgoingMinute.minute >= first
        )
    )
    found = {(customer_id, minute): amount for customer_id, minute, amount in stored}
    return [
        {
            "kind": "outgoing_total_mismatch",
            "customer_id": str(customer_id),
            "minute": datetime.fromtimestamp(minute * 60, UTC).isoformat(),
            "stored": format_amount(found.get((customer_id, minute), 0)),
            "ledger": format_amount(expected.get((customer_id, minute), 0)),
        }
        for customer_id, minute in sorted(expected.keys() | found.keys())
        if expected.get((customer_id, minute), 0) != found.get((customer_id, minute), 0)
    ][:100]


async def _check_holds(db: AsyncSession) -> list[dict[str, Any]]:
    """Each customer account holds exactly its pending holds, and holds sum to zero per
    currency (the bank's holds account carries the other side)."""
    pending = (
        select(Hold.account_id, func.sum(Hold.amount).label("total"))
        .where(Hold.status == HoldStatus.pending)
        .group_by(Hold.account_id)
        .subquery()
    )
    rows = await db.execute(
        select(
            Account.number,
            Account.kind,
            Account.currency,
            Account.held,
            func.coalesce(pending.c.total, 0),
        ).outerjoin(pending, pending.c.account_id == Account.id)
    )
    found: list[dict[str, Any]] = []
    sums: dict[str, int] = defaultdict(int)
    for number, kind, currency, held, expected in rows:
        sums[currency] += held
        if kind == AccountKind.customer and held != int(expected):
            found.append(
                {
                    "kind": "held_mismatch",
                    "account_number": number,
                    "stored": format_amount(held),
                    "holds": format_amount(int(expected)),
                }
            )
    found += [
        {"kind": "holds_unbalanced", "currency": currency, "sum": format_amount(total)}
        for currency, total in sorted(sums.items())
        if total
    ]
    return found[:100]


async def _check_loans(db: AsyncSession) -> list[dict[str, Any]]:
    """The bank's loan accounts against the loans, per currency: `loans` carries the
    active loans' outstanding principal, `loan_interest` the interest accrued and the
    interest and fees fallen due (as far as each loan's accrual has run) not yet paid."""
    active = Loan.status == LoanStatus.active
    expected: dict[tuple[str, str], int] = defaultdict(int)
    lent = select(
        Loan.currency, func.sum(Loan.outstanding_principal), func.sum(Loan.accrued_interest)
    )
    for currency, principal, accrued in await db.execute(
        lent.where(active).group_by(Loan.currency)
    ):
        expected[(LOANS, currency)] -= int(principal or 0)
        expected[(LOAN_INTEREST, currency)] -= int(accrued or 0)
    owed = Installment.interest - Installment.paid_interest + Installment.fee - Installment.paid_fee
    due = (
        select(Loan.currency, func.sum(owed))
        .join(Loan, Loan.id == Installment.loan_id)
        .where(active, ~Installment.settled, Installment.due_date <= Loan.accrued_through)
        .group_by(Loan.currency)
    )
    for currency, amount in await db.execute(due):
        expected[(LOAN_INTEREST, currency)] -= int(amount or 0)
    stored = await db.execute(
        select(Account.code, Account.currency, Account.balance).where(
            Account.code.in_((LOANS, LOAN_INTEREST))
        )
    )
    found = {(code, currency): balance for code, currency, balance in stored}
    return [
        {
            "kind": "loan_book_mismatch",
            "account": code,
            "currency": currency,
            "stored": format_amount(found.get((code, currency), 0)),
            "loans": format_amount(expected.get((code, currency), 0)),
        }
        for code, currency in sorted(expected.keys() | found.keys())
        if expected.get((code, currency), 0) != found.get((code, currency), 0)
    ]


async def verify_ledger(db: AsyncSession) -> LedgerReport:
    # One snapshot for every check: on a busy PostgreSQL a movement committed between two
    # statements would otherwise look like a mismatch.
    await read_snapshot(db)
    mismatches: list[dict[str, Any]] = []
    unbalanced = await db.execute(
        select(Entry.journal_id, Entry.currency, func.sum(Entry.amount))
        .group_by(Entry.journal_id, Entry.currency)
        .having(func.sum(Entry.amount) != 0)
        .order_by(Entry.journal_id)
        .limit(100)
    )
    for journal_id, currency, total in unbalanced:
        mismatches.append(
            {
                "kind": "journal_unbalanced",
                "transaction_id": str(journal_id),
                "currency": currency,
                "sum": format_amount(int(total)),
            }
        )
    # A completed journal has its entries; a held (pending_review) or rejected one none.
    short = await db.execute(
        select(Journal.id)
        .outerjoin(Entry, Entry.journal_id == Journal.id)
        .where(Journal.status == JournalStatus.completed)
        .group_by(Journal.id)
        .having(func.count(Entry.id) < 2)
        .order_by(Journal.id)
        .limit(100)
    )
    for (journal_id,) in short:
        mismatches.append({"kind": "journal_incomplete", "transaction_id": str(journal_id)})
    early = await db.execute(
        select(Entry.journal_id)
        .join(Journal, Journal.id == Entry.journal_id)
        .where(Journal.status != JournalStatus.completed)
        .group_by(Entry.journal_id)
        .order_by(Entry.journal_id)
        .limit(100)
    )
    for (journal_id,) in early:
        mismatches.append({"kind": "entries_before_approval", "transaction_id": str(journal_id)})
    mismatches += await _check_holds(db)
    mismatches += await _check_loans(db)

    entry_sums = (
        select(Entry.account_id, func.sum(Entry.amount).label("total"))
        .group_by(Entry.account_id)
        .subquery()
    )
    rows = await db.execute(
        select(
            Account.number,
            Account.kind,
            Account.currency,
            Account.balance,
            func.coalesce(entry_sums.c.total, 0),
        ).outerjoin(entry_sums, entry_sums.c.account_id == Account.id)
    )
    accounts_checked = 0
    totals: dict[str, dict[str, int]] = {}
    for number, kind, currency, balance, ledger_total in rows:
        accounts_checked += 1
        ledger_total = int(ledger_total)
        if balance != ledger_total:
            mismatches.append(
                {
                    "kind": "balance_mismatch",
                    "account_number": number,
                    "stored": format_amount(balance),
                    "ledger": format_amount(ledger_total),
                }
            )
        bucket = totals.setdefault(currency, {"customer": 0, "internal": 0})
        bucket["customer" if kind == AccountKind.customer else "internal"] += balance
    for currency, bucket in totals.items():
        if bucket["customer"] + bucket["internal"] != 0:
            mismatches.append(
                {
                    "kind": "books_unbalanced",
                    "currency": currency,
                    "sum": format_amount(bucket["customer"] + bucket["internal"]),
                }
            )
    mismatches += await _check_outgoing_minutes(db)
    journals_checked = await db.scalar(select(func.count(Journal.id))) or 0
    return LedgerReport(
        balanced=not mismatches,
        journals_checked=int(journals_checked),
        accounts_checked=accounts_checked,
        mismatches=mismatches,
        totals={
            currency: {
                "customer_balances": format_amount(b["customer"]),
                "internal_balances": format_amount(b["internal"]),
                "net": format_amount(b["customer"] + b["internal"]),
            }
            for currency, b in sorted(totals.items())
        },
    )


@dataclass(frozen=True, slots=True)
class BalanceAt:
    account_number: str
    customer_id: str | None
    kind: str
    code: str | None
    currency: str
    balance: str


@dataclass(frozen=True, slots=True)
class BooksAt:
    """Every account's balance at an instant, recomputed from the entries, and the trial
    balance then."""

    at: datetime
    accounts: list[BalanceAt]
    next_cursor: str | None
    balanced: bool
    totals: dict[str, dict[str, str]]


def _balance_at(at: datetime) -> Any:
    """An account's balance at `at`: what its last entry by then left (entries carry the
    balance after them, written under the account's lock, so in order): one probe of
    ix_entries_account_time per account, whatever the size of the books."""
    return (
        select(Entry.balance_after)
        .where(Entry.account_id == Account.id, Entry.created_at <= at)
        .order_by(Entry.created_at.desc(), Entry.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def check_past(db: AsyncSession, at: datetime) -> None:
    """Books at an instant are what its entries say, so only an instant that has happened
    has them: a later one would answer today's figures, which change before then (422
    `at_in_future`, on the database's clock)."""
    now = database_of(db).clock()
    if at > now:
        raise InstantInFuture(
            f"The books at {iso_utc(at)} are not written yet: it is {iso_utc(now)} now.",
            field="at",
        )


async def books_at(db: AsyncSession, *, at: datetime, cursor: str | None, limit: int) -> BooksAt:
    """The accounts (a page of them, by id) with their balance at `at`, and the trial
    balance of every account then, read in one snapshot."""
    check_past(db, at)
    await read_snapshot(db)
    balance = func.coalesce(_balance_at(at), 0)
    opened = Account.opened_at <= at
    query = (
        select(
            Account.id,
            Account.number,
            Account.customer_id,
            Account.kind,
            Account.code,
            Account.currency,
            balance,
        )
        .where(opened)
        .order_by(Account.id)
        .limit(read_limit(limit))
    )
    if (after := decode_cursor(cursor)) is not None:
        query = query.where(Account.id > after)
    rows = (await db.execute(query)).all()
    page = slice_of(list(rows), limit, key=lambda row: row[0])
    inner = (
        select(Account.currency, Account.kind, balance.label("balance")).where(opened).subquery()
    )
    sums = await db.execute(
        select(inner.c.currency, inner.c.kind, func.sum(inner.c.balance)).group_by(
            inner.c.currency, inner.c.kind
        )
    )
    totals: dict[str, dict[str, int]] = {}
    for currency, kind, total in sums:
        bucket = totals.setdefault(currency, {"customer": 0, "internal": 0})
        bucket["customer" if kind == AccountKind.customer else "internal"] += int(total or 0)
    return BooksAt(
        at,
        [
            BalanceAt(
                number,
                str(owner) if owner else None,
                kind,
                code,
                currency,
                format_amount(int(value)),
            )
            for _, number, owner, kind, code, currency, value in page.items
        ],
        page.next_cursor,
        all(b["customer"] + b["internal"] == 0 for b in totals.values()),
        {
            currency: {
                "customer_balances": format_amount(b["customer"]),
                "internal_balances": format_amount(b["internal"]),
                "net": format_amount(b["customer"] + b["internal"]),
            }
            for currency, b in sorted(totals.items())
        },
    )


async def account_at(db: AsyncSession, account: Account, at: datetime) -> tuple[int, int]:
    """An account's balance at `at` (its last entry by then) and what was held on it then
    (holds placed by then and not decided by then)."""
    check_past(db, at)
    balance = await db.scalar(select(_balance_at(at)).where(Account.id == account.id))
    held = await db.scalar(
        select(func.coalesce(func.sum(Hold.amount), 0)).where(
            Hold.account_id == account.id,
            Hold.created_at <= at,
            (Hold.decided_at.is_(None)) | (Hold.decided_at > at),
        )
    )
    return int(balance or 0), int(held or 0)
