"""Conflicts of interest: an admin whose user is linked to a customer
(`users.linked_customer_id`, set by the bank for staff who also bank with it) decides
nothing of that customer: KYC, suspension, loans, account status, held transactions
(either side of them), fraud flags, list entries, inbox take-overs."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ConflictOfInterest
from app.models import User


async def linked_customer(db: AsyncSession, user_id: int) -> int | None:
    """The customer the user banks as, if any."""
    return await db.scalar(select(User.linked_customer_id).where(User.id == user_id))


async def check_not_linked(
    db: AsyncSession, user_id: int, customers: int | Iterable[int | None] | None, what: str
) -> None:
    """403 `conflict_of_interest` if `customers` (one, or several) holds the user's linked
    customer; the caller's `denials_recorded` audits it as a failed attempt."""
    concerned = {customers} if customers is None or isinstance(customers, int) else set(customers)
    linked = await linked_customer(db, user_id)
    if linked is not None and linked in concerned:
        raise ConflictOfInterest(
            f"{what} is of the customer your own user is linked to: another admin decides it."
        )
