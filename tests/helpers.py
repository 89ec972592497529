"""Test helpers that drive the API the way a client would."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from fastapi import FastAPI

from app.models import Role
from app.services import staff
from app.services.audit import SYSTEM

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
        return await self.headers(username, password)
