"""Login, refresh-token rotation with reuse detection, logout, password change."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import store
from app.db import Database, Tx, end_reads, retry_on_conflict, unit_of_work
from app.errors import AccountLocked, InvalidCredentials, InvalidCurrentPassword, TokenReused
from app.errors import InvalidToken as InvalidRefreshToken
from app.models import Customer, LoginThrottle, RefreshToken, User
from app.passwords import check_password_policy
from app.security import Principal, Security, hash_token, new_refresh_token
from app.services import audit
from app.services.audit import ANONYMOUS, Actor


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    role: str


async def _principal_for(db: AsyncSession, user: User, session_id: str) -> Principal:
    customer_id = await db.scalar(select(Customer.id).where(Customer.user_id == user.id))
    return Principal(user.id, user.role, customer_id, user.username, session_id)


async def _issue(db: AsyncSession, security: Security, user: User, family_id: str) -> TokenPair:
    """A new pair for the session `family_id`; the access token names its session."""
    principal = await _principal_for(db, user, family_id)
    access, expires_in = security.create_access_token(principal)
    refresh, refresh_hash = new_refresh_token()
    db.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=refresh_hash,
            expires_at=datetime.now(UTC) + timedelta(days=security.settings.refresh_token_days),
        )
    )
    return TokenPair(access, refresh, expires_in, user.role)


async def _throttle(db: AsyncSession, tx: Tx, key: str) -> LoginThrottle:
    """The username's throttle row, created if absent and locked until COMMIT: concurrent
    attempts for one username take turns, so none of them checks the lockout before an
    earlier failure has been counted (a burst of guesses cannot outrun it), and the
    counter loses no updates. The loser of a create race waits for the winner's row."""
    await store.create_throttle(tx, key)
    row = await db.scalar(
        select(LoginThrottle)
        .where(LoginThrottle.username == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


def _locked_until(row: LoginThrottle) -> datetime | None:
    if row.locked_until and row.locked_until > datetime.now(UTC):
        return row.locked_until
    return None


def _note_failure(row: LoginThrottle, security: Security) -> None:
    settings = security.settings
    now = datetime.now(UTC)
    window = timedelta(minutes=settings.login_lockout_minutes)
    if row.window_started_at + window < now:
        row.failures, row.window_started_at, row.locked_until = 0, now, None
    row.failures += 1
    if row.failures >= settings.login_max_failures:
        row.locked_until = now + window


def _locked(until: datetime) -> AccountLocked:
    retry_after = max(1, int((until - datetime.now(UTC)).total_seconds()))
    return AccountLocked(
        f"Too many failed logins for this username; try again in {retry_after} seconds.",
        headers={"Retry-After": str(retry_after)},
    )


@retry_on_conflict
async def login(db: AsyncSession, security: Security, *, username: str, password: str) -> TokenPair:
    key = username.strip().lower()[:255]
    user = await db.scalar(
        select(User).where((func.lower(User.username) == key) | (func.lower(User.email) == key))
    )
    await end_reads(db)
    # Hash work happens outside the write transaction: it is slow and needs no lock.
    password_ok = await security.verify_password(password, user.password_hash if user else None)
    async with unit_of_work(db) as tx:
        throttle = await _throttle(db, tx, key)
        if until := _locked_until(throttle):
            await audit.record(
                tx,
                actor=Actor.of(None),
                action="auth.login",
                entity_type="user",
                entity_id=user.id if user else None,
                outcome="denied",
                details={"username": key, "reason": "locked"},
            )
            error: Exception = _locked(until)
        elif not password_ok or user is None or not user.is_active:
            _note_failure(throttle, security)
            await audit.record(
                tx,
                actor=ANONYMOUS,
                action="auth.login",
                entity_type="user",
                entity_id=user.id if user else None,
                outcome="failed",
                details={"username": key},
            )
            error = InvalidCredentials("The username or password is incorrect.")
        else:
            throttle.failures, throttle.locked_until = 0, None
            pair = await _issue(db, security, user, uuid.uuid4().hex)
            await audit.record(
                tx,
                actor=Actor(str(user.id), user.role),
                action="auth.login",
                entity_type="user",
                entity_id=user.id,
            )
            return pair
    raise error


@retry_on_conflict
async def refresh(db: AsyncSession, security: Security, *, refresh_token: str) -> TokenPair:
    now = datetime.now(UTC)
    async with unit_of_work(db) as tx:
        token = await db.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token))
        )
        if token is None or token.expires_at <= now:
            raise InvalidRefreshToken("The refresh token is invalid or expired.")
        # Conditional update: of two concurrent presentations only one wins.
        won = await db.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == token.id,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(used_at=now)
        )
        if won.rowcount == 0:
            await db.refresh(token)  # what the winner, or an earlier call, did to it
        user = await db.get(User, token.user_id)
        actor = Actor(str(token.user_id), user.role if user else None)
        if won.rowcount == 1 and user is not None and user.is_active:
            pair = await _issue(db, security, user, token.family_id)
            await audit.record(
                tx, actor=actor, action="auth.refresh", entity_type="user", entity_id=user.id
            )
            return pair
        await _revoke_family(db, token.family_id, now)
        reused = won.rowcount == 0 and token.used_at is not None
        # A token revoked before it was ever used (logout, password change, a reuse
        # elsewhere in its family) or a deactivated user: the session is over, which is
        # no sign of theft. A token presented after it was rotated is.
        await audit.record(
            tx,
            actor=actor,
            action="auth.refresh_reuse" if reused else "auth.refresh",
            entity_type="user",
            entity_id=token.user_id,
            outcome="denied",
            details={"family_id": token.family_id} | ({} if reused else {"reason": "revoked"}),
        )
        error: Exception = (
            TokenReused("This refresh token was already used; the session is revoked.")
            if reused
            else InvalidRefreshToken("This session has ended; log in again.")
        )
    security.revoked_sessions.ended(token.user_id, token.family_id)  # committed: known here at once
    raise error


async def end_sessions(db: AsyncSession, user_id: int, now: datetime) -> set[str]:
    """Revoke every live refresh token of a user, in the caller's transaction: every
    session ends, and the access tokens of each with it (app.security.RevokedSessions).
    Returns the sessions ended, for `revoked_sessions.ended` once committed."""
    live = (RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
    ended = set((await db.scalars(select(RefreshToken.family_id).where(*live))).all())
    await db.execute(update(RefreshToken).where(*live).values(revoked_at=now))
    return ended


async def _revoke_family(db: AsyncSession, family_id: str, now: datetime) -> None:
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def session_is_open(database: Database, security: Security, principal: Principal) -> bool:
    """Whether the login an access token belongs to is still open: not logged out, not
    ended by a password change or a refresh reuse. Asked on every authenticated request
    and answered from memory; the feed of revocations is read at most every
    BANK_SESSION_CHECK_SECONDS per process (the first request waits for the first read,
    later ones go on with what is known while one request reads)."""
    if principal.session_id is None:
        return False
    revoked = security.revoked_sessions
    if revoked.stale() and (not revoked.loaded or not revoked.lock.locked()):
        async with revoked.lock:
            if revoked.stale():
                started = datetime.now(UTC)
                async with database.session() as db:
                    rows = await db.execute(
                        select(
                            RefreshToken.user_id, RefreshToken.family_id, RefreshToken.revoked_at
                        )
                        .where(RefreshToken.revoked_at >= revoked.since)
                        .distinct()
                    )
                    revoked.learn([(u, f, at) for u, f, at in rows], started)
    return not revoked.is_revoked(principal.user_id, principal.session_id)


@retry_on_conflict
async def logout(
    db: AsyncSession, security: Security, *, principal: Principal, refresh_token: str
) -> None:
    """End the session of `refresh_token` (one of the caller's): its refresh tokens stop
    working, and so do its access tokens, this one included."""
    now = datetime.now(UTC)
    async with unit_of_work(db) as tx:
        token = await db.scalar(
            select(RefreshToken).where(
                RefreshToken.token_hash == hash_token(refresh_token),
                RefreshToken.user_id == principal.user_id,
            )
        )
        if token is not None:
            await _revoke_family(db, token.family_id, now)
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="auth.logout",
            entity_type="user",
            entity_id=principal.user_id,
            details={"revoked": token is not None},
        )
    if token is not None:
        security.revoked_sessions.ended(principal.user_id, token.family_id)


@retry_on_conflict
async def change_password(
    db: AsyncSession,
    security: Security,
    *,
    principal: Principal,
    current_password: str,
    new_password: str,
) -> None:
    user = await db.get(User, principal.user_id)
    await end_reads(db)
    if user is None or not await security.verify_password(current_password, user.password_hash):
        raise InvalidCurrentPassword("The current password is incorrect.", field="current_password")
    check_password_policy(
        new_password, username=user.username, email=user.email, field="new_password"
    )
    new_hash = await security.hash_password(new_password)
    now = datetime.now(UTC)
    async with unit_of_work(db) as tx:
        await db.execute(
            update(User)
            .where(User.id == user.id)
            .values(password_hash=new_hash, password_changed_at=now)
        )
        # Every refresh token of the user is revoked (API.md §2): every session ends, the
        # caller's too, and their access tokens with them; the next step is a login.
        ended = await end_sessions(db, user.id, now)
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="auth.password_change",
            entity_type="user",
            entity_id=user.id,
        )
    security.revoked_sessions.ended(user.id, *ended)
