"""The automatic KYC check, run as a durable background job after registration.

All pass → Active. Anything inconclusive (watch-list match, national id used by another
customer, a document missing or altered on disk, under age) → Under Review with the
reasons, for an admin to decide. The outcome is audited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Tx, database_of
from app.models import Customer, CustomerStatus, KycDocument, KycStatus
from app.services import audit, documents
from app.services.audit import SYSTEM
from app.services.customers import is_adult
from app.services.watchlist import watchlist_hit

REQUIRED_DOCUMENTS = ("id_document", "address_proof")


async def findings(db: AsyncSession, customer: Customer) -> list[str]:
    settings = database_of(db).settings
    reasons: list[str] = []
    docs = (
        await db.scalars(select(KycDocument).where(KycDocument.customer_id == customer.id))
    ).all()
    kinds = {d.kind for d in docs}
    reasons += [f"document missing: {kind}" for kind in REQUIRED_DOCUMENTS if kind not in kinds]
    for doc in docs:
        if await documents.file_digest(settings.kyc_dir, doc.storage_name) != doc.sha256:
            reasons.append(f"document unreadable or altered: {doc.kind}")
    now = datetime.now(UTC)
    if not is_adult(customer.date_of_birth, now):
        reasons.append("customer is under 18")
    if watchlist_hit(customer.full_name, settings.watchlist_file):
        reasons.append("full name matches the watch list")
    duplicate = await db.scalar(
        select(Customer.id)
        .where(Customer.national_id_hmac == customer.national_id_hmac, Customer.id != customer.id)
        .limit(1)
    )
    if duplicate is not None:
        reasons.append("national id already used by another customer")
    return reasons


async def run_check(db: AsyncSession, tx: Tx, payload: dict[str, Any]) -> None:
    """The job kind `kyc.check` (JobKind.kyc_check)."""
    # Locked and read again: an admin may decide while the check runs, and theirs stands.
    customer = await db.get(
        Customer, int(payload["customer_id"]), with_for_update=True, populate_existing=True
    )
    if customer is None or customer.status != CustomerStatus.pending_kyc:
        return  # already decided (by an earlier run or an admin)
    reasons = await findings(db, customer)
    customer.kyc_reasons = reasons
    customer.kyc_checked_at = datetime.now(UTC)
    if reasons:
        customer.status, customer.kyc_status = CustomerStatus.under_review, KycStatus.review
    else:
        customer.status, customer.kyc_status = CustomerStatus.active, KycStatus.verified
    await audit.record(
        tx,
        actor=SYSTEM,
        action="kyc.check",
        entity_type="customer",
        entity_id=customer.id,
        details={"result": customer.status, "reasons": reasons},
    )
