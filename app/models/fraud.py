"""Fraud detection: the scoring queue, scores, flags and their keys, held transactions,
the block and allow lists, and the scorer's own aggregates (app.services.scoring)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, UTCDateTime, utcnow


class FlagStatus(StrEnum):
    open = "open"
    resolved = "resolved"


class FlagDecision(StrEnum):
    legitimate = "legitimate"
    fraud = "fraud"


class HoldStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class ScoreQueue(Base):
    """A committed movement waiting for its score: written by `post_journal` in the
    movement's transaction, deleted in the transaction that stores the score, so every
    movement is scored exactly once. A scorer claims rows for `lease_until`; a crashed
    scorer's rows are claimed again once the lease has run out."""

    __tablename__ = "score_queue"

    journal_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("journals.id"), primary_key=True, autoincrement=False
    )
    owner: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RuleSet(Base):
    """Every rule set that scored something, by version (the SHA-256 of its file), so a
    score can be explained with the exact rules that gave it."""

    __tablename__ = "fraud_rule_sets"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FraudScore(Base):
    """One movement's score: the rule set's version, the features the rules read and the
    reasons they gave (replayable: app.services.fraud.explain)."""

    __tablename__ = "fraud_scores"

    journal_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("journals.id"), primary_key=True, autoincrement=False
    )
    score: Mapped[int] = mapped_column(Integer)
    rules_version: Mapped[str] = mapped_column(String(64))
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    flag_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Flag(Base):
    """An alert for an admin to work: opened by a score at or above the flag threshold,
    kept open per customer and rule code (later hits add to it), resolved once."""

    __tablename__ = "fraud_flags"
    __table_args__ = (
        Index("ix_fraud_flags_queue", "status", "score", "id"),
        Index("ix_fraud_flags_customer", "customer_id", "id"),
        Index("ix_fraud_flags_account", "account_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    journal_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("journals.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), nullable=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    score: Mapped[int] = mapped_column(Integer)
    rules_version: Mapped[str] = mapped_column(String(64))
    rule_codes: Mapped[list[str]] = mapped_column(JSON)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    transaction_ids: Mapped[list[int]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=FlagStatus.open)
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    assigned_to: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FlagKey(Base):
    """The open flag of a customer and rule code: one at most (the primary key), so a
    condition that stays true adds to it; deleted when the flag is resolved."""

    __tablename__ = "fraud_flag_keys"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    rule_code: Mapped[str] = mapped_column(String(32), primary_key=True)
    flag_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("fraud_flags.id"))


class Hold(Base):
    """A withdrawal or transfer at or above the review threshold: its amount is held on the
    source account until an admin approves or rejects it, or it expires."""

    __tablename__ = "holds"
    __table_args__ = (
        Index("ix_holds_status", "status", "journal_id"),
        Index("ix_holds_account", "account_id", "journal_id"),
    )

    journal_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("journals.id"), primary_key=True, autoincrement=False
    )
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), nullable=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=HoldStatus.pending)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)


class ListEntry(Base):
    """A block or allow list entry for an account number, a customer id or a national-id
    hash; an expired entry stops applying by itself."""

    __tablename__ = "fraud_lists"
    __table_args__ = (Index("ix_fraud_lists_target", "list_kind", "target_type", "target"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    list_kind: Mapped[str] = mapped_column(String(8))  # block | allow
    target_type: Mapped[str] = mapped_column(String(16))  # account | customer | national_id
    target: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(500))
    rules: Mapped[list[str]] = mapped_column(JSON, default=list)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Payee(Base):
    """The first movement from a customer to an account (the scorer's `new_payee` feature:
    one key lookup, however long the history)."""

    __tablename__ = "fraud_payees"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    first_journal_id: Mapped[int] = mapped_column(BigInteger)


class FraudBucket(Base):
    """A count of scored movements per aggregate and minute, written by the scorer: a
    window's count adds at most one row per minute of the window (plus the journals of
    its first, partial minute), however long the history. Keys: `t:<account id>`, an
    account's outgoing transfers; `b:<min>:<max>:<customer id>`, a customer's movements
    in the structuring band."""

    __tablename__ = "fraud_buckets"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # since the epoch, UTC
    count: Mapped[int] = mapped_column(Integer)


class AccountDay(Base):
    """An account's scored outgoing movements per UTC day: count and sum (the scorer's
    30-day average reads at most 31 of these)."""

    __tablename__ = "fraud_account_days"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)  # days since 1970-01-01
    count: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(BigInteger)
