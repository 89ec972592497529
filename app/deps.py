"""Typed dependencies shared by the routers: sessions, settings, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import caller_var
from app.db import Database, unit_of_work
from app.errors import Forbidden, InvalidToken, NotAuthenticated
from app.models import Role
from app.security import Principal, Security
from app.services import audit, auth
from app.services.audit import Actor
from app.services.loan_products import Catalog
from app.services.rules import RuleSet
from app.services.scoring import Scorer
from app.settings import Settings

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)

# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in its thread pool, a thread round trip on every request. The ones every
# request resolves (the caller, the role check) read the app's state from the request
# rather than through further dependencies: each level of FastAPI's resolver costs tens
# of microseconds per request.


async def get_database(request: Request) -> Database:
    return request.app.state.database


async def get_scorer(request: Request) -> Scorer:
    return request.app.state.scorer


async def get_rules(request: Request) -> RuleSet:
    return request.app.state.rules


async def get_products(request: Request) -> Catalog:
    return request.app.state.loan_products


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_security(request: Request) -> Security:
    return request.app.state.security


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """A session per request. It never commits: services open their own unit of work;
    whatever is left open here is rolled back on close."""
    async with database.session() as session:
        yield session


async def _authenticate(request: Request, token: str | None) -> Principal:
    """The caller of a valid access token whose session is still open (an access token
    dies with its session: logout, password change, refresh reuse)."""
    if not token:
        raise NotAuthenticated("A bearer access token is required.")
    state = request.app.state
    principal = state.security.decode_access_token(token)
    if not await auth.session_is_open(state.database, state.security, principal):
        raise InvalidToken("The session of this access token has ended; log in again.")
    if (caller := caller_var.get()) is not None:  # for the request log line
        caller.user_id = principal.user_id
    return principal


async def get_principal(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Principal:
    return await _authenticate(request, token)


def require_role(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    # Authenticates itself rather than depending on get_principal: one level less for
    # FastAPI to resolve on every customer, admin and auditor request.
    async def check(
        request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
    ) -> Principal:
        principal = await _authenticate(request, token)
        if principal.role not in roles:
            # Every denied request is audited (API.md §8), in a transaction of its own.
            database: Database = request.app.state.database
            async with database.session() as db, unit_of_work(db) as tx:
                await audit.record(
                    tx,
                    actor=Actor.of(principal),
                    action="access.denied",
                    entity_type="endpoint",
                    entity_id=request.url.path[:64],
                    outcome="denied",
                    details={"method": request.method, "allowed_roles": sorted(roles)},
                )
            raise Forbidden("This operation is not allowed for your role.")
        return principal

    return check


DbSession = Annotated[AsyncSession, Depends(get_session)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SecurityDep = Annotated[Security, Depends(get_security)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
RulesDep = Annotated[RuleSet, Depends(get_rules)]
ProductsDep = Annotated[Catalog, Depends(get_products)]
CurrentUser = Annotated[Principal, Depends(get_principal)]
CurrentCustomer = Annotated[Principal, Depends(require_role(Role.customer))]
AdminUser = Annotated[Principal, Depends(require_role(Role.admin))]
StaffUser = Annotated[Principal, Depends(require_role(Role.admin, Role.auditor))]
AuditReader = StaffUser
