"""PostgreSQL's own ceiling on this machine: pgbench's built-in TPC-B-like script (three
UPDATEs, a SELECT and an INSERT per transaction, a bank transfer's shape) on a scratch
database, at the benchmark's client counts, no HTTP and no Python in between."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid

from sqlalchemy.engine import make_url

# pgbench opens one connection per client; PostgreSQL's default max_connections is 100.
MAX_CLIENTS = 90


def _pg_env(pg_url: str) -> tuple[list[str], dict[str, str]]:
    url = make_url(pg_url)
    args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or ""]
    env = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}
    return args, env


def measure(pg_url: str, clients: list[int], seconds: float = 8.0) -> dict[int, float]:
    """TPC-B-like transactions per second at each client count (up to MAX_CLIENTS), on a
    scratch database scaled so that clients rarely wait for one another's branch row."""
    if shutil.which("pgbench") is None:
        return {}
    connect, env = _pg_env(pg_url)
    admin = make_url(pg_url).database or "postgres"
    scratch = f"bank_pgbench_{uuid.uuid4().hex[:8]}"
    scale = max(min(max(clients), MAX_CLIENTS), 1)

    def psql(sql: str) -> None:
        subprocess.run(
            ["psql", *connect, "-d", admin, "-q", "-c", sql], env=env, check=True, timeout=120
        )

    psql(f'CREATE DATABASE "{scratch}"')
    try:
        subprocess.run(
            ["pgbench", *connect, "-i", "-q", "-s", str(scale), scratch],
            env=env,
            check=True,
            capture_output=True,
            timeout=600,
        )
        found: dict[int, float] = {}
        for count in clients:
            if count > MAX_CLIENTS:
                continue
            options = ["-n", "-c", str(count), "-j", str(min(count, 2)), "-T", str(int(seconds))]
            done = subprocess.run(
                ["pgbench", *connect, *options, scratch],
                env=env,
                check=True,
                capture_output=True,
                text=True,
                timeout=seconds + 120,
            )
            tps = re.search(r"tps = ([0-9.]+)", done.stdout)
            if tps:
                found[count] = round(float(tps.group(1)), 1)
        return found
    finally:
        psql(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
