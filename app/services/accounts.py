"""Customer accounts: numbers, opening, closing, status, and the rules every money
movement checks on the accounts it locked (app.store.accounts takes the locks)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import store
from app.db import retry_on_conflict, unit_of_work
from app.errors import (
    AccountClosed,
    AccountNotActive,
    AccountNotFound,
    BalanceNotZero,
    CustomerNotFound,
    CustomerSuspended,
    InvalidAccountNumber,
    KycRequired,
    StatusUnchanged,
)
from app.models import Account, AccountKind, AccountStatus, CustomerStatus, Role
from app.security import Principal
from app.services import audit, blocks, conflicts
from app.services.audit import Actor
from app.services.pagination import Slice, decode_cursor, read_limit, slice_of
from app.store import LockedAccount

NUMBER_LENGTH = 12


def luhn_check_digit(payload: str) -> str:
    total = 0
    for index, char in enumerate(reversed(payload)):
        digit = int(char)
        if index % 2 == 0:  # every second digit from the right, check digit excluded
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def is_valid_number(number: str) -> bool:
    return (
        len(number) == NUMBER_LENGTH
        and number.isascii()
        and number.isdigit()
        and luhn_check_digit(number[:-1]) == number[-1]
    )


def new_number() -> str:
    """Random, so numbers reveal nothing about order or volume."""
    payload = str(secrets.randbelow(9) + 1) + "".join(
        str(secrets.randbelow(10)) for _ in range(NUMBER_LENGTH - 2)
    )
    return payload + luhn_check_digit(payload)


def parse_number(raw: str, *, field: str) -> str:
    number = raw.strip()
    if not is_valid_number(number):
        raise InvalidAccountNumber(
            f"{raw!r} is not a valid account number (12 digits with a Luhn check digit).",
            field=field,
        )
    return number


def check_can_transact(status: str | None) -> None:
    """`status` is the caller's customer status, None if the caller is not a customer."""
    if status is None:
        raise CustomerNotFound("The caller is not a customer.")
    if status == CustomerStatus.suspended:
        raise CustomerSuspended("The customer is suspended and cannot move money.")
    if status != CustomerStatus.active:
        raise KycRequired(f"The customer's status is {status!r}; KYC must be approved.")


# Built once: the money path runs these on every request.
_LOCK_ACCOUNTS = (
    select(Account)
    .where(Account.number.in_(bindparam("numbers", expanding=True)))
    .order_by(Account.id)
    .with_for_update(key_share=True)  # FOR NO KEY UPDATE, as app.db.locking
    .execution_options(populate_existing=True)
)


async def lock_accounts(db: AsyncSession, numbers: Iterable[str]) -> dict[str, Account]:
    """Lock accounts by number in ascending id order (the global lock order)."""
    rows = await db.scalars(_LOCK_ACCOUNTS, {"numbers": list(numbers)})
    return {account.number: account for account in rows}


A = TypeVar("A", Account, LockedAccount)


def owned(account: A | None, principal: Principal, number: str, field: str) -> A:
    """The caller's account, or the same 404 whether it is missing or someone else's."""
    if account is None:
        raise AccountNotFound(f"No account {number}.", field=field)
    if account.customer_id != principal.customer_id or account.kind != AccountKind.customer:
        raise AccountNotFound(f"No account {number}.", field=field).denying("account", number)
    return account


def check_active(account: Account | LockedAccount, field: str) -> None:
    if account.status != AccountStatus.active:
        raise AccountNotActive(f"Account {account.number} is {account.status}.", field=field)


@retry_on_conflict
async def open_account(
    db: AsyncSession, *, principal: Principal, type: str, currency: str
) -> Account:
    async with unit_of_work(db) as tx:
        check_can_transact(await store.lock_customer(tx, principal.customer_id))
        account = Account(
            number=new_number(),
            customer_id=principal.customer_id,
            kind=AccountKind.customer,
            type=type,
            currency=currency,
            balance=0,
            held=0,
            status=AccountStatus.active,
        )
        db.add(account)
        await db.flush()
        # A block on the customer or their national id covers the new account too.
        account.blocked_until = await blocks.blocked_until(db, account.id)
        await db.flush()
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="account.open",
            entity_type="account",
            entity_id=account.number,
            details={"type": type, "currency": currency},
        )
    return account


async def list_accounts(
    db: AsyncSession, *, principal: Principal, cursor: str | None, limit: int
) -> Slice[Account]:
    query = (
        select(Account)
        .where(Account.customer_id == principal.customer_id)
        .order_by(Account.id)
        .limit(read_limit(limit))
    )
    if (after_id := decode_cursor(cursor)) is not None:
        query = query.where(Account.id > after_id)
    rows = list((await db.scalars(query)).all())
    return slice_of(rows, limit, key=lambda account: account.id)


def is_staff(principal: Principal) -> bool:
    return principal.role in (Role.admin, Role.auditor)


def visible(account: Account | None, principal: Principal, number: str, field: str) -> Account:
    """A customer's own account, or, for staff, any customer's (reads only)."""
    if is_staff(principal):
        if account is None or account.kind != AccountKind.customer:
            raise AccountNotFound(f"No account {number}.", field=field)
        return account
    return owned(account, principal, number, field)


async def get_account(db: AsyncSession, *, principal: Principal, number: str) -> Account:
    """One of the caller's accounts; staff read any customer's, and the read is audited."""
    number = parse_number(number, field="account_number")
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="account.read"):
        account = await db.scalar(select(Account).where(Account.number == number))
        found = visible(account, principal, number, "account_number")
    if is_staff(principal):
        await audit.record_read(
            db,
            actor=Actor.of(principal),
            action="account.read",
            entity_type="account",
            entity_id=number,
        )
    return found


@retry_on_conflict
async def close_account(db: AsyncSession, *, principal: Principal, number: str) -> Account:
    number = parse_number(number, field="account_number")
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="account.close"):
        async with unit_of_work(db) as tx:
            account = owned(
                (await lock_accounts(db, [number])).get(number), principal, number, "account_number"
            )
            if account.status == AccountStatus.closed:
                raise AccountNotActive(f"Account {number} is already closed.")
            if account.balance != 0 or account.held != 0:
                raise BalanceNotZero(f"Account {number} still holds money; move it out first.")
            account.status = AccountStatus.closed
            account.closed_at = datetime.now(UTC)
            await audit.record(
                tx,
                actor=Actor.of(principal),
                action="account.close",
                entity_type="account",
                entity_id=number,
            )
    return account


@retry_on_conflict
async def set_status(
    db: AsyncSession, *, principal: Principal, number: str, status: str, reason: str
) -> Account:
    """An admin freezes, unfreezes or closes an account (not one of the customer their
    user is linked to: 403 `conflict_of_interest`, audited)."""
    number = parse_number(number, field="account_number")
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="account.status"):
        return await _set_status(db, principal, number, status, reason)


async def _set_status(
    db: AsyncSession, principal: Principal, number: str, status: str, reason: str
) -> Account:
    async with unit_of_work(db) as tx:
        account = (await lock_accounts(db, [number])).get(number)
        if account is None or account.kind != AccountKind.customer:
            raise AccountNotFound(f"No account {number}.")
        await conflicts.check_not_linked(
            db, principal.user_id, account.customer_id, f"Account {number}"
        )
        # Closing is for good: the number, its history and its statements stay, but
        # nothing reopens it (a new account is opened instead).
        if account.status == AccountStatus.closed:
            raise AccountClosed(f"Account {number} is closed; a closed account stays closed.")
        if account.status == status:
            raise StatusUnchanged(f"Account {number} is already {status}.", field="status")
        if status == AccountStatus.closed and (account.balance or account.held):
            raise BalanceNotZero(f"Account {number} still holds money.")
        previous = account.status
        account.status = status
        account.closed_at = datetime.now(UTC) if status == AccountStatus.closed else None
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="account.status",
            entity_type="account",
            entity_id=number,
            details={"from": previous, "to": status, "reason": reason},
        )
    return account
