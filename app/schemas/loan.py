"""Loans (API.md §6 and the loan part of §7): products, quotes, applications, schedules,
repayments, and the admins' view with the recommendation."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from app.money import Amount
from app.schemas.common import Body, PlainText, Schema, UtcDateTime
from app.schemas.ledger import AccountNumber

ProductCode = Field(pattern=r"^[a-z_]{1,16}$", examples=["personal"])
Money = Field(examples=["888.44"], description="Two-place decimal string")
Term = Field(ge=1, le=600, strict=True, description="Months; the product sets the range")


class ProductOut(Schema):
    product: str
    name: str
    annual_rate: str = Field(examples=["11.99"], description="APR in percent")
    min_principal: str = Money
    max_principal: str = Money
    min_term_months: int
    max_term_months: int


class QuoteIn(Body):
    product: str = ProductCode
    principal: Amount
    term_months: int = Term


class ScheduleRowOut(Schema):
    number: int
    due_date: date
    payment: str = Money
    principal: str = Money
    interest: str = Money
    balance: str = Field(description="Principal left after this row")
    fee: str = Field(default="0.00", description="Late fee charged on this installment")
    paid: str = Field(default="0.00", description="Paid of this installment so far")
    status: Literal["upcoming", "due", "overdue", "paid"] = "upcoming"


class QuoteOut(Schema):
    product: str
    principal: str = Money
    term_months: int
    annual_rate: str
    monthly_payment: str = Money
    total_interest: str = Money
    total_payable: str = Money
    schedule: list[ScheduleRowOut]


class LoanApply(Body):
    product: str = ProductCode
    principal: Amount
    term_months: int = Term
    monthly_income: Amount
    account_number: AccountNumber = Field(description="The account paid out to; yours")
    purpose: PlainText = Field(min_length=1, max_length=200)


class LoanOut(Schema):
    loan_id: str
    customer_id: str
    product: str
    principal: str = Money
    currency: str
    annual_rate: str = Field(examples=["11.99"])
    term_months: int
    monthly_payment: str = Money
    total_interest: str = Field(description="As quoted at the application")
    total_payable: str = Money
    monthly_income: str = Money
    purpose: str
    status: Literal["pending", "active", "rejected", "withdrawn", "paid_off"]
    approvals: int = Field(description="Approvals so far")
    approvals_required: int = Field(description="2 at or above BANK_FOUR_EYES_THRESHOLD")
    outstanding_principal: str = Money
    payoff_amount: str = Field(
        description="What closes the loan today: everything due, interest accrued since"
        " the last due date and the principal left"
    )
    next_due_date: date | None
    overdue_amount: str = Money
    days_past_due: int
    delinquency: Literal["current", "1-30", "31-60", "61-90", "90+"]
    account_number: str
    created_at: UtcDateTime
    decided_at: UtcDateTime | None
    decision_reason: str | None


class ApprovalOut(Schema):
    admin_id: str
    approved_at: UtcDateTime
    reason: str | None


class AdminLoanOut(LoanOut):
    recommendation: Literal["approve", "review", "decline"] = Field(
        description="Advice from the figures, never the decision"
    )
    reasons: list[str] = Field(
        description="dti_above_40, loan_in_arrears, kyc_under_review, amount_above_10x_income"
    )
    dti: str = Field(examples=["35.21"], description="Debt to income in percent")
    approved_by: list[ApprovalOut]


class ScheduleOut(Schema):
    loan_id: str
    status: str
    currency: str
    rows: list[ScheduleRowOut]


class RepaymentIn(Body):
    amount: Amount
    from_account: AccountNumber = Field(description="One of your accounts")


class AllocationOut(Schema):
    part: Literal["fees", "interest_due", "principal_due", "interest_accrued", "future_principal"]
    amount: str = Money


class RepaymentOut(Schema):
    repayment_id: str | None = Field(description="Null on a dry run")
    transaction_id: str | None = Field(description="The repayment's journal; null on a dry run")
    loan_id: str
    amount: str = Money
    dry_run: bool
    allocation: list[AllocationOut]
    rescheduled: bool = Field(
        description="An extra payment lowered the installments not yet due (same term)"
    )
    loan: LoanOut
    schedule: list[ScheduleRowOut] = Field(description="The installments left after it")
