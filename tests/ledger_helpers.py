"""Helpers for the accounts and money-movement tests (issue 3).

They drive the API the way a client would, and read the database directly (behind the
app's back) only to check invariants the API cannot be trusted to report on itself.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from app.main import create_app
from app.schemas.customer import RegistrationForm
from app.services import customers, reconciliation
from app.services.documents import Upload
from app.services.reconciliation import LedgerReport
from app.store import accounts as store_accounts
from app.store import journals as store_journals
from tests.conftest import base_settings
from tests.helpers import PDF, PNG, Bank, registration_form

MONEY = re.compile(r"^-?[0-9]+\.[0-9]{2}$")
PROBLEM_JSON = "application/problem+json"
TRANSACTION_KEYS = {
    "transaction_id",
    "type",
    "status",
    "amount",
    "currency",
    "from_account",
    "to_account",
    "description",
    "created_at",
    "balance_after",
    "flagged",
}
ACCOUNT_KEYS = {
    "account_number",
    "customer_id",
    "type",
    "currency",
    "balance",
    "available_balance",
    "status",
    "opened_at",
}
_keys = itertools.count(1)


# --- response checks ---------------------------------------------------------------


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem response with this status and code; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def error_fields(response: httpx.Response) -> set[str]:
    return {item["field"] for item in response.json().get("errors", [])}


def is_money(value: object) -> bool:
    return isinstance(value, str) and MONEY.match(value) is not None


def cents(value: str) -> int:
    """A two-place amount string as integer cents (test-side, independent of app.money)."""
    assert is_money(value), value
    return int(Decimal(value) * 100)


def amount(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d}"


# --- account numbers (an independent Luhn implementation) ----------------------------


def luhn_valid(number: str) -> bool:
    if not (len(number) == 12 and number.isascii() and number.isdigit()):
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def with_check_digit(payload: str) -> str:
    """The 12-digit Luhn-valid number for an 11-digit payload."""
    return next(payload + d for d in "0123456789" if luhn_valid(payload + d))


def unknown_number(seed: int = 0) -> str:
    """A Luhn-valid number that no test opens (the app's numbers are random; the chance
    of a collision with one of a handful of accounts is 1e-10)."""
    return with_check_digit(f"{98765432100 + seed:011d}")


def wrong_check_digit(number: str) -> str:
    bad = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert not luhn_valid(bad)
    return bad


# --- API shortcuts -------------------------------------------------------------------


def new_key() -> str:
    return f"key-{next(_keys)}-{datetime.now(UTC).timestamp()}"


async def open_account(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    type: str = "checking",
    currency: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type}
    if currency is not None:
        body["currency"] = currency
    response = await client.post("/api/accounts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def deposit(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    number: str,
    value: Any,
    *,
    key: str | None = None,
    description: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"account_number": number, "amount": value}
    if description is not None:
        body["description"] = description
    return await client.post(
        "/api/transactions/deposit", json=body, headers=_with_key(headers, key)
    )


async def withdraw(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    number: str,
    value: Any,
    *,
    key: str | None = None,
) -> httpx.Response:
    body = {"account_number": number, "amount": value}
    return await client.post(
        "/api/transactions/withdrawal", json=body, headers=_with_key(headers, key)
    )


async def transfer(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    source: str,
    target: str,
    value: Any,
    *,
    key: str | None = None,
    description: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"from_account": source, "to_account": target, "amount": value}
    if description is not None:
        body["description"] = description
    return await client.post(
        "/api/transactions/transfer", json=body, headers=_with_key(headers, key)
    )


def _with_key(headers: dict[str, str], key: str | None) -> dict[str, str]:
    return headers if key is None else {**headers, "Idempotency-Key": key}


async def deposited(
    client: httpx.AsyncClient, headers: dict[str, str], number: str, value: str
) -> dict[str, Any]:
    response = await deposit(client, headers, number, value)
    assert response.status_code == 201, response.text
    return response.json()


async def funded_account(
    bank: Bank, value: str = "1000.00", **customer_fields: Any
) -> tuple[dict[str, Any], dict[str, str], str]:
    """A new Active customer with one checking account holding `value`:
    (registration body, auth headers, account number)."""
    body, headers = await bank.customer(**customer_fields)
    number = (await open_account(bank.client, headers))["account_number"]
    if value != "0.00":
        await deposited(bank.client, headers, number, value)
    return body, headers, number


async def account(
    client: httpx.AsyncClient, headers: dict[str, str], number: str
) -> dict[str, Any]:
    response = await client.get(f"/api/accounts/{number}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def balance(client: httpx.AsyncClient, headers: dict[str, str], number: str) -> str:
    return (await account(client, headers, number))["balance"]


# --- customers the KYC check has not approved -----------------------------------------


async def register_pending(app: FastAPI, **fields: Any) -> dict[str, str]:
    """Register through the service without running the queued KYC job (as a crash
    right after the commit would leave it); return the registration form."""
    form = registration_form(**fields)
    uploads = [
        Upload("id_document", io.BytesIO(PNG), len(PNG)),
        Upload("address_proof", io.BytesIO(PDF), len(PDF)),
    ]
    async with app.state.database.session() as db:
        await customers.register(
            db,
            app.state.security,
            app.state.settings,
            form=RegistrationForm.model_validate(form),
            uploads=uploads,
        )
    return form


# --- the database, behind the app's back ----------------------------------------------


async def sql(app: FastAPI, statement: str, **params: Any) -> list[Any]:
    """Run raw SQL in its own committed transaction; return the rows, if any."""
    async with app.state.database.engine.begin() as conn:
        result = await conn.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


async def scalar(app: FastAPI, statement: str, **params: Any) -> Any:
    rows = await sql(app, statement, **params)
    return rows[0][0] if rows else None


async def journal_count(app: FastAPI, kind: str | None = None) -> int:
    if kind is None:
        return int(await scalar(app, "SELECT count(*) FROM journals"))
    return int(await scalar(app, "SELECT count(*) FROM journals WHERE kind = :k", k=kind))


async def stored_balances(app: FastAPI) -> dict[str, int]:
    """Every customer account's stored balance in cents, by number."""
    rows = await sql(app, "SELECT number, balance FROM accounts WHERE kind = 'customer'")
    return {number: int(value) for number, value in rows}


async def entry_sums(app: FastAPI) -> dict[str, int]:
    """Every account's balance recomputed from its ledger entries, by number."""
    rows = await sql(
        app,
        "SELECT a.number, coalesce(sum(e.amount), 0) FROM accounts a "
        "LEFT JOIN entries e ON e.account_id = a.id GROUP BY a.number",
    )
    return {number: int(value) for number, value in rows}


async def unbalanced_journals(app: FastAPI) -> list[Any]:
    """Journals whose entries do not sum to zero per currency, or have fewer than two."""
    return await sql(
        app,
        "SELECT j.id FROM journals j LEFT JOIN entries e ON e.journal_id = j.id "
        "GROUP BY j.id HAVING count(e.id) < 2 OR coalesce(sum(e.amount), 0) <> 0",
    )


async def verify_books(app: FastAPI) -> LedgerReport:
    async with app.state.database.session() as db:
        return await reconciliation.verify_ledger(db)


async def denied_audits(app: FastAPI, action: str, entity_id: str) -> list[Any]:
    return await sql(
        app,
        "SELECT actor_id, outcome FROM audit_log WHERE action = :a AND entity_id = :e "
        "AND outcome = 'denied'",
        a=action,
        e=entity_id,
    )


async def set_customer_status(app: FastAPI, customer_id: str, status: str) -> None:
    await sql(app, "UPDATE customers SET status = :s WHERE id = :i", s=status, i=int(customer_id))


# --- a second app with other settings ---------------------------------------------------


@contextlib.asynccontextmanager
async def bank_with(tmp_path: Path, database_url: str, **overrides: Any) -> AsyncIterator[Bank]:
    """An app on the test's database built with other Settings values, and its client."""
    application = create_app(base_settings(tmp_path / "data", database_url, **overrides))
    transport = httpx.ASGITransport(app=application, client=("203.0.113.8", 50001))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Bank(client, application)
    finally:
        await application.state.database.dispose()


# --- a clock for the ledger -------------------------------------------------------------


@contextlib.contextmanager
def ledger_clock(monkeypatch: Any, at: datetime) -> Iterator[None]:
    """Post movements as if it were `at` (the ledger's clock only: journals and entries
    get this time, and the rolling daily limit looks back from it)."""
    assert at.tzinfo is not None

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return at if tz is None else at.astimezone(tz)

    with monkeypatch.context() as patch:
        # The store reads the clock: journals are stamped, and the window looked back on.
        for module in (store_accounts, store_journals):
            patch.setattr(module, "datetime", FrozenDatetime)
        yield
