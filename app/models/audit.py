from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime


class AuditRecord(Base):
    """Append-only and hash-chained: `hash` is the SHA-256 of the record's canonical
    content, which includes `prev_hash`. The database refuses UPDATE and DELETE."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_entity", "entity_type", "entity_id", "seq"),
        Index("ix_audit_log_actor", "actor_id", "seq"),
        Index("ix_audit_log_action", "action", "seq"),
        Index("ix_audit_log_at", "at"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    entity_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(8))
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditCheckpoint(Base):
    """A signed statement of the chain's head: record `seq` had hash `hash` at `at`. A copy
    kept elsewhere shows a chain cut, rewritten or forked after it (the hash chain alone
    cannot show that its last records were removed)."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    signature: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(32))


class AuditSigningKey(Base):
    """Every key that has signed a checkpoint, by id, with its public half: after the
    signing key is rotated (BANK_AUDIT_SIGNING_KEY changed), checkpoints signed before
    still verify. The private half is never stored."""

    __tablename__ = "audit_signing_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    public_key: Mapped[str] = mapped_column(Text)
    first_used_at: Mapped[datetime] = mapped_column(UTCDateTime)
