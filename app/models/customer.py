from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, Date, ForeignKey, Identity, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, UTCDateTime, utcnow


class CustomerStatus(StrEnum):
    pending_kyc = "Pending KYC Approval"
    """Just registered; the automatic check has not finished."""
    active = "Active"
    """KYC verified; may open accounts and move money."""
    under_review = "Under Review"
    """The automatic check was inconclusive; an admin decides."""
    kyc_rejected = "KYC Rejected"
    """An admin rejected the KYC."""
    suspended = "Suspended"
    """An admin suspended the customer; they can log in and read."""
    closed = "Closed"


class KycStatus(StrEnum):
    pending = "pending"
    verified = "verified"
    review = "review"
    rejected = "rejected"


class Customer(Base):
    __tablename__ = "customers"
    # AUTOINCREMENT on SQLite, so ids are never reused; both engines start at 1001.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, Identity(start=1001), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    full_name: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[date] = mapped_column(Date)
    phone: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(200))
    # The national id is never stored in clear: a keyed hash finds duplicates and the
    # last four characters are kept for the masked display.
    national_id_hmac: Mapped[str] = mapped_column(String(64), index=True)
    national_id_last4: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(32), index=True)
    kyc_status: Mapped[str] = mapped_column(String(16), default=KycStatus.pending)
    kyc_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    kyc_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def masked_national_id(self) -> str:
        return "*****" + self.national_id_last4


class KycDocument(Base):
    __tablename__ = "kyc_documents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_name: Mapped[str] = mapped_column(String(80), unique=True)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
