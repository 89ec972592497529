"""Staff accounts (admin, auditor): created by the CLI or by an admin, never self-registered."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import end_reads, retry_on_conflict, unit_of_work
from app.errors import AlreadyDecided, CannotDisableSelf, StaffNotFound, UsernameTaken
from app.models import Role, User
from app.passwords import check_password_policy
from app.security import Principal, Security
from app.services import audit, inbox
from app.services.audit import Actor
from app.services.auth import end_sessions
from app.services.customers import check_unique
from app.services.pagination import Slice, decode_cursor, read_limit, slice_of


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


async def list_staff(
    db: AsyncSession, *, role: str | None, cursor: str | None, limit: int
) -> Slice[User]:
    """Admins and auditors, by id."""
    roles = (role,) if role else (Role.admin, Role.auditor)
    query = select(User).where(User.role.in_(roles)).order_by(User.id).limit(read_limit(limit))
    if (after := decode_cursor(cursor)) is not None:
        query = query.where(User.id > after)
    return slice_of(list((await db.scalars(query)).all()), limit, key=lambda user: user.id)


@retry_on_conflict
async def disable_staff(
    db: AsyncSession, security: Security, *, principal: Principal, user_id: str, reason: str
) -> User:
    """Disable an admin or auditor: no login from now on (401 `invalid_credentials`), and
    every session of theirs ends at once (their refresh tokens are revoked, and the access
    tokens of those sessions die with them)."""
    uid = int(user_id) if user_id.isdigit() and len(user_id) <= 18 else None
    now = datetime.now(UTC)
    async with unit_of_work(db) as tx:
        user = await db.get(User, uid, with_for_update=True) if uid is not None else None
        if user is None or user.role not in (Role.admin, Role.auditor):
            raise StaffNotFound(f"No staff user {user_id}.")
        if user.id == principal.user_id:
            raise CannotDisableSelf("An admin cannot disable their own user.")
        if not user.is_active:
            raise AlreadyDecided(f"User {user.id} is disabled already.")
        user.is_active = False
        ended = await end_sessions(db, user.id, now)
        await inbox.release_all(db, user.id)  # what they held goes back to the queue
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="staff.disable",
            entity_type="user",
            entity_id=user.id,
            details={"username": user.username, "role": user.role, "reason": reason},
        )
    security.revoked_sessions.ended(user.id, *ended)
    return user
