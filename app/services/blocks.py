"""Block lists as the money path reads them: each customer account carries
`blocked_until`, the latest expiry of the live block entries that name it, its customer
or the customer's national id (None: not blocked; the far future for an entry without
an expiry). A movement so checks a block with the account row it locks anyway, at no
cost; the entries stay the truth, and every change to them (and every new account)
recomputes the accounts they name. An entry that expires stops applying by itself: the
time passes `blocked_until`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Account, AccountKind, Customer, ListEntry

FOREVER = datetime.max.replace(tzinfo=UTC)


def _naming(account: type[Account], customer: type[Customer]) -> object:
    """Live block entries that name the account, its customer, or their national id."""
    return and_(
        ListEntry.list_kind == "block",
        or_(ListEntry.expires_at.is_(None), ListEntry.expires_at > func.now()),
        or_(
            and_(ListEntry.target_type == "account", ListEntry.target == account.number),
            and_(
                ListEntry.target_type == "customer",
                ListEntry.target == func.cast(account.customer_id, type_=ListEntry.target.type),
            ),
            and_(
                ListEntry.target_type == "national_id",
                ListEntry.target == customer.national_id_hmac,
            ),
        ),
    )


async def blocked_until(db: AsyncSession, account_id: int) -> datetime | None:
    """When the block on an account ends (FOREVER: no end; None: it is not blocked)."""
    rows = (
        await db.execute(
            select(ListEntry.expires_at)
            .join(Account, Account.id == account_id)
            .outerjoin(Customer, Customer.id == Account.customer_id)
            .where(_naming(Account, Customer))
        )
    ).all()
    if not rows:
        return None
    return max(expires or FOREVER for (expires,) in rows)


async def affected(db: AsyncSession, target_type: str, target: str) -> list[int]:
    """The customer accounts an entry for `target` names."""
    query = select(Account.id).where(Account.kind == AccountKind.customer)
    if target_type == "account":
        query = query.where(Account.number == target)
    elif target_type == "customer":
        query = query.where(Account.customer_id == int(target))
    else:
        query = query.join(Customer, Customer.id == Account.customer_id).where(
            Customer.national_id_hmac == target
        )
    return list((await db.scalars(query.order_by(Account.id))).all())


async def refresh(db: AsyncSession, account_ids: list[int]) -> None:
    """Recompute `blocked_until` of these accounts from the entries (in the caller's
    transaction, which has just changed them)."""
    for account_id in account_ids:
        until = await blocked_until(db, account_id)
        await db.execute(
            update(Account).where(Account.id == account_id).values(blocked_until=until)
        )
