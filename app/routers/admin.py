"""Endpoints for bank administrators."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import AdminUser, DbSession, SecurityDep
from app.models import Role
from app.routing import AccountNumberPath, StrictQueryRoute
from app.schemas.common import problem_responses
from app.schemas.ledger import AccountOut, AccountStatusChange
from app.schemas.staff import StaffCreate, StaffOut
from app.services import accounts, staff
from app.services.audit import Actor

router = APIRouter(prefix="/api/admin", tags=["admin"], route_class=StrictQueryRoute)


@router.post(
    "/users",
    status_code=201,
    response_model=StaffOut,
    summary="Create a staff user (admin or auditor)",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_user(
    body: StaffCreate, principal: AdminUser, db: DbSession, security: SecurityDep
) -> StaffOut:
    """Create a staff user, an admin or an auditor. Admins only. A taken username or email is
    409; a weak password 422 `weak_password`."""
    user = await staff.create_staff(
        db,
        security,
        username=body.username,
        email=body.email,
        password=body.password,
        role=Role(body.role),
        actor=Actor.of(principal),
    )
    return StaffOut(
        user_id=str(user.id),
        username=user.username,
        email=user.email,
        role=user.role,
        created_at=user.created_at,
    )


@router.patch(
    "/accounts/{account_number}",
    response_model=AccountOut,
    summary="Freeze, unfreeze or close a customer's account",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def set_account_status(
    account_number: AccountNumberPath,
    body: AccountStatusChange,
    principal: AdminUser,
    db: DbSession,
) -> AccountOut:
    """Freeze, unfreeze or close a customer's account, with a reason that goes into the audit
    trail. A frozen account neither sends nor receives money. Admins only. A change the
    account's state does not allow (closing with money in it, anything on a closed
    account) is 409."""
    account = await accounts.set_status(
        db, principal=principal, number=account_number, status=body.status, reason=body.reason
    )
    return AccountOut.of(account)
