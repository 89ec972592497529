from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import Field, field_validator

from app.models import Account
from app.money import Amount, format_amount
from app.schemas.common import Body, PlainText, Schema, UtcDateTime

# The schema states the shape; the check digit is checked by the service, which answers
# 422 `invalid_account_number` for anything else (API.md §4).
ACCOUNT_NUMBER_SCHEMA = {"pattern": "^[0-9]{12}$", "examples": ["100000000016"]}
ACCOUNT_NUMBER_HELP = "12 digits, the last a Luhn check digit"
AccountNumber = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        description=ACCOUNT_NUMBER_HELP,
        json_schema_extra=ACCOUNT_NUMBER_SCHEMA,
    ),
]
Description = Annotated[PlainText | None, Field(default=None, max_length=140)]


class AccountOpen(Body):
    type: Literal["savings", "checking"]
    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217; defaults to the bank's currency"
    )


class AccountOut(Schema):
    account_number: str
    customer_id: str
    type: str
    currency: str
    balance: str
    available_balance: str
    status: Literal["active", "frozen", "closed"]
    opened_at: UtcDateTime

    @classmethod
    def of(cls, account: Account) -> AccountOut:
        return cls(
            account_number=account.number,
            customer_id=str(account.customer_id),
            type=account.type,
            currency=account.currency,
            balance=format_amount(account.balance),
            available_balance=format_amount(account.available_balance),
            status=account.status,  # type: ignore[arg-type]
            opened_at=account.opened_at,
        )


class AccountStatusChange(Body):
    status: Literal["active", "frozen", "closed"]
    reason: PlainText = Field(min_length=3, max_length=500)


class DepositIn(Body):
    account_number: AccountNumber
    amount: Amount
    description: Description = None


class WithdrawalIn(DepositIn):
    pass


class TransferIn(Body):
    from_account: AccountNumber
    to_account: AccountNumber
    amount: Amount
    description: Description = None

    @field_validator("description")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        return value.strip() or None if value else None


class TransactionOut(Schema):
    transaction_id: str
    type: Literal[
        "deposit", "withdrawal", "transfer", "disbursement", "repayment", "accrual", "reversal"
    ]
    status: Literal["completed", "pending_review", "rejected"]
    amount: str = Field(examples=["12.50"])
    currency: str
    from_account: str | None
    to_account: str | None
    description: str | None
    created_at: str = Field(description="ISO 8601, UTC")
    balance_after: str | None = Field(description="Balance of the caller's account after it")
    flagged: bool | None = Field(default=None, description="Null until fraud scoring ran")


class StatementEntryOut(Schema):
    transaction_id: str
    posted_at: str
    type: str
    description: str | None
    amount: str = Field(description="Signed: positive in, negative out")
    balance: str = Field(description="Running balance after this entry")


class StatementOut(Schema):
    account_number: str
    account_type: str
    currency: str
    customer_id: str
    customer_name: str
    from_: date = Field(alias="from")
    to: date
    opening_balance: str
    total_in: str
    total_out: str
    closing_balance: str
    entries: list[StatementEntryOut]
    generated_at: str


class LedgerReportOut(Schema):
    balanced: bool
    journals_checked: int
    accounts_checked: int
    mismatches: list[dict[str, str]]
    totals: dict[str, dict[str, str]]


class AuditTransactionOut(TransactionOut):
    """A transaction as auditors see it: whose it is (null: the bank's own posting)."""

    customer_id: str | None


class BalanceAtOut(Schema):
    account_number: str
    customer_id: str | None = Field(description="Null for the bank's own accounts")
    kind: Literal["customer", "internal"]
    code: str | None = Field(description="The bank's own accounts: cash, holds, loans, …")
    currency: str
    balance: str = Field(examples=["1250.00"])


class BooksAtOut(Schema):
    at: UtcDateTime
    balanced: bool = Field(description="Every currency's balances summed to zero at `at`")
    totals: dict[str, dict[str, str]] = Field(description="The trial balance at `at`, per currency")
    accounts: list[BalanceAtOut] = Field(description="A page of the accounts open at `at`, by id")
    next_cursor: str | None
