"""A loan's postings, all through the store's one posting function, and its book read
and written back under the loan's lock.

The bank's own accounts, one per currency (internal accounts go negative: an asset of
the bank is a negative balance here, as cash is):
- `loans`: principal lent and not yet repaid (−outstanding principal);
- `loan_interest`: interest and fees earned and not yet paid (receivable);
- `interest_income`, `fee_income`: what the loans earned.

Disbursement: customer +P, loans −P. Accrual: loan_interest −(interest + fees),
interest_income +interest, fee_income +fees. Repayment: customer −amount, loans
+principal, loan_interest +(interest + fees). So the books balance at every step and,
once a loan is paid off, its receivables are back to zero.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import store
from app.db import Tx
from app.models import Installment, JournalKind, Loan
from app.money import format_amount
from app.services import accounts, amortization
from app.services.ledger import check_not_blocked
from app.services.loan_book import Accrual, Allocation, Book
from app.services.loan_book import Installment as BookRow
from app.store import LockedAccount, NewJournal, Posted

LOANS = "loans"
LOAN_INTEREST = "loan_interest"
INTEREST_INCOME = "interest_income"
FEE_INCOME = "fee_income"


def annual_rate(loan: Loan) -> Decimal:
    return Decimal(loan.rate_bps) / 100


async def _bank_account(tx: Tx, locked: store.Locked, code: str, currency: str) -> LockedAccount:
    return locked.bank.get(code) or await store.add_internal_account(
        tx, locked, code, currency, new_number=accounts.new_number
    )


def _lines(deltas: list[tuple[LockedAccount, int]]) -> list[tuple[LockedAccount, int]]:
    """A journal's lines, one per account, without the ones that net to zero."""
    by_id: dict[int, tuple[LockedAccount, int]] = {}
    for account, delta in deltas:
        _, total = by_id.get(account.id, (account, 0))
        by_id[account.id] = (account, total + delta)
    return [(account, delta) for account, delta in by_id.values() if delta]


async def lock_accounts(tx: Tx, loan: Loan, numbers: list[str]) -> None:
    """Lock the customer accounts `numbers` and every bank account of the loans, in one
    statement, in id order, before a repayment posts: its accrual and its repayment
    journal then only lock rows it holds, so two repayments never wait in a circle."""
    await store.lock_movement(
        tx, sorted(set(numbers)), internal=(LOANS, LOAN_INTEREST, INTEREST_INCOME, FEE_INCOME)
    )


async def disburse(
    tx: Tx, loan: Loan, account_number: str, *, initiated_by: int | None
) -> tuple[Posted, LockedAccount]:
    """Pay the loan out to the customer's account (locked here, with the loans account)."""
    locked = await store.lock_movement(tx, [account_number], internal=LOANS)
    account = locked.accounts[account_number]
    accounts.check_active(account, "account_number")
    check_not_blocked(account, "account_number")
    lent = await _bank_account(tx, locked, LOANS, account.currency)
    header = NewJournal(
        JournalKind.disbursement,
        loan.principal,
        account.currency,
        f"Loan {loan.id} disbursement",
        customer_id=loan.customer_id,
        initiated_by=initiated_by,
        to_account=account,
        scored=False,
    )
    posted = await store.post_journal(
        tx, locked, header, [(account, loan.principal), (lent, -loan.principal)]
    )
    return posted, account


async def post_accrual(tx: Tx, loan: Loan, accrual: Accrual, account_number: str) -> Posted | None:
    """Post what `advance` earned (nothing if it nets to zero)."""
    fees = accrual.fee_total
    if not accrual.interest and not fees:
        return None
    locked = await store.lock_movement(
        tx, [account_number], internal=(LOAN_INTEREST, INTEREST_INCOME, FEE_INCOME)
    )
    receivable = await _bank_account(tx, locked, LOAN_INTEREST, loan.currency)
    income = await _bank_account(tx, locked, INTEREST_INCOME, loan.currency)
    fee_income = await _bank_account(tx, locked, FEE_INCOME, loan.currency)
    lines = _lines(
        [
            (receivable, -(accrual.interest + fees)),
            (income, accrual.interest),
            (fee_income, fees),
        ]
    )
    if not lines:
        return None
    what = [f"interest {format_amount(accrual.interest)}"] if accrual.interest else []
    what += [f"late fee on installment {number}" for number, _ in accrual.fees]
    header = NewJournal(
        JournalKind.accrual,
        abs(accrual.interest) + fees,
        loan.currency,
        f"Loan {loan.id} accrual: " + ", ".join(what),
        customer_id=loan.customer_id,
        initiated_by=None,
        scored=False,
    )
    return await store.post_journal(tx, locked, header, lines)


async def post_repayment(
    tx: Tx, loan: Loan, source: LockedAccount, locked: store.Locked, allocation: Allocation
) -> Posted:
    """The repayment journal, on accounts locked by the caller (`source` among them,
    checked for funds)."""
    lent = await _bank_account(tx, locked, LOANS, loan.currency)
    receivable = await _bank_account(tx, locked, LOAN_INTEREST, loan.currency)
    lines = _lines(
        [
            (source, -allocation.amount),
            (lent, allocation.principal),
            (receivable, allocation.interest + allocation.fees),
        ]
    )
    header = NewJournal(
        JournalKind.repayment,
        allocation.amount,
        loan.currency,
        f"Loan {loan.id} repayment",
        customer_id=loan.customer_id,
        initiated_by=None,
        from_account=source,
        scored=False,
    )
    return await store.post_journal(tx, locked, header, lines)


async def read_book(db: AsyncSession, loan: Loan, *, upto: date | None = None) -> Book:
    """The loan's unsettled installments (those due by `upto` and the next one, if
    `upto` is given: enough to state arrears and the payoff amount) as a `Book`."""
    query = select(Installment).where(Installment.loan_id == loan.id, ~Installment.settled)
    query = query.order_by(Installment.number)
    if upto is None:
        rows = list((await db.scalars(query)).all())
    else:  # a loan of 360 rows reads the few it needs, not all of them
        rows = list((await db.scalars(query.where(Installment.due_date <= upto))).all())
        rows += (await db.scalars(query.where(Installment.due_date > upto).limit(1))).all()
    return Book(
        annual_rate(loan),
        loan.outstanding_principal,
        loan.accrued_interest,
        loan.accrued_through or loan.created_at.date(),
        loan.disbursed_on or loan.created_at.date(),
        [
            BookRow(
                r.number,
                r.due_date,
                r.principal,
                r.interest,
                r.balance,
                r.fee,
                r.paid_principal,
                r.paid_interest,
                r.paid_fee,
            )
            for r in rows
        ],
        loan.monthly_payment,
    )


async def write_book(db: AsyncSession, loan: Loan, book: Book) -> None:
    """Store `book` (read with `read_book` without `upto`, then changed) on the loan and
    its installments."""
    loan.outstanding_principal = book.outstanding_principal
    loan.accrued_interest = book.accrued_interest
    loan.accrued_through = book.accrued_through
    loan.monthly_payment = book.monthly_payment
    query = select(Installment).where(Installment.loan_id == loan.id, ~Installment.settled)
    stored = {r.number: r for r in (await db.scalars(query)).all()}
    for row in book.installments:
        target = stored.pop(row.number, None)
        if target is None:
            target = Installment(loan_id=loan.id, number=row.number)
            db.add(target)
        target.due_date = row.due_date
        target.principal, target.interest, target.balance = row.principal, row.interest, row.balance
        target.fee, target.paid_principal = row.fee, row.paid_principal
        target.paid_interest, target.paid_fee = row.paid_interest, row.paid_fee
        if row.settled and not target.settled:
            target.settled_on = book.accrued_through  # the day it was worked out on
        target.settled = row.settled
    if stored:  # rows no longer owed: cancelled by a payoff before they fell due
        await db.execute(
            delete(Installment).where(
                Installment.loan_id == loan.id, Installment.number.in_(list(stored))
            )
        )


def first_schedule(loan: Loan, on: date) -> list[amortization.Row]:
    return amortization.schedule(loan.principal, annual_rate(loan), loan.term_months, on)


def add_schedule(db: AsyncSession, loan: Loan, rows: list[amortization.Row]) -> None:
    for r in rows:
        db.add(
            Installment(
                loan_id=loan.id,
                number=r.number,
                due_date=r.due_date,
                principal=r.principal,
                interest=r.interest,
                balance=r.balance,
                fee=0,
                paid_principal=0,
                paid_interest=0,
                paid_fee=0,
                settled=False,
            )
        )
