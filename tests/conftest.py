"""Test harness: a fresh database per test, built by the real migrations.

SQLite (default): the migrated template file is copied for each test.
PostgreSQL (BANK_TEST_DATABASE_URL=postgresql+asyncpg://…/postgres): a template database
is migrated once per run; tests get `CREATE DATABASE … TEMPLATE` clones of it, each wiped
back to the template's contents after its test and handed to the next (see PgDatabases).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.cli import migrate_database
from app.db import Database
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
        "audit_signing_key": "test-audit-signing-key-" + "z" * 40,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "job_sweep_seconds": 0.2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type, call-arg]


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(_pg_dsn(make_url(PG_URL).database or "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


SCHEMA_FINGERPRINT = """
SELECT md5(string_agg(item, ',' ORDER BY item)) FROM (
  SELECT format('%s:%s:%s', c.relname, c.relkind, a.attname || a.atttypid || a.attnotnull)
    FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
    WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL SELECT format('%s:%s:%s', tgrelid, tgname, tgenabled)
    FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL SELECT format('%s:%s:%s', conrelid, conname, md5(conbin::text))
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
  UNION ALL SELECT format('%s:%s', proname, md5(prosrc))
    FROM pg_proc WHERE pronamespace = 'public'::regnamespace
) AS schema(item)
"""


class PgDatabases:
    """PostgreSQL test databases. Each is cloned from the migrated template; after a test
    it is wiped back to the template's exact contents (rows and sequences) and reused,
    because a clone and a drop each cost ~0.5 s of checkpoint fsyncs and a wipe a few ms.
    A database whose schema the test changed (a disabled trigger, say) is dropped instead,
    on a background thread."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.idle: list[str] = []
        self.fingerprint = ""
        self.tables: list[str] = []
        self.seed: dict[str, tuple[list[str], list[tuple[object, ...]]]] = {}
        self.sequences: list[tuple[str, int, int | None]] = []
        self.dropper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pg-drop")
        self.drops: list[Future[None]] = []

    async def snapshot(self) -> None:
        conn = await asyncpg.connect(_pg_dsn(self.template))
        try:
            self.fingerprint = await conn.fetchval(SCHEMA_FINGERPRINT)
            self.tables = [
                r[0]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                )
            ]
            for table in self.tables:
                columns = [
                    r[0]
                    for r in await conn.fetch(
                        "SELECT column_name FROM information_schema.columns WHERE "
                        "table_schema = 'public' AND table_name = $1 AND is_generated = 'NEVER' "
                        "ORDER BY ordinal_position",
                        table,
                    )
                ]
                column_list = ", ".join(f'"{c}"' for c in columns)
                rows = await conn.fetch(f'SELECT {column_list} FROM "{table}"')  # noqa: S608
                if rows:
                    self.seed[table] = (columns, [tuple(r) for r in rows])
            self.sequences = [
                (f'"{r[0]}"', r[1], r[2])
                for r in await conn.fetch(
                    "SELECT sequencename, start_value, last_value FROM pg_sequences "
                    "WHERE schemaname = 'public'"
                )
            ]
        finally:
            await conn.close()

    async def acquire(self) -> str:
        if self.idle:
            return self.idle.pop()
        name = f"bank_t_{RUN_ID}_{uuid.uuid4().hex[:10]}"
        await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    async def release(self, name: str) -> None:
        try:
            reusable = await self._wipe(name)
        except (asyncpg.PostgresError, OSError):
            reusable = False
        if reusable:
            self.idle.append(name)
        else:
            self.drop_later(name)

    async def _wipe(self, name: str) -> bool:
        conn = await asyncpg.connect(_pg_dsn(name))
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if await conn.fetchval(SCHEMA_FINGERPRINT) != self.fingerprint:
                return False
            async with conn.transaction():
                # Replica mode skips triggers and foreign keys: the append-only guards do
                # not fire and the tables can be emptied in any order.
                await conn.execute("SET LOCAL session_replication_role = replica")
                for table in self.tables:
                    await conn.execute(f'DELETE FROM "{table}"')  # noqa: S608
                for table, (columns, rows) in self.seed.items():
                    await conn.copy_records_to_table(table, records=rows, columns=columns)
                for sequence, start, last in self.sequences:
                    await conn.execute(
                        "SELECT setval($1::regclass, $2, $3)",
                        sequence,
                        last or start,
                        last is not None,
                    )
            return True
        finally:
            await conn.close()

    def drop_later(self, name: str) -> None:
        sql = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        self.drops.append(self.dropper.submit(asyncio.run, _pg_admin(sql)))

    def close(self) -> None:
        for name in self.idle:
            self.drop_later(name)
        self.idle.clear()
        for future in self.drops:
            future.result()
        self.dropper.shutdown()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite: path of a migrated template file. PostgreSQL: name of a template database."""
    if PG_URL is None:
        directory = tmp_path_factory.mktemp("template")
        migrate_database(base_settings(directory, None))
        yield str(directory / "bank.db")
        return
    name = f"bank_tpl_{RUN_ID}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    migrate_database(base_settings(tmp_path_factory.mktemp("template"), _pg_url(name)))
    yield name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_databases(template_db: str) -> Iterator[PgDatabases | None]:
    if PG_URL is None:
        yield None
        return
    pool = PgDatabases(template_db)
    asyncio.run(pool.snapshot())
    yield pool
    pool.close()


@pytest.fixture
async def database_url(
    template_db: str, pg_databases: PgDatabases | None, tmp_path: Path
) -> AsyncIterator[str]:
    """A database of the test's own, as the migrations left it."""
    if pg_databases is None:
        target = tmp_path / "data" / "bank.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template_db, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    name = await pg_databases.acquire()
    try:
        yield _pg_url(name)
    finally:
        await pg_databases.release(name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "settings(**overrides): build the test app with these Settings values"
    )
    config.addinivalue_line(
        "markers", "postgres_only: tests PostgreSQL's own machinery (skipped on SQLite)"
    )
    config.addinivalue_line("markers", "sqlite_only: tests SQLite's own machinery")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Engine-specific tests are skipped, visibly, on the other engine."""
    other = "sqlite_only" if PG_URL else "postgres_only"
    reason = (
        "SQLite only (this run is on PostgreSQL)"
        if PG_URL
        else "PostgreSQL only: set BANK_TEST_DATABASE_URL to run it"
    )
    for item in items:
        if item.get_closest_marker(other):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    """The test app's settings; `@pytest.mark.settings(upload_max_bytes=2048)` overrides."""
    marker = request.node.get_closest_marker("settings")
    overrides = marker.kwargs if marker else {}
    return base_settings(tmp_path / "data", database_url, **overrides)


@pytest.fixture
async def app(settings: Settings):  # type: ignore[no-untyped-def]
    application = create_app(settings)
    yield application
    await application.state.database.dispose()


@pytest.fixture
def database(app) -> Database:  # type: ignore[no-untyped-def]
    return app.state.database


@pytest.fixture
async def another_client(
    settings: Settings,
) -> AsyncIterator[Callable[[], Awaitable[httpx.AsyncClient]]]:
    """A factory of clients of *other* app instances on the same database (another
    process, as far as the database can tell)."""
    apps = []
    clients: list[httpx.AsyncClient] = []

    async def factory() -> httpx.AsyncClient:
        application = create_app(settings.model_copy())
        apps.append(application)
        transport = httpx.ASGITransport(app=application, client=("198.51.100.9", 40000))
        c = httpx.AsyncClient(transport=transport, base_url="http://test")
        clients.append(c)
        return c

    yield factory
    for c in clients:
        await c.aclose()
    for application in apps:
        await application.state.database.dispose()


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def bank(client: httpx.AsyncClient, app) -> Bank:  # type: ignore[no-untyped-def]
    return Bank(client, app)
