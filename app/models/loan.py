"""Loans: applications, their approvals (four-eyes), the installments of an active
loan's schedule, and its repayments (app.services.loans)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, UTCDateTime, utcnow


class LoanStatus(StrEnum):
    pending = "pending"
    """Applied for; waiting for the approvals it needs (one, or two at the four-eyes threshold)."""
    active = "active"
    """Approved and disbursed; repaid by installments."""
    rejected = "rejected"
    withdrawn = "withdrawn"
    """Withdrawn by the customer while pending."""
    paid_off = "paid_off"


class Recommendation(StrEnum):
    """Advice to the admins who decide, from the application's figures; never the decision."""

    approve = "approve"
    review = "review"
    decline = "decline"


class Loan(Base):
    __tablename__ = "loans"
    __table_args__ = (
        Index("ix_loans_customer", "customer_id", "id"),
        Index("ix_loans_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    product: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    principal: Mapped[int] = mapped_column(BigInteger)
    rate_bps: Mapped[int] = mapped_column(Integer)
    """The annual rate in hundredths of a percent: 11.99 % is 1199."""
    term_months: Mapped[int] = mapped_column(Integer)
    monthly_payment: Mapped[int] = mapped_column(BigInteger)
    """The current installment (lower after an extra payment)."""
    total_interest: Mapped[int] = mapped_column(BigInteger)
    """The schedule's interest as quoted at the application."""
    monthly_income: Mapped[int] = mapped_column(BigInteger)
    purpose: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=LoanStatus.pending)
    recommendation: Mapped[str] = mapped_column(String(8))
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    dti_bps: Mapped[int] = mapped_column(Integer)
    """Debt to income in hundredths of a percent: this loan's and other active loans'
    installments over the monthly income."""
    approvals_required: Mapped[int] = mapped_column(Integer, default=1)
    approvals: Mapped[int] = mapped_column(Integer, default=0)
    outstanding_principal: Mapped[int] = mapped_column(BigInteger, default=0)
    accrued_interest: Mapped[int] = mapped_column(BigInteger, default=0)
    """Interest posted by the daily accrual since the last due date (not yet due)."""
    accrued_through: Mapped[date | None] = mapped_column(Date, nullable=True)
    """The last day whose interest has been posted."""
    disbursed_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    disbursement_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    paid_off_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LoanApproval(Base):
    """One admin's approval of a pending loan: at most one per admin (the key), so the
    second of a four-eyes pair is always someone else."""

    __tablename__ = "loan_approvals"

    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Installment(Base):
    """One row of an active loan's schedule and what has been paid of it. Rows not yet
    due are rewritten when an extra payment lowers the installment."""

    __tablename__ = "loan_installments"

    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    due_date: Mapped[date] = mapped_column(Date)
    principal: Mapped[int] = mapped_column(BigInteger)
    interest: Mapped[int] = mapped_column(BigInteger)
    balance: Mapped[int] = mapped_column(BigInteger)
    """The principal left after this row, as scheduled."""
    fee: Mapped[int] = mapped_column(BigInteger, default=0)
    """The late fee charged on it (at most once)."""
    paid_principal: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_interest: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_fee: Mapped[int] = mapped_column(BigInteger, default=0)
    settled: Mapped[bool] = mapped_column(default=False)
    settled_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    """The loan day it was paid in full (the compliance report's arrears at a past day)."""


class Repayment(Base):
    """A repayment and how its amount was allocated."""

    __tablename__ = "loan_repayments"
    __table_args__ = (Index("ix_loan_repayments_loan", "loan_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"))
    journal_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    allocation: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    paid_on: Mapped[date] = mapped_column(Date)
    """The loan day it was paid on (the day its allocation was worked out for)."""
    principal: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """What of it went to principal (due and future): the outstanding at a past day."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
