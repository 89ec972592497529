"""Password hashing (Argon2id) and access tokens (JWT, HS256)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

import anyio
from jose import JWTError, jwt
from passlib.context import CryptContext

from app.errors import InvalidToken
from app.passwords import MAX_PASSWORD_BYTES
from app.settings import Settings

ALGORITHMS = ["HS256"]
VERIFIED_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, from a verified access token."""

    user_id: int
    role: str
    customer_id: int | None
    username: str
    # The login this token belongs to (its refresh-token family): the token dies with it.
    session_id: str | None = None


class RevokedSessions:
    """The sessions (refresh-token families) revoked lately, as this process knows them.
    The process reads the feed of revocations at most every `ttl` seconds, one indexed
    query however many sessions it serves, so an access token dies at once in the process
    that ended its session and within `ttl` in the others. A revocation older than an
    access token's lifetime is forgotten: no token of that session is still valid."""

    # Clocks of several machines disagree a little: each read looks this far back.
    OVERLAP = timedelta(seconds=30)

    def __init__(self, ttl: float, keep: timedelta) -> None:
        self.ttl = ttl
        self.keep = keep + self.OVERLAP
        self.lock = asyncio.Lock()
        self._revoked: dict[tuple[int, str], datetime] = {}
        self._since: datetime | None = None
        self._read_at = -math.inf

    @property
    def loaded(self) -> bool:
        return self._since is not None

    @property
    def since(self) -> datetime:
        return self._since or datetime.now(UTC) - self.keep

    def stale(self) -> bool:
        return time.monotonic() - self._read_at >= self.ttl

    def is_revoked(self, user_id: int, session_id: str) -> bool:
        return (user_id, session_id) in self._revoked

    def ended(self, user_id: int, *session_ids: str) -> None:
        """Sessions this process ended itself: known here at once."""
        now = datetime.now(UTC)
        for session_id in session_ids:
            self._revoked[(user_id, session_id)] = now

    def learn(self, revoked: Iterable[tuple[int, str, datetime]], read_started: datetime) -> None:
        for user_id, session_id, at in revoked:
            self._revoked[(user_id, session_id)] = at
        horizon = read_started - self.keep
        self._revoked = {key: at for key, at in self._revoked.items() if at >= horizon}
        self._since = read_started - self.OVERLAP
        self._read_at = time.monotonic()


class Security:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__time_cost=settings.argon2_time_cost,
            argon2__memory_cost=settings.argon2_memory_kib,
            argon2__parallelism=1,
        )
        self._verified: OrderedDict[str, tuple[Principal, int]] = OrderedDict()
        self.revoked_sessions = RevokedSessions(
            settings.session_check_seconds, timedelta(minutes=settings.access_token_minutes)
        )

    @cached_property
    def _dummy_hash(self) -> str:
        return self._context.hash(secrets.token_urlsafe(16))

    async def hash_password(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._context.hash, password)

    async def verify_password(self, password: str, password_hash: str | None) -> bool:
        """Constant work whether or not the user exists: an unknown user is checked
        against a dummy hash so timing does not reveal which usernames exist. A password
        longer than any the policy lets one set is wrong without hashing it (passlib
        refuses over 4 KiB with an error, and hashing megabytes is work an attacker picks)."""
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            return False
        target = password_hash or self._dummy_hash
        ok = await anyio.to_thread.run_sync(self._context.verify, password, target)
        return ok and password_hash is not None

    def create_access_token(self, principal: Principal) -> tuple[str, int]:
        now = datetime.now(UTC)
        lifetime = timedelta(minutes=self.settings.access_token_minutes)
        claims = {
            "sub": str(principal.user_id),
            "role": principal.role,
            "cid": principal.customer_id,
            "usr": principal.username,
            "iat": int(now.timestamp()),
            "exp": int((now + lifetime).timestamp()),
            "jti": uuid.uuid4().hex,
            "sid": principal.session_id,
        }
        token = jwt.encode(claims, self.settings.jwt_secret, algorithm=ALGORITHMS[0])
        return token, int(lifetime.total_seconds())

    def decode_access_token(self, token: str) -> Principal:
        """The caller of a valid access token. A token verified once is remembered with
        its expiry (the 4,096 most recently used), so a client's next requests skip the
        signature check and the claims parsing (~80 us with python-jose, a tenth of a
        transfer's CPU); the expiry is checked on every use, as a gateway's JWT cache
        does. Only verified tokens are remembered, keyed by the whole token string."""
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, expires = remembered
            if time.time() < expires:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
            raise InvalidToken("The access token is invalid or has expired.")
        principal, expires = self._verify(token)
        self._verified[token] = (principal, expires)
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, int]:
        try:
            claims = jwt.decode(
                token,
                self.settings.jwt_secret,
                algorithms=ALGORITHMS,
                options={
                    "require_exp": True,
                    "require_iat": True,
                    "require_sub": True,
                    "require_jti": True,
                },
            )
            cid = claims.get("cid")
            principal = Principal(
                user_id=int(claims["sub"]),
                role=str(claims["role"]),
                customer_id=int(cid) if cid is not None else None,
                username=str(claims.get("usr", "")),
                session_id=_session_id(claims.get("sid")),
            )
            return principal, int(claims["exp"])
        except (JWTError, KeyError, ValueError, TypeError) as exc:
            raise InvalidToken("The access token is invalid or has expired.") from exc


def _session_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a token without its session")
    return value


def new_refresh_token() -> tuple[str, str]:
    """A random refresh token and the SHA-256 that is all the database keeps of it."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
