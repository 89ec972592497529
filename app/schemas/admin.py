"""What admins read and send about customers and staff (API.md §7)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.schemas.common import Body, PlainText, Schema, UtcDateTime
from app.schemas.customer import CustomerOut
from app.schemas.fraud import FlagOut
from app.schemas.ledger import AccountOut
from app.schemas.loan import AdminLoanOut

CustomerStatusName = Literal[
    "Pending KYC Approval", "Active", "Under Review", "KYC Rejected", "Suspended", "Closed"
]


class CustomerSummaryOut(Schema):
    customer_id: str
    username: str
    email: str
    full_name: str
    status: str
    kyc_status: str
    created_at: UtcDateTime


class CustomerFileOut(CustomerOut):
    """A customer's whole file, for staff."""

    accounts: list[AccountOut]
    loans: list[AdminLoanOut] = Field(description="The first 50, oldest first")
    flags: list[FlagOut] = Field(description="The first 50, highest score first")


class KycDecisionIn(Body):
    decision: Literal["approve", "reject"]
    reason: PlainText = Field(min_length=3, max_length=500)


class ReasonIn(Body):
    reason: PlainText = Field(min_length=3, max_length=500)


class InboxItemOut(Schema):
    item_id: str = Field(examples=["loan_approval:12"], description="`kind:entity_id`")
    kind: Literal["kyc_review", "loan_approval", "fraud_flag", "held_transaction"]
    entity_id: str = Field(description="The customer, loan, flag or transaction id")
    customer_id: str | None
    created_at: UtcDateTime = Field(description="Waiting since")
    due_at: UtcDateTime = Field(description="The SLA deadline (BANK_SLA_* after created_at)")
    overdue: bool
    age_seconds: int
    assigned_to: str | None = Field(description="The admin's user id holding it, if any")
