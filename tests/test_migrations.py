"""Migrations over data from before them (both engines): 0008 gives repayments their day
and principal, and settled installments their settled day, from what the rows already
say; and it goes down and up again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, bindparam, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.cli import MIGRATIONS
from app.models.base import UTCDateTime
from tests.conftest import PG_URL, RUN_ID, _pg_admin, _pg_url

ALLOCATION = [
    {"part": "fees", "amount": "25.00"},
    {"part": "principal_due", "amount": "788.52"},
    {"part": "future_principal", "amount": "100.01"},
]


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    if PG_URL is None:
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    name = f"bank_mig_{RUN_ID}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    yield _pg_url(name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _alembic(url: str, verb: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    getattr(command, verb)(config, revision)


def test_0008_backfills_the_loan_days_from_the_rows_before_it(database_url):
    _alembic(database_url, "upgrade", "0007")
    asyncio.run(_insert(database_url))
    _alembic(database_url, "upgrade", "head")
    repayments, installments = asyncio.run(_read(database_url))
    assert repayments == [(1, date(2026, 11, 30), 88_853)]  # 788.52 + 100.01, not the fee
    assert installments == [(1, date(2026, 11, 15)), (2, None)]
    _alembic(database_url, "downgrade", "0007")
    _alembic(database_url, "upgrade", "head")
    assert asyncio.run(_read(database_url))[0] == repayments


async def _insert(url: str) -> None:
    """A repayment and two installments as 0007 stored them (no loan: foreign keys are not
    checked here, as on a plain SQLite connection, or skipped on PostgreSQL)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if PG_URL is not None:
                await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(
                text(
                    "INSERT INTO loan_repayments (id, loan_id, journal_id, amount, allocation,"
                    " created_at) VALUES (1, 1, 1, 91353, :allocation, :at)"
                ).bindparams(  # stored as the app stores them
                    bindparam("allocation", type_=JSON()), bindparam("at", type_=UTCDateTime())
                ),
                {"allocation": ALLOCATION, "at": datetime(2026, 11, 30, 23, 30, tzinfo=UTC)},
            )
            await conn.execute(
                text(
                    "INSERT INTO loan_installments (loan_id, number, due_date, principal,"
                    " interest, balance, fee, paid_principal, paid_interest, paid_fee, settled)"
                    " VALUES (1, 1, :first, 1, 1, 1, 0, 1, 1, 0, :yes),"
                    " (1, 2, :second, 1, 1, 1, 0, 0, 0, 0, :no)"
                ),
                {
                    "first": date(2026, 11, 15),
                    "second": date(2026, 12, 15),
                    "yes": True,
                    "no": False,
                },
            )
    finally:
        await engine.dispose()


async def _read(url: str) -> tuple[list, list]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            repayments = (
                await conn.execute(
                    text("SELECT id, paid_on, principal FROM loan_repayments ORDER BY id")
                )
            ).all()
            installments = (
                await conn.execute(
                    text("SELECT number, settled_on FROM loan_installments ORDER BY number")
                )
            ).all()
    finally:
        await engine.dispose()
    return (
        [(i, _day(d), p) for i, d, p in repayments],
        [(n, _day(d)) for n, d in installments],
    )


def _day(value: object) -> date | None:
    if value is None or isinstance(value, date):
        return value  # type: ignore[return-value]
    return date.fromisoformat(str(value)[:10])
