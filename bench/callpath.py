"""The transfer's call path, as a newcomer reading it would follow it: every call into
the app's own code from the service entry (app.services.ledger.transfer) until the
movement's first SQL statement goes to the driver, and until the service returns, in
order. Prints the calls, the modules visited, the stays (runs of calls in one module),
the deepest call level, and the stays in the services and the store alone (the storage
machinery, settings and money left out).

    python -m bench.callpath                                     # SQLite
    BANK_TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        python -m bench.callpath                                 # PostgreSQL (scratch db)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

DOMAIN = ("app.services", "app.store")  # the layers a reader follows for the rules
ROOT = str(Path(__file__).resolve().parent.parent / "app")
# The driver's statement calls: once one is entered, the movement's first SQL goes.
STATEMENT_CALLS = {"one", "all", "write", "fetch", "fetchrow", "execute"}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from app.cli import migrate_database
    from tests.conftest import base_settings

    admin_url = os.environ.get("BANK_TEST_DATABASE_URL")
    scratch = f"bank_callpath_{uuid.uuid4().hex[:8]}"
    url = admin_url.rsplit("/", 1)[0] + f"/{scratch}" if admin_url else None
    if admin_url:
        _pg_admin(admin_url, f'CREATE DATABASE "{scratch}"')
    try:
        settings = base_settings(Path(tempfile.mkdtemp()), url)
        migrate_database(settings)
        asyncio.run(_trace(settings))
    finally:
        if admin_url:
            _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def _pg_admin(admin_url: str, sql: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


async def _trace(settings: Any) -> None:
    from app.main import create_app
    from tests.helpers import Bank
    from tests.ledger_helpers import funded_account

    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    calls: list[tuple[int, str, str]] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        bank = Bank(client, app)
        _, headers, source = await funded_account(bank, "100.00")
        _, _, target = await funded_account(bank, "0.00")
        state = {"on": False, "done": False, "first_sql": 0}
        seen: set[object] = set()

        def depth(frame: Any) -> int:  # app frames on the stack
            n = 0
            while frame is not None:
                n += frame.f_code.co_filename.startswith(ROOT)
                frame = frame.f_back
            return n

        def profile(frame: Any, event: str, _arg: Any) -> None:
            path = frame.f_code.co_filename
            if state["done"] or event != "call" or not path.startswith(ROOT):
                return
            if frame in seen:  # a coroutine resumed after an await, not a new call
                return
            seen.add(frame)
            name = frame.f_code.co_name
            if name.startswith("<"):  # a comprehension's or a lambda's own scope
                return
            if not state["on"]:
                if name != "transfer" or not path.endswith("services/ledger.py"):
                    return
                state["on"] = True
            module = "app." + path[len(ROOT) + 1 :].removesuffix(".py").replace("/", ".")
            calls.append((depth(frame), module, name))
            if not state["first_sql"] and module.startswith("app.db") and name in STATEMENT_CALLS:
                state["first_sql"] = len(calls)

        from app.services import ledger

        service = ledger.transfer

        async def transfer(*args: Any, **kwargs: Any) -> Any:
            try:
                return await service(*args, **kwargs)
            finally:
                state["done"] = True

        ledger.transfer = transfer  # type: ignore[assignment]
        sys.setprofile(profile)
        try:
            response = await client.post(
                "/api/transactions/transfer",
                headers={**headers, "Idempotency-Key": "call-path-1"},
                json={"from_account": source, "to_account": target, "amount": "1.00"},
            )
        finally:
            sys.setprofile(None)
            ledger.transfer = service  # type: ignore[assignment]
        assert response.status_code == 201, response.text
    await app.state.database.dispose()
    _report("to the first SQL statement", calls[: int(state["first_sql"])])
    _report("the whole movement (until the service returns)", calls)


def _report(title: str, calls: list[tuple[int, str, str]]) -> None:
    base = calls[0][0] - 1
    stays: list[str] = []
    for _, module, _ in calls:
        if not stays or stays[-1] != module:
            stays.append(module)
    print(f"== {title}")
    for level, module, name in calls:
        print(f"{'  ' * max(0, level - base - 1)}{module}.{name}")
    deepest = max(level for level, _, _ in calls) - base
    print(
        f"calls: {len(calls)}; modules visited: {len(set(stays))}; stays: {len(stays)};"
        f" deepest call level: {deepest}"
    )
    print(" -> ".join(stays))
    domain: list[str] = []
    for module in stays:
        if module.startswith(DOMAIN) and (not domain or domain[-1] != module):
            domain.append(module)
    print(f"stays in services and store only ({len(domain)}): " + " -> ".join(domain))
    print()


if __name__ == "__main__":
    main()
