"""Endpoints for customers (and staff reading a customer's profile)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import CurrentCustomer, CurrentUser, DbSession
from app.errors import CustomerNotFound
from app.schemas.common import problem_responses
from app.schemas.customer import CustomerOut, CustomerUpdate
from app.services import customers

router = APIRouter(prefix="/api/customers", tags=["customers"])


@router.get(
    "/me",
    response_model=CustomerOut,
    summary="My customer profile",
    responses=problem_responses(401, 403, 404),
)
async def get_me(principal: CurrentCustomer, db: DbSession) -> dict[str, Any]:
    profile = await customers.load_profile(db, principal.customer_id or 0)
    if profile is None:
        raise CustomerNotFound("The caller is not a customer.")
    return profile.as_dict()


@router.patch(
    "/me",
    response_model=CustomerOut,
    summary="Update my email, phone or address",
    responses=problem_responses(401, 403, 409, 422),
)
async def patch_me(
    body: CustomerUpdate, principal: CurrentCustomer, db: DbSession
) -> dict[str, Any]:
    profile = await customers.update_me(db, principal=principal, changes=body)
    return profile.as_dict()


@router.get(
    "/{customer_id}",
    response_model=CustomerOut,
    summary="A customer's profile (the customer themself, admins, auditors)",
    responses=problem_responses(401, 404),
)
async def get_customer(customer_id: str, principal: CurrentUser, db: DbSession) -> dict[str, Any]:
    profile = await customers.get_profile(db, principal=principal, customer_id=customer_id)
    return profile.as_dict()
