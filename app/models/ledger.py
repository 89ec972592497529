"""The double-entry ledger, after django-hordak: a journal (header) with entries (lines)
that sum to zero per currency; accounts cache their balance for speed, and the entries
are the truth (`bank verify` and /api/audit/ledger prove the cache equals their sum)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, UTCDateTime, utcnow


class AccountKind(StrEnum):
    customer = "customer"
    """A customer's deposit account (a liability of the bank)."""
    internal = "internal"
    """The bank's own books: cash, holds, loans. May go negative."""


class AccountStatus(StrEnum):
    active = "active"
    frozen = "frozen"
    """Neither sends nor receives until an admin reactivates it."""
    closed = "closed"


class JournalKind(StrEnum):
    deposit = "deposit"
    """Cash in: the customer's account is credited against the bank's cash account."""
    withdrawal = "withdrawal"
    """Cash out: the customer's account is debited against the bank's cash account."""
    transfer = "transfer"
    """Between two customer accounts of one currency."""
    disbursement = "disbursement"
    """A loan paid out: the customer's account is credited against the bank's loans account."""
    repayment = "repayment"
    """A loan repaid from the customer's account: principal, interest and fees."""
    accrual = "accrual"
    """Interest (and late fees) a loan earned: receivable against income, bank accounts only."""
    reversal = "reversal"
    """Undoes an earlier journal with opposite entries; entries are never edited."""


class JournalStatus(StrEnum):
    completed = "completed"
    pending_review = "pending_review"
    rejected = "rejected"


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("code", "currency"),
        CheckConstraint(
            "kind = 'internal' OR (held >= 0 AND balance - held >= 0)", name="no_overdraft"
        ),
        Index("ix_accounts_customer", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[str] = mapped_column(String(12), unique=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default=AccountKind.customer)
    code: Mapped[str | None] = mapped_column(String(16), nullable=True)  # internal: cash, …
    type: Mapped[str] = mapped_column(String(16))  # savings | checking | internal
    currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default=AccountStatus.active)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """The latest expiry of the live block entries naming it (app.services.blocks)."""

    @property
    def available_balance(self) -> int:
        return self.balance - self.held


class Journal(Base):
    """One money movement: what the API calls a transaction."""

    __tablename__ = "journals"
    __table_args__ = (
        Index("ix_journals_customer_created", "customer_id", "created_at"),
        CheckConstraint("amount > 0", name="positive_amount"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JournalStatus.completed)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    from_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    to_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    description: Mapped[str | None] = mapped_column(String(140), nullable=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), nullable=True)
    initiated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("journals.id"), nullable=True)
    flagged: Mapped[bool | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Entry(Base):
    """One line of a journal. Immutable (the database refuses UPDATE and DELETE).
    A positive amount raises the account's balance, a negative one lowers it."""

    __tablename__ = "entries"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="nonzero_amount"),
        Index("ix_entries_account_time", "account_id", "created_at"),
        Index("ix_entries_account_journal", "account_id", "journal_id"),
        Index("ix_entries_journal", "journal_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    journal_id: Mapped[int] = mapped_column(ForeignKey("journals.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutgoingMinute(Base):
    """A customer's outgoing movements summed per minute (withdrawals and transfers, not
    rejected ones), written with each journal by `post_journal`. The rolling daily limit
    adds up at most 1,440 of these plus the journals of the window's first minute, so its
    cost does not grow with the customer's activity. A journal that is later rejected must
    take its amount out of its minute."""

    __tablename__ = "outgoing_minutes"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    """Whole minutes since the Unix epoch, UTC."""
    amount: Mapped[int] = mapped_column(BigInteger)


class IdempotencyRecord(Base):
    """A completed request and its response, stored in the same transaction as the money
    movement it made, so a replay after a crash still returns the original answer."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
