"""Who holds an item of the reviewers' inbox (app.services.inbox). A fraud flag's holder is
its own `assigned_to`; every other kind's is a row here, one per item (the key), so two
admins never hold the same item."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class InboxClaim(Base):
    __tablename__ = "inbox_claims"

    kind: Mapped[str] = mapped_column(String(24), primary_key=True)
    entity_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    assigned_to: Mapped[int] = mapped_column(ForeignKey("users.id"))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
