"""Password hashing (Argon2id) and access tokens (JWT, HS256)."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
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


class SessionCache:
    """What this process last learned of a session: open or ended, and when. A session
    ended here (logout, password change, a refresh reuse) is known at once; one ended by
    another process is seen after at most `ttl` seconds, when the entry goes stale and
    the database is asked again. Bounded: the least recently used entries go first."""

    def __init__(self, ttl: float, size: int = VERIFIED_TOKENS) -> None:
        self.ttl = ttl
        self.size = size
        self._known: OrderedDict[tuple[int, str], tuple[bool, float]] = OrderedDict()

    def get(self, user_id: int, session_id: str) -> bool | None:
        known = self._known.get((user_id, session_id))
        if known is None or time.monotonic() - known[1] >= self.ttl:
            return None
        return known[0]

    def note(self, user_id: int, session_id: str, is_open: bool) -> None:
        key = (user_id, session_id)
        self._known[key] = (is_open, time.monotonic())
        self._known.move_to_end(key)
        if len(self._known) > self.size:
            self._known.popitem(last=False)

    def ended(self, user_id: int, *session_ids: str) -> None:
        for session_id in session_ids:
            self.note(user_id, session_id, False)


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
        self.sessions = SessionCache(settings.session_check_seconds)

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
