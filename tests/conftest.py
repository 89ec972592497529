"""Test harness: a fresh database per test, built by the real migrations.

SQLite (default): the migrated template file is copied for each test.
PostgreSQL (BANK_TEST_DATABASE_URL=postgresql+asyncpg://…/postgres): a template database
is migrated once per run and each test gets `CREATE DATABASE … TEMPLATE` of it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.cli import migrate_database
from app.main import create_app
from app.settings import Settings
from tests.helpers import Bank

PG_URL = os.environ.get("BANK_TEST_DATABASE_URL")
RUN_ID = uuid.uuid4().hex[:8]


def _pg_dsn(database: str) -> str:
    url = make_url(PG_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def _pg_url(database: str) -> str:
    return make_url(PG_URL).set(database=database).render_as_string(hide_password=False)


def base_settings(data_dir: Path, database_url: str | None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "data_dir": data_dir,
        "database_url": database_url,
        "jwt_secret": "test-jwt-secret-" + "x" * 40,
        "pii_secret": "test-pii-secret-" + "y" * 40,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "job_sweep_seconds": 0.2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type, call-arg]


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite: path of a migrated template file. PostgreSQL: name of a template database."""
    if PG_URL is None:
        directory = tmp_path_factory.mktemp("template")
        migrate_database(base_settings(directory, None))
        yield str(directory / "bank.db")
        return
    import asyncio

    name = f"bank_tpl_{RUN_ID}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(_pg_dsn(make_url(PG_URL).database or "postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    migrate_database(base_settings(tmp_path_factory.mktemp("template"), _pg_url(name)))
    yield name
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(template_db: str, tmp_path: Path) -> AsyncIterator[str]:
    if PG_URL is None:
        target = tmp_path / "data" / "bank.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template_db, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    name = f"bank_t_{RUN_ID}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(_pg_dsn(make_url(PG_URL).database or "postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        yield _pg_url(name)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return base_settings(tmp_path / "data", database_url)


@pytest.fixture
async def app(settings: Settings):  # type: ignore[no-untyped-def]
    application = create_app(settings)
    yield application
    await application.state.database.dispose()


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def bank(client: httpx.AsyncClient, app) -> Bank:  # type: ignore[no-untyped-def]
    return Bank(client, app)
