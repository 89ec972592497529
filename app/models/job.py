from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, UTCDateTime, utcnow


class JobKind(StrEnum):
    """Every kind of background job; app.services.jobs.HANDLERS runs each."""

    kyc_check = "kyc.check"
    """The automatic KYC check of a new registration (app.services.kyc)."""
    hold_expiry = "hold.expire"
    """Rejects a held transaction nobody decided within BANK_HOLD_EXPIRY (app.services.holds)."""
    loan_accrual = "loan.accrue"
    """A loan's daily interest, due dates and late fees to today (app.services.accrual)."""


class Job(Base):
    """Durable background work: written in the transaction that needs it, run right after
    the response, and picked up by the sweeper when a crash left it unfinished."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_pending", "status", "run_after"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
