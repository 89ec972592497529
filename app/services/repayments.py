"""Loan repayments: from one of the customer's own accounts with the funds, allocated by
app.services.loan_book (fees, interest due, principal due, then future principal) and
posted in one transaction with the interest the loan earned up to today, the new book,
the repayment's record, its audit record and its idempotent answer. A dry run answers
the same from the same functions and writes nothing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app import store
from app.db import database_of, retry_on_conflict, unit_of_work
from app.errors import CurrencyMismatch, LoanNotActive
from app.models import Account, Loan, LoanStatus, Repayment
from app.money import format_amount
from app.security import Principal
from app.services import accounts, audit, idempotency, loan_book, loan_ledger, loan_views, loans
from app.services.audit import Actor
from app.services.ledger import check_funds, check_not_blocked
from app.services.loan_views import LoanView, RowView


@dataclass(frozen=True, slots=True)
class RepaymentView:
    """A repayment's answer (schema: RepaymentOut)."""

    repayment_id: str | None
    transaction_id: str | None
    loan_id: str
    amount: str
    dry_run: bool
    allocation: list[dict[str, str]]
    rescheduled: bool
    loan: LoanView
    schedule: list[RowView]


@dataclass(frozen=True, slots=True)
class Repaid:
    body: dict[str, Any]
    replayed: bool = False


def _check_source(account: Account | store.LockedAccount, loan: Loan) -> None:
    accounts.check_active(account, "from_account")
    check_not_blocked(account, "from_account")
    if account.currency != loan.currency:
        raise CurrencyMismatch(
            f"Account {account.number} is in {account.currency}, the loan in {loan.currency}.",
            field="from_account",
        )


async def _answer(
    db: AsyncSession,
    loan: Loan,
    number: str,
    today: date,
    book: loan_book.Book,
    allocation: loan_book.Allocation,
    *,
    repayment_id: int | None,
    transaction_id: int | None,
) -> RepaymentView:
    left = [row for row in book.installments if not row.settled]
    return RepaymentView(
        str(repayment_id) if repayment_id is not None else None,
        str(transaction_id) if transaction_id is not None else None,
        str(loan.id),
        format_amount(allocation.amount),
        False,
        [{"part": part, "amount": format_amount(v)} for part, v in allocation.parts.items()],
        allocation.rescheduled,
        await loan_views.view_of(db, loan, number, today, book),
        [RowView.of(row, today, False) for row in left],
    )


class _DryRun(Exception):
    """Rolls a dry run's transaction back, carrying its answer out."""

    def __init__(self, view: RepaymentView) -> None:
        self.view = view


@retry_on_conflict
async def repay(
    db: AsyncSession,
    *,
    principal: Principal,
    loan_id: str,
    amount: int,
    from_account: str,
    idempotency_key: str | None,
    dry_run: bool = False,
) -> Repaid:
    """Repay `amount` of loan `loan_id` from the caller's account `from_account`. A dry run
    (`dry_run`) runs the same transaction to its end and rolls it back: the same checks
    and answer, nothing written (its Idempotency-Key is not used)."""
    database = database_of(db)
    source = accounts.parse_number(from_account, field="from_account")
    key = idempotency.key_for(
        principal.user_id,
        idempotency_key,
        "loan.repay",
        {"loan_id": loan_id, "amount": amount, "from_account": source},
    )
    if dry_run:
        key = None
    today = loan_views.today_of(database)
    try:
        return await _repay(db, principal, loan_id, amount, source, key, today, dry_run)
    except _DryRun as done:
        return Repaid(orjson.loads(orjson.dumps(done.view)))


async def _repay(
    db: AsyncSession,
    principal: Principal,
    loan_id: str,
    amount: int,
    source: str,
    key: store.IdempotencyKey | None,
    today: date,
    dry_run: bool,
) -> Repaid:
    action = "loan.repay_dry_run" if dry_run else "loan.repay"
    async with audit.denials_recorded(db, actor=Actor.of(principal), action=action):
        async with unit_of_work(db) as tx:
            if (replay := await loans.lock_caller(tx, principal, key)) is not None:
                return Repaid(replay, replayed=True)
            loan, number = await loans.own_loan(db, principal, loan_id)
            loan = await loans.lock_loan(db, loan.id)
            if loan.status != LoanStatus.active:
                raise LoanNotActive(f"Loan {loan.id} is {loan.status}.")
            # A day the accrual has posted already (a clock a little ahead, midnight
            # passing meanwhile) is not taken back.
            today = loan_views.loan_day(loan, today)
            await loan_ledger.lock_accounts(tx, loan, [number, source])
            book = await loan_ledger.read_book(db, loan)
            accrual = loan_book.advance(book, today, **loan_views.terms(database_of(db)))
            accrued = await loan_ledger.post_accrual(tx, loan, accrual, number)
            locked = await store.lock_movement(
                tx, [source], internal=(loan_ledger.LOANS, loan_ledger.LOAN_INTEREST)
            )
            account = accounts.owned(locked.accounts.get(source), principal, source, "from_account")
            _check_source(account, loan)
            allocation = loan_book.allocate(book, amount, today)
            check_funds(account, amount)
            posted = await loan_ledger.post_repayment(tx, loan, account, locked, allocation)
            await loan_ledger.write_book(db, loan, book)
            if allocation.paid_off:
                loan.status = LoanStatus.paid_off
                loan.paid_off_at = datetime.now(UTC)
            parts = {part: format_amount(v) for part, v in allocation.parts.items()}
            record = Repayment(
                loan_id=loan.id,
                journal_id=posted.id,
                amount=amount,
                allocation=[{"part": p, "amount": a} for p, a in parts.items()],
                paid_on=today,
                principal=allocation.principal,
                created_at=posted.created_at,
            )
            db.add(record)
            await db.flush()
            await audit.record(
                tx,
                actor=Actor.of(principal),
                action="loan.repay",
                entity_type="loan",
                entity_id=loan.id,
                details={
                    "amount": format_amount(amount),
                    "from_account": source,
                    "transaction_id": str(posted.id),
                    "allocation": parts,
                    "paid_off": allocation.paid_off,
                    "accrual_transaction_id": str(accrued.id) if accrued else None,
                },
            )
            view = await _answer(
                db,
                loan,
                number,
                today,
                book,
                allocation,
                repayment_id=record.id,
                transaction_id=posted.id,
            )
            if dry_run:
                raise _DryRun(replace(view, repayment_id=None, transaction_id=None, dry_run=True))
            body = orjson.loads(orjson.dumps(view))
            if key is not None:
                await store.store_answer(tx, key, 201, orjson.dumps(body))
    return Repaid(body)
