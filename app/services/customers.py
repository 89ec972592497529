"""Customer registration, profiles and self-service updates."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import store
from app.db import end_reads, unit_of_work
from app.errors import CustomerNotFound, EmailTaken, UsernameTaken
from app.models import Customer, CustomerStatus, JobKind, KycDocument, Role, User
from app.schemas.customer import MIN_AGE, CustomerUpdate, RegistrationForm, age_on
from app.security import Principal, Security
from app.services import audit, documents
from app.services.audit import Actor
from app.services.documents import StoredDocument, Upload
from app.settings import Settings


def national_id_hmac(settings: Settings, national_id: str) -> str:
    key = (settings.pii_secret or "").encode()
    return hmac.new(key, national_id.strip().upper().encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Registration:
    customer: Customer
    user: User
    job_id: int


async def check_unique(
    db: AsyncSession, *, username: str | None, email: str | None, exclude_user: int | None = None
) -> None:
    def others(column: Any, value: str) -> Any:
        query = select(User.id).where(func.lower(column) == value)
        return query.where(User.id != exclude_user) if exclude_user else query

    if username and await db.scalar(others(User.username, username)):
        raise UsernameTaken(f"The username {username!r} is taken.", field="username")
    if email and await db.scalar(others(User.email, email)):
        raise EmailTaken("This email address is already registered.", field="email")


async def register(
    db: AsyncSession,
    security: Security,
    settings: Settings,
    *,
    form: RegistrationForm,
    uploads: list[Upload],
) -> Registration:
    content_types = [await documents.check_upload(u, settings.upload_max_bytes) for u in uploads]
    await check_unique(db, username=form.username, email=form.email)  # fail fast, no writes
    await end_reads(db)
    password_hash = await security.hash_password(form.password)
    stored: list[StoredDocument] = []
    try:
        for upload, content_type in zip(uploads, content_types, strict=True):
            stored.append(await documents.store(upload, settings.kyc_dir, content_type))
        async with unit_of_work(db) as tx:
            await check_unique(db, username=form.username, email=form.email)
            user = User(
                username=form.username,
                email=form.email,
                password_hash=password_hash,
                role=Role.customer,
                is_active=True,
            )
            db.add(user)
            await db.flush()
            customer = Customer(
                user_id=user.id,
                full_name=form.full_name,
                date_of_birth=form.date_of_birth,
                phone=form.phone,
                address=form.address,
                national_id_hmac=national_id_hmac(settings, form.national_id),
                national_id_last4=form.national_id[-4:],
                status=CustomerStatus.pending_kyc,
                kyc_reasons=[],
            )
            db.add(customer)
            await db.flush()
            db.add_all(
                KycDocument(
                    customer_id=customer.id,
                    kind=doc.kind,
                    content_type=doc.content_type,
                    size=doc.size,
                    sha256=doc.sha256,
                    storage_name=doc.storage_name,
                )
                for doc in stored
            )
            job_id = await store.enqueue_job(tx, JobKind.kyc_check, {"customer_id": customer.id})
            await audit.record(
                tx,
                actor=Actor(str(user.id), Role.customer),
                action="customer.register",
                entity_type="customer",
                entity_id=customer.id,
                details={
                    "username": user.username,
                    "documents": [{"kind": d.kind, "sha256": d.sha256} for d in stored],
                },
            )
        return Registration(customer, user, job_id)
    except IntegrityError as exc:
        documents.remove(settings.kyc_dir, stored)
        # Lost a race with a concurrent registration of the same name or address.
        await check_unique(db, username=form.username, email=form.email)
        raise UsernameTaken("The username or email is taken.", field="username") from exc
    except BaseException:
        documents.remove(settings.kyc_dir, stored)
        raise


@dataclass(frozen=True, slots=True)
class Profile:
    """A customer as their profile shows them (CustomerOut)."""

    customer: Customer
    user: User
    documents: list[KycDocument]


async def load_profile(db: AsyncSession, customer_id: int) -> Profile | None:
    row = (
        await db.execute(
            select(Customer, User)
            .join(User, User.id == Customer.user_id)
            .where(Customer.id == customer_id)
        )
    ).first()
    if row is None:
        return None
    docs = (
        await db.scalars(
            select(KycDocument)
            .where(KycDocument.customer_id == customer_id)
            .order_by(KycDocument.id)
        )
    ).all()
    return Profile(row[0], row[1], list(docs))


def parse_customer_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) <= 18 else None


async def get_profile(db: AsyncSession, *, principal: Principal, customer_id: str) -> Profile:
    """Object-level authorization: the customer themself or staff; anyone else gets the
    same 404 as for a customer that does not exist, and the denial is audited."""
    cid = parse_customer_id(customer_id)
    is_staff = principal.role in (Role.admin, Role.auditor)
    profile = await load_profile(db, cid) if cid is not None else None
    await end_reads(db)
    allowed = profile is not None and (is_staff or principal.customer_id == cid)
    if allowed and not is_staff:
        return profile  # type: ignore[return-value]
    async with unit_of_work(db) as tx:
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="customer.read",
            entity_type="customer",
            entity_id=customer_id[:64],
            outcome="success" if allowed else "denied",
        )
    if not allowed:
        raise CustomerNotFound(f"No customer {customer_id}.")
    return profile  # type: ignore[return-value]


async def update_me(db: AsyncSession, *, principal: Principal, changes: CustomerUpdate) -> Profile:
    if principal.customer_id is None:
        raise CustomerNotFound("The caller is not a customer.")
    fields = changes.model_dump(exclude_unset=True, exclude_none=True)
    try:
        async with unit_of_work(db) as tx:
            customer = await db.get(Customer, principal.customer_id)
            user = await db.get(User, principal.user_id)
            if customer is None or user is None:
                raise CustomerNotFound("The caller is not a customer.")
            if "email" in fields and fields["email"] != user.email:
                await check_unique(db, username=None, email=fields["email"], exclude_user=user.id)
                user.email = fields["email"]
            for name in ("phone", "address"):
                if name in fields:
                    setattr(customer, name, fields[name])
            await audit.record(
                tx,
                actor=Actor.of(principal),
                action="customer.update",
                entity_type="customer",
                entity_id=customer.id,
                details={"fields": sorted(fields)},
            )
    except IntegrityError as exc:
        # Lost a race with a concurrent change to the same address: the unique index
        # decided, after both had passed the check above.
        raise EmailTaken("This email address is already registered.", field="email") from exc
    profile = await load_profile(db, principal.customer_id)
    assert profile is not None
    return profile


def is_adult(birth: date, today: datetime) -> bool:
    return age_on(birth, today.date()) >= MIN_AGE
