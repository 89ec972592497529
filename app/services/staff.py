"""Staff accounts (admin, auditor): created by the CLI or by an admin, never self-registered."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import end_reads, unit_of_work
from app.errors import UsernameTaken
from app.models import Role, User
from app.passwords import check_password_policy
from app.security import Security
from app.services import audit
from app.services.audit import Actor
from app.services.customers import check_unique


async def create_staff(
    db: AsyncSession,
    security: Security,
    *,
    username: str,
    email: str,
    password: str,
    role: Role,
    actor: Actor,
) -> User:
    username, email = username.strip().lower(), email.strip().lower()
    check_password_policy(password, username=username, email=email, field="password")
    await check_unique(db, username=username, email=email)
    await end_reads(db)
    password_hash = await security.hash_password(password)
    try:
        async with unit_of_work(db) as tx:
            await check_unique(db, username=username, email=email)
            user = User(
                username=username,
                email=email,
                password_hash=password_hash,
                role=role,
                is_active=True,
            )
            db.add(user)
            await db.flush()
            await audit.record(
                tx,
                actor=actor,
                action="staff.create",
                entity_type="user",
                entity_id=user.id,
                details={"username": username, "role": role},
            )
    except IntegrityError as exc:
        # Lost a race with a concurrent creation of the same name or address.
        await check_unique(db, username=username, email=email)
        raise UsernameTaken("The username or email is taken.", field="username") from exc
    return user
