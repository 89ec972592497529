"""A fresh `bank serve` for one check: a temporary data directory (and a temporary
PostgreSQL database when asked), the demo users, a free loopback port; removed afterwards."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.server import BANK, ROOT, Server

DEMO = {
    "admin": ("admin", "demo-admin-pass-1"),
    "auditor": ("auditor", "demo-auditor-pass-1"),
    "customer": ("demo", "demo-customer-pass-1"),
}


@contextmanager
def temporary_postgres(url: str) -> Iterator[str]:
    """A new, empty database on the server of `url` (postgresql+asyncpg://…/db), dropped
    afterwards; yields its URL."""
    import asyncio

    import asyncpg

    base, _, _db = url.rpartition("/")
    name = f"bank_check_{secrets.token_hex(4)}"
    plain = base.replace("postgresql+asyncpg://", "postgresql://")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(f"{plain}/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def fresh_environment(database_url: str | None = None) -> Iterator[dict[str, str]]:
    """Environment variables for a server with its own data directory (and database)."""
    with tempfile.TemporaryDirectory(prefix="bank-check-") as tmp:
        env = {"BANK_DATA_DIR": tmp, "BANK_ENV": "development"}
        if database_url is None:
            yield env
            return
        with temporary_postgres(database_url) as url:
            yield {**env, "BANK_DATABASE_URL": url}


def run_step(
    command: list[str | Path],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 600,
) -> str:
    """Run one step of a check; on failure print the end of its output and stop the
    check (exit non-zero). Returns what it printed."""
    shown = " ".join(map(str, command))
    started = time.perf_counter()
    done = subprocess.run(
        [str(part) for part in command],
        input=stdin,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
        raise SystemExit(f"failed ({done.returncode}): {shown}")
    print(f"  ok in {time.perf_counter() - started:5.1f} s: {shown}")
    return done.stdout


def add_demo_users(env: dict[str, str]) -> None:
    subprocess.run(
        [BANK, "demo"],
        env={**os.environ, **env},
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


@contextmanager
def fresh_server(
    *, workers: int = 1, database_url: str | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A running server on an empty database with the demo users; stopped afterwards."""
    with fresh_environment(database_url) as env:
        env = {**env, **(extra_env or {})}
        add_demo_users(env)
        log = Path(env["BANK_DATA_DIR"]) / "server.log"
        try:
            with Server(env, workers, log) as server:
                yield server
        except BaseException:
            if log.exists():
                print(log.read_text()[-4000:])
            raise
