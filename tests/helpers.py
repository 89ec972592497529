"""Test helpers that drive the API the way a client would."""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, text

from app.db import Database
from app.models import AuditRecord, Customer, Role
from app.schemas.customer import RegistrationForm
from app.services import customers, staff
from app.services.audit import SYSTEM
from app.services.customers import Registration
from app.services.documents import Upload

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
    b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01"
    b"\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64 + b"\xff\xd9"

_counter = itertools.count(1)


def registration_form(**overrides: Any) -> dict[str, str]:
    n = next(_counter)
    form = {
        "username": f"user{n}",
        "email": f"user{n}@example.com",
        "password": "correct-horse-battery",
        "full_name": f"Test Person {n}",
        "date_of_birth": "1990-05-17",
        "phone": "+14155550123",
        "address": "10 Downing Street, London",
        "national_id": f"NID{n:08d}",
    }
    form.update({k: v for k, v in overrides.items() if v is not None})
    return form


def document_files(**overrides: Any) -> dict[str, tuple[str, bytes, str]]:
    files = {
        "id_document": ("passport.png", PNG, "image/png"),
        "address_proof": ("bill.pdf", PDF, "application/pdf"),
    }
    files.update(overrides)
    return {k: v for k, v in files.items() if v is not None}


class Bank:
    """A client of the API plus a few shortcuts through the service layer."""

    def __init__(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        self.client = client
        self.app = app

    async def register(self, files: Any = None, **fields: Any) -> httpx.Response:
        form = registration_form(**fields)
        return await self.client.post(
            "/api/customers/register", data=form, files=files or document_files()
        )

    async def login(self, username: str, password: str) -> httpx.Response:
        return await self.client.post(
            "/api/auth/token", data={"username": username, "password": password}
        )

    async def token(self, username: str, password: str) -> dict[str, Any]:
        response = await self.login(username, password)
        assert response.status_code == 200, response.text
        return response.json()

    async def headers(self, username: str, password: str) -> dict[str, str]:
        tokens = await self.token(username, password)
        return {"Authorization": f"Bearer {tokens['access_token']}"}

    async def customer(self, **fields: Any) -> tuple[dict[str, Any], dict[str, str]]:
        """Register a customer (KYC runs right after the response) and log them in."""
        form = registration_form(**fields)
        response = await self.client.post(
            "/api/customers/register", data=form, files=document_files()
        )
        assert response.status_code == 201, response.text
        headers = await self.headers(form["username"], form["password"])
        return response.json(), headers

    async def staff(self, role: str = "admin") -> dict[str, str]:
        username, password = await self.staff_user(role)
        return await self.headers(username, password)

    async def staff_user(self, role: str = "admin") -> tuple[str, str]:
        """Create a staff user through the service; return (username, password)."""
        n = next(_counter)
        username, password = f"{role}{n}", f"staff-password-{n}-ok"
        async with self.app.state.database.session() as db:
            await staff.create_staff(
                db,
                self.app.state.security,
                username=username,
                email=f"{username}@bank.example",
                password=password,
                role=Role(role),
                actor=SYSTEM,
            )
        return username, password


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem response and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def error_fields(response: httpx.Response) -> set[str]:
    return {item["field"] for item in response.json().get("errors", [])}


async def count(database: Database, model: Any, *where: Any) -> int:
    async with database.session() as db:
        return await db.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def audit_records(database: Database, action: str | None = None) -> list[AuditRecord]:
    async with database.session() as db:
        query = select(AuditRecord).order_by(AuditRecord.seq)
        if action is not None:
            query = query.where(AuditRecord.action == action)
        return list((await db.scalars(query)).all())


async def customer_row(database: Database, customer_id: int | str) -> Customer:
    async with database.session() as db:
        customer = await db.get(Customer, int(customer_id))
        assert customer is not None
        return customer


async def execute(database: Database, sql: str, **params: Any) -> None:
    """Run raw SQL in its own committed transaction, behind the app's back."""
    async with database.engine.begin() as conn:
        await conn.execute(text(sql), params)


async def tamper_audit(database: Database, seq: int, sql_set: str) -> None:
    """Alter an audit record the way an intruder with table access would: switch off
    the append-only trigger, then UPDATE."""
    async with database.engine.begin() as conn:
        if database.is_sqlite:
            await conn.execute(text("DROP TRIGGER audit_log_no_update"))
        else:
            await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change"))
        update = f"UPDATE audit_log SET {sql_set} WHERE seq = :seq"  # noqa: S608 (test-only SQL)
        await conn.execute(text(update), {"seq": seq})


def stored_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


async def register_without_kyc(app: FastAPI, **fields: Any) -> Registration:
    """Register through the service, as a crash right after the commit would leave it:
    the KYC job is queued and nobody has run it."""
    form = RegistrationForm.model_validate(registration_form(**fields))
    uploads = [
        Upload("id_document", io.BytesIO(PNG), len(PNG)),
        Upload("address_proof", io.BytesIO(PDF), len(PDF)),
    ]
    database = app.state.database
    async with database.session() as db:
        return await customers.register(
            db, app.state.security, app.state.settings, form=form, uploads=uploads
        )


async def wait_for(predicate: Any, within: float = 2.0) -> float:
    """Await `predicate()` until it is true; return the seconds it took."""
    started = time.monotonic()
    while not await predicate():
        elapsed = time.monotonic() - started
        assert elapsed < within, f"condition not met within {within} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def widen_uniqueness_races(monkeypatch: Any, database: Database, pause: float = 0.15) -> None:
    """Make every username/email uniqueness check linger before its writer goes on, so
    concurrent writers all pass the check before any of them commits and the database's
    unique index has to decide. (SQLite writers run one at a time, so there is no race
    to widen there.)"""
    if database.is_sqlite:
        return
    original = customers.check_unique

    async def lingering(*args: Any, **kwargs: Any) -> None:
        await original(*args, **kwargs)
        await asyncio.sleep(pause)

    monkeypatch.setattr(customers, "check_unique", lingering)
    monkeypatch.setattr(staff, "check_unique", lingering)
