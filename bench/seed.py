"""Seed the benchmark's books through the service layer (no HTTP): customers that pass
KYC, accounts, and opening deposits, each through the same ledger functions the API uses."""

from __future__ import annotations

import io
from dataclasses import dataclass

from sqlalchemy import func, select

from app.db import Database
from app.models import Account, AccountKind
from app.schemas.customer import RegistrationForm
from app.security import Principal, Security
from app.services import accounts, customers, jobs, ledger
from app.services.documents import Upload
from app.settings import Settings

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
    b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01"
    b"\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)
PASSWORD = "bench-password-1"


@dataclass
class SeededCustomer:
    username: str
    password: str
    account_numbers: list[str]


async def seed_customers(
    settings: Settings, *, count: int, accounts_each: int, opening_minor: int, prefix: str = "bench"
) -> list[SeededCustomer]:
    database = Database(settings)
    security = Security(settings)
    seeded: list[SeededCustomer] = []
    try:
        async with database.session() as db:
            for index in range(count):
                form = RegistrationForm.model_validate(
                    {
                        "username": f"{prefix}{index}",
                        "email": f"{prefix}{index}@bench.example",
                        "password": PASSWORD,
                        "full_name": f"Bench Customer {index}",
                        "date_of_birth": "1985-01-01",
                        "phone": "+14155550100",
                        "address": "1 Benchmark Way",
                        "national_id": f"BN{prefix}{index:06d}",
                    }
                )
                uploads = [
                    Upload(kind, io.BytesIO(PNG), len(PNG))
                    for kind in ("id_document", "address_proof")
                ]
                reg = await customers.register(db, security, settings, form=form, uploads=uploads)
                await jobs.run_job(database, reg.job_id)
                principal = Principal(reg.user.id, "customer", reg.customer.id, reg.user.username)
                numbers = []
                for _ in range(accounts_each):
                    account = await accounts.open_account(
                        db, principal=principal, type="checking", currency=settings.currency
                    )
                    await ledger.deposit(
                        database,
                        principal=principal,
                        account_number=account.number,
                        amount=opening_minor,
                        description="opening deposit",
                        idempotency_key=None,
                    )
                    numbers.append(account.number)
                seeded.append(SeededCustomer(reg.user.username, PASSWORD, numbers))
    finally:
        await database.dispose()
    return seeded


async def customer_total(settings: Settings) -> int:
    database = Database(settings)
    try:
        async with database.session() as db:
            total = await db.scalar(
                select(func.coalesce(func.sum(Account.balance), 0)).where(
                    Account.kind == AccountKind.customer
                )
            )
            negative = await db.scalar(
                select(func.count())
                .select_from(Account)
                .where(Account.balance < 0, Account.kind == "customer")
            )
            assert negative == 0, f"{negative} customer accounts are negative"
            return int(total or 0)
    finally:
        await database.dispose()
