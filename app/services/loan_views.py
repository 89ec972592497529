"""Loans as the API shows them: quotes, the customer's view (the payoff amount, arrears
and next due date worked out from the book as of today, on the database's clock), the
admins' view with the recommendation, and schedules as JSON rows, CSV or PDF."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, database_of
from app.models import Installment, Loan, LoanStatus
from app.money import format_amount
from app.schemas.common import iso_utc
from app.services import amortization, exports, loan_book, loan_ledger
from app.services.loan_products import Catalog


def rate_text(rate: Decimal) -> str:
    return f"{rate:.2f}"


@dataclass(frozen=True, slots=True)
class RowView:
    """One schedule row as the API shows it (schema: ScheduleRowOut)."""

    number: int
    due_date: date
    payment: str
    principal: str
    interest: str
    balance: str
    fee: str = "0.00"
    paid: str = "0.00"
    status: str = "upcoming"

    @classmethod
    def planned(cls, row: amortization.Row) -> RowView:
        return cls(
            row.number,
            row.due_date,
            format_amount(row.payment),
            format_amount(row.principal),
            format_amount(row.interest),
            format_amount(row.balance),
        )

    @classmethod
    def of(cls, row: Installment | loan_book.Installment, today: date, settled: bool) -> RowView:
        paid = row.paid_principal + row.paid_interest + row.paid_fee
        status = (
            "paid"
            if settled
            else "overdue"
            if row.due_date < today
            else "due"
            if row.due_date == today
            else "upcoming"
        )
        return cls(
            row.number,
            row.due_date,
            format_amount(row.principal + row.interest),
            format_amount(row.principal),
            format_amount(row.interest),
            format_amount(row.balance),
            format_amount(row.fee),
            format_amount(paid),
            status,
        )


@dataclass(frozen=True, slots=True)
class QuoteView:
    product: str
    principal: str
    term_months: int
    annual_rate: str
    monthly_payment: str
    total_interest: str
    total_payable: str
    schedule: list[RowView]


def quote(
    catalog: Catalog, *, product: str, principal: int, term_months: int, today: date
) -> QuoteView:
    """A product's terms for `principal` over `term_months`, due dates as if paid out today."""
    offer = catalog.get(product)
    offer.check(principal=principal, term_months=term_months)
    rows = amortization.schedule(principal, offer.annual_rate, term_months, today)
    interest = amortization.total_interest(rows)
    return QuoteView(
        offer.code,
        format_amount(principal),
        term_months,
        rate_text(offer.annual_rate),
        format_amount(rows[0].payment),
        format_amount(interest),
        format_amount(principal + interest),
        [RowView.planned(row) for row in rows],
    )


@dataclass(frozen=True, slots=True)
class LoanView:
    """A loan as its customer sees it (schema: LoanOut)."""

    loan_id: str
    customer_id: str
    product: str
    principal: str
    currency: str
    annual_rate: str
    term_months: int
    monthly_payment: str
    total_interest: str
    total_payable: str
    monthly_income: str
    purpose: str
    status: str
    approvals: int
    approvals_required: int
    outstanding_principal: str
    payoff_amount: str
    next_due_date: date | None
    overdue_amount: str
    days_past_due: int
    delinquency: str
    account_number: str
    created_at: str
    decided_at: str | None
    decision_reason: str | None


@dataclass(frozen=True, slots=True)
class ApprovalView:
    admin_id: str
    approved_at: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class AdminLoanView:
    """A loan as admins see it: with the recommendation, its reasons and the approvals."""

    loan: LoanView
    recommendation: str
    reasons: list[str]
    dti: str
    approved_by: list[ApprovalView]

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.loan),
            "recommendation": self.recommendation,
            "reasons": self.reasons,
            "dti": self.dti,
            "approved_by": [asdict(a) for a in self.approved_by],
        }


def today_of(database: Database) -> date:
    """Loans count days in UTC, on the database's clock (tests move it)."""
    return database.clock().date()


def loan_day(loan: Loan, today: date) -> date:
    """The day a loan is worked out on: today, never before the last day its accrual posted
    (a clock a little behind, midnight passing meanwhile)."""
    return max(today, loan.accrued_through or today)


def next_midnight(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


async def view_of(
    db: AsyncSession,
    loan: Loan,
    account_number: str,
    today: date,
    book: loan_book.Book | None = None,
) -> LoanView:
    """The loan as of `today`: an active one's payoff amount and arrears are worked out
    from its book as the daily job would leave it (nothing is posted here), or from
    `book` (a repayment's, after it)."""
    rate = loan_ledger.annual_rate(loan)
    interest = loan.total_interest
    payoff = overdue = days = 0
    next_due = None
    outstanding, payment = loan.outstanding_principal, loan.monthly_payment
    if loan.status == LoanStatus.active and book is None:
        today = loan_day(loan, today)
        book = await loan_ledger.read_book(db, loan, upto=today)
        loan_book.advance(book, today, **terms(database_of(db)))
    if book is not None:
        payoff = loan_book.payoff_amount(book, today)
        late = loan_book.arrears(book, today)
        overdue, days, next_due = (
            late.overdue_amount,
            late.days_past_due,
            loan_book.next_due_date(book),
        )
        outstanding, payment = book.outstanding_principal, book.monthly_payment
    return LoanView(
        str(loan.id),
        str(loan.customer_id),
        loan.product,
        format_amount(loan.principal),
        loan.currency,
        rate_text(rate),
        loan.term_months,
        format_amount(payment),
        format_amount(interest),
        format_amount(loan.principal + interest),
        format_amount(loan.monthly_income),
        loan.purpose,
        loan.status,
        loan.approvals,
        loan.approvals_required,
        format_amount(outstanding),
        format_amount(payoff),
        next_due,
        format_amount(overdue),
        days,
        loan_book.Arrears(overdue, days).delinquency,
        account_number,
        iso_utc(loan.created_at),
        iso_utc(loan.decided_at) if loan.decided_at else None,
        loan.decision_reason,
    )


def terms(database: Database) -> dict[str, int]:
    settings = database.settings
    return {"grace_days": settings.loan_grace_days, "late_fee": settings.loan_late_fee_minor}


async def schedule_of(db: AsyncSession, loan: Loan, today: date) -> list[RowView]:
    """An active or paid-off loan's installments as they stand; a pending, rejected or
    withdrawn one's as if paid out today."""
    if loan.disbursed_on is None:
        rows = amortization.schedule(
            loan.principal, loan_ledger.annual_rate(loan), loan.term_months, today
        )
        return [RowView.planned(row) for row in rows]
    stored = (
        await db.scalars(
            select(Installment).where(Installment.loan_id == loan.id).order_by(Installment.number)
        )
    ).all()
    return [RowView.of(row, today, row.settled) for row in stored]


SCHEDULE_COLUMNS = [
    "number",
    "due_date",
    "payment",
    "principal",
    "interest",
    "balance",
    "fee",
    "paid",
    "status",
]


async def export_schedule(
    loan: LoanView, rows: list[RowView], format: str, *, bank_name: str
) -> exports.Download:
    """The schedule as a CSV or PDF download."""
    name = f"loan-{loan.loan_id}-schedule"
    table = [{**asdict(row), "due_date": row.due_date.isoformat()} for row in rows]
    if format == "csv":
        return exports.csv_download(f"{name}.csv", SCHEDULE_COLUMNS, table)
    heading = [
        ("Loan", f"{loan.loan_id} ({loan.product}, {loan.currency})"),
        ("Customer", loan.customer_id),
        ("Principal", loan.principal),
        ("Annual rate", f"{loan.annual_rate} %"),
        ("Term", f"{loan.term_months} months"),
        ("Status", loan.status),
        ("Outstanding", loan.outstanding_principal),
    ]
    widths = (4, 10, 13, 13, 13, 15, 8, 13, 8)
    lines = [
        "  ".join(str(row[c]).rjust(w) for c, w in zip(SCHEDULE_COLUMNS, widths, strict=True))
        for row in table
    ]
    header = "  ".join(c.rjust(w) for c, w in zip(SCHEDULE_COLUMNS, widths, strict=True))
    content = await exports.table_pdf(
        f"Loan {loan.loan_id} schedule", heading, header, lines, heading=bank_name
    )
    return exports.Download(f"{name}.pdf", "application/pdf", content)
