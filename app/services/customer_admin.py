"""Customers as admins manage them (API.md §7): search, a customer's whole file (profile,
accounts, loans, flags, KYC), the KYC decision, the documents, suspension.

Every staff read of a customer's file or documents is audited; every decision is audited
with its reason. Suspension takes effect on money at once: every money movement reads
the customer's status under its lock (app.services.accounts.check_can_transact), so a
token issued before it moves nothing after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import database_of, retry_on_conflict, unit_of_work
from app.errors import AlreadyDecided, CustomerNotFound, DocumentNotFound, ValidationFailed
from app.models import Account, Customer, CustomerStatus, KycDocument, KycStatus, User
from app.security import Principal
from app.services import audit, conflicts, inbox
from app.services.audit import Actor
from app.services.customers import Profile, load_profile, parse_customer_id
from app.services.pagination import Slice, decode_cursor, read_limit, slice_of

KYC_OPEN = (CustomerStatus.under_review, CustomerStatus.pending_kyc)
EXTENSIONS = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    customer_id: str
    username: str
    email: str
    full_name: str
    status: str
    kyc_status: str
    created_at: datetime


async def list_customers(
    db: AsyncSession, *, q: str | None, status: str | None, cursor: str | None, limit: int
) -> Slice[CustomerSummary]:
    """Customers by id; `q` matches a name or username or email (any part of it, any case)
    or a customer id (exactly)."""
    query = (
        select(Customer, User)
        .join(User, User.id == Customer.user_id)
        .order_by(Customer.id)
        .limit(read_limit(limit))
    )
    if status is not None:
        query = query.where(Customer.status == status)
    if q:
        # The text is matched as written: its % and _ are not wildcards.
        text = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{text}%"
        matches = [
            func.lower(Customer.full_name).like(like, escape="\\"),
            User.username.like(like, escape="\\"),
            User.email.like(like, escape="\\"),
        ]
        if (cid := parse_customer_id(q)) is not None:
            matches.append(Customer.id == cid)
        query = query.where(or_(*matches))
    if (after := decode_cursor(cursor)) is not None:
        query = query.where(Customer.id > after)
    rows = (await db.execute(query)).all()
    items = [
        CustomerSummary(
            str(c.id), u.username, u.email, c.full_name, c.status, c.kyc_status, c.created_at
        )
        for c, u in rows
    ]
    return slice_of(items, limit, key=lambda item: int(item.customer_id))


async def _profile(db: AsyncSession, customer_id: str) -> Profile:
    cid = parse_customer_id(customer_id)
    profile = await load_profile(db, cid) if cid is not None else None
    if profile is None:
        raise CustomerNotFound(f"No customer {customer_id}.")
    return profile


async def read_file(
    db: AsyncSession, *, principal: Principal, customer_id: str
) -> tuple[Profile, list[Account]]:
    """A customer's profile and accounts, as a staff read (audited)."""
    profile = await _profile(db, customer_id)
    found = await db.scalars(
        select(Account).where(Account.customer_id == profile.customer.id).order_by(Account.id)
    )
    owned = list(found.all())
    await audit.record_read(
        db,
        actor=Actor.of(principal),
        action="customer.read",
        entity_type="customer",
        entity_id=profile.customer.id,
    )
    return profile, owned


@retry_on_conflict
async def decide_kyc(
    db: AsyncSession, *, principal: Principal, customer_id: str, approve: bool, reason: str
) -> Profile:
    """An admin's KYC decision on a customer under review or still pending: `Active` or
    `KYC Rejected`. Anything else is 409 `already_decided`."""
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="kyc.decide"):
        return await _decide_kyc(db, principal, customer_id, approve, reason)


async def _decide_kyc(
    db: AsyncSession, principal: Principal, customer_id: str, approve: bool, reason: str
) -> Profile:
    async with unit_of_work(db) as tx:
        profile = await _profile(db, customer_id)
        customer = await db.get(
            Customer, profile.customer.id, with_for_update=True, populate_existing=True
        )
        assert customer is not None
        await conflicts.check_not_linked(
            db, principal.user_id, customer.id, f"Customer {customer.id}"
        )
        if customer.status not in KYC_OPEN:
            raise AlreadyDecided(f"Customer {customer.id} is {customer.status!r}: KYC is decided.")
        previous = customer.status
        if approve:
            customer.status, customer.kyc_status = CustomerStatus.active, KycStatus.verified
        else:
            customer.status, customer.kyc_status = CustomerStatus.kyc_rejected, KycStatus.rejected
        customer.kyc_checked_at = datetime.now(UTC)
        await inbox.release(db, inbox.KYC, customer.id)
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="kyc.decide",
            entity_type="customer",
            entity_id=customer.id,
            details={
                "decision": "approve" if approve else "reject",
                "from": previous,
                "to": customer.status,
                "reason": reason,
            },
        )
    return await _profile(db, customer_id)


@retry_on_conflict
async def set_standing(
    db: AsyncSession, *, principal: Principal, customer_id: str, suspend: bool, reason: str
) -> Profile:
    """Suspend an `Active` customer (they read, they move no money) or reactivate a
    `Suspended` one. Anything else is 409 `already_decided`."""
    before, after = (
        (CustomerStatus.active, CustomerStatus.suspended)
        if suspend
        else (CustomerStatus.suspended, CustomerStatus.active)
    )
    action = "customer.suspend" if suspend else "customer.reactivate"
    async with audit.denials_recorded(db, actor=Actor.of(principal), action=action):
        return await _set_standing(db, principal, customer_id, suspend, reason, before, after)


async def _set_standing(
    db: AsyncSession,
    principal: Principal,
    customer_id: str,
    suspend: bool,
    reason: str,
    before: CustomerStatus,
    after: CustomerStatus,
) -> Profile:
    async with unit_of_work(db) as tx:
        profile = await _profile(db, customer_id)
        customer = await db.get(
            Customer, profile.customer.id, with_for_update=True, populate_existing=True
        )
        assert customer is not None
        await conflicts.check_not_linked(
            db, principal.user_id, customer.id, f"Customer {customer.id}"
        )
        if customer.status != before:
            raise AlreadyDecided(
                f"Customer {customer.id} is {customer.status!r}; only {before.value!r} can be"
                f" {'suspended' if suspend else 'reactivated'}."
            )
        customer.status = after
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="customer.suspend" if suspend else "customer.reactivate",
            entity_type="customer",
            entity_id=customer.id,
            details={"reason": reason},
        )
    return await _profile(db, customer_id)


@dataclass(frozen=True, slots=True)
class DocumentFile:
    path: Path
    content_type: str
    filename: str


async def document(
    db: AsyncSession, *, principal: Principal, customer_id: str, document_id: str
) -> DocumentFile:
    """A KYC document's file, found by its id in the table: the path is the one stored
    at upload (a random name in the KYC folder); nothing from the request reaches it."""
    cid, did = parse_customer_id(customer_id), parse_customer_id(document_id)
    doc = await db.get(KycDocument, did) if did is not None else None
    if doc is None or doc.customer_id != cid:
        raise DocumentNotFound(f"No document {document_id} of customer {customer_id}.")
    path = database_of(db).settings.kyc_dir / doc.storage_name
    if not path.is_file():
        raise DocumentNotFound(f"Document {document_id} is missing from storage.")
    await audit.record_read(
        db,
        actor=Actor.of(principal),
        action="customer.document_read",
        entity_type="customer",
        entity_id=doc.customer_id,
        details={"document_id": str(doc.id), "kind": doc.kind},
    )
    extension = EXTENSIONS.get(doc.content_type, "bin")
    return DocumentFile(path, doc.content_type, f"{doc.kind}-{doc.id}.{extension}")


def check_status_filter(status: str | None) -> None:
    if status is not None and status not in set(CustomerStatus):
        raise ValidationFailed(f"Unknown status {status!r}.", field="status")
