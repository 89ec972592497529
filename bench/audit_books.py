"""The "audit" scenario of `make bench` (issue 21): GET /api/audit/balances?at= over books
of about 1,000,000 entries answers within 2 s.

- Books, built once and shared by the engines: bench.books (valid and audited, every
  journal through the one posting function) on SQLite: 2,000 customers with 2 accounts
  each (4,000 accounts, and the bank's cash account), their opening deposits, then
  transfers among them up to 1,000,000 entries, spread over the last 30 days. PostgreSQL
  gets a copy of every table (COPY, then VACUUM ANALYZE, as autovacuum would leave a
  loaded table): posting 500,000 journals one by one there takes about 15 minutes on
  two cores. Two fix-ups: each account's opened_at is moved back to its first entry
  (bench.books opens them now, after their backdated history, and the endpoint lists the
  accounts open at `at`); the seeded journals' fraud-scoring queue is emptied (and the
  server scores nothing): a backlog of 500,000 scores would share the CPU with the
  requests measured.
- The instants: near the start of the history (after 1 % of its entries: every account
  open, few transfers yet), its middle (sent with a +02:00 offset) and its last entry.
  What each account's balance was then is computed apart, from the template, as the sum
  of its entries by then (the endpoint reads each account's last entry instead).
- Latency: an auditor (made in process, as `bank create-user` does) asks for the first
  page (limit 500: the page and the trial balance over every account) at each instant,
  one request at a time from one client, one untimed warm-up then REQUESTS timed:
  wall-clock p50 and max per instant. The target: the slowest of them <= 2 s. For
  information: paging through every account with the cursor, per instant.
- Checks: every answer 200 and balanced (net 0.00 per currency); the pages' balances sum
  to the totals; every account open at `at` listed once, with the balance computed apart.
- Where the time goes (information): books_at called in process, each statement timed,
  and its plan (EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN (ANALYZE, BUFFERS)).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import statistics
import time
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from app.db import Database
from app.models import Base, Role
from app.security import Security
from app.services import reconciliation, staff
from app.services.audit import SYSTEM
from bench import books
from bench.server import Server

WORKERS = 1  # one request at a time: its wall-clock, not a queue
CUSTOMERS, ACCOUNTS_EACH = 2_000, 2
ENTRIES, QUICK_ENTRIES = 1_000_000, 100_000
REQUESTS = 5  # timed, per instant, after one untimed warm-up
LIMIT = 500
LIMIT_MS = 2000.0
CAP_S = 60.0  # an instant's timed requests stop here (at least one is sent)
AUDITOR = ("benchauditor", "bench-auditor-pass-1")
COPY_BATCH = 50_000
PROFILE_RUNS = 3

_templates: dict[Path, Template] = {}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _parse_stamp(text: str) -> datetime:
    """A SQLite UTCDateTime as stored (naive UTC text) -> an aware datetime."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _minor(text: str) -> int:
    return int(Decimal(text) * 100)


class Template:
    """The books, built once on SQLite (a Run of its own), with the instants measured
    and every account's balance at each, computed apart."""

    def __init__(self, workdir: Path, run_class: Any, quick: bool) -> None:
        self.run = run_class("sqlite", 0, None, workdir / "audit")
        self.entries_wanted = QUICK_ENTRIES if quick else ENTRIES
        self.quick = quick
        accounts = CUSTOMERS * ACCOUNTS_EACH
        self.transfers = self.entries_wanted // 2 - accounts  # plus one deposit per account
        self.info: dict[str, Any] = {}
        self.instants: list[dict[str, Any]] = []

    def build(self) -> None:
        print(
            f"\n== audit: building books of ~{self.entries_wanted:,} entries"
            f" ({CUSTOMERS * ACCOUNTS_EACH:,} accounts), load {_load()}",
            flush=True,
        )
        started = time.perf_counter()
        self.run.create()
        settings = self.run.settings
        done = {"journals": 0, "next": 50_000}

        def progress(n: int) -> None:
            done["journals"] += n
            if done["journals"] >= done["next"]:
                done["next"] += 50_000
                print(
                    f"  {done['journals']:,} journals ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )

        async def go() -> books.ScaleResult:
            database = Database(settings)
            try:
                async with database.session() as db:
                    return await books.build(
                        db,
                        settings,
                        Security(settings),
                        customers=CUSTOMERS,
                        accounts_per_customer=ACCOUNTS_EACH,
                        journals=self.transfers,
                        prefix="audit",
                        progress=progress,
                    )
            finally:
                await database.dispose()

        result = asyncio.run(go())
        built_s = time.perf_counter() - started
        path = self.run.data_dir / "bank.db"
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(
                "UPDATE accounts SET opened_at = (SELECT MIN(e.created_at) FROM entries e"
                " WHERE e.account_id = accounts.id)"
                " WHERE EXISTS (SELECT 1 FROM entries e WHERE e.account_id = accounts.id)"
            )
            conn.execute("DELETE FROM score_queue")
            conn.commit()
            entries = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            accounts = conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0]
            for name, share in (("start", 0.01), ("middle", 0.5), ("end", 1.0)):
                offset = min(entries - 1, int(share * entries))
                (stamp,) = conn.execute(
                    "SELECT created_at FROM entries ORDER BY id LIMIT 1 OFFSET ?", (offset,)
                ).fetchone()
                expected = dict(
                    conn.execute(
                        "SELECT a.number, COALESCE(SUM(e.amount), 0) FROM accounts a"
                        " LEFT JOIN entries e ON e.account_id = a.id AND e.created_at <= ?"
                        " WHERE a.opened_at <= ? GROUP BY a.id",
                        (stamp, stamp),
                    ).fetchall()
                )
                moment = _parse_stamp(stamp)
                if name == "middle":  # an offset other than UTC's
                    moment = moment.astimezone(timezone(timedelta(hours=2)))
                self.instants.append(
                    {
                        "name": name,
                        "at": moment,
                        "entries_by_then": offset + 1,
                        "expected": expected,
                    }
                )
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.info = {
            "customers": result.customers,
            "accounts": accounts,
            "journals": result.journals,
            "entries": entries,
            "audit_records": result.audit_records,
            "build_s": round(built_s, 1),
            "fixups_s": round(time.perf_counter() - started - built_s, 1),
            "load_after_build": _load(),
            "quick": self.quick,
        }
        print(
            f"  built: {entries:,} entries, {accounts:,} accounts in {built_s:.0f} s"
            f" (then {self.info['fixups_s']} s of fix-ups and expected balances)",
            flush=True,
        )


def template(workdir: Path, run_class: Any, quick: bool) -> Template:
    """The books for this run of the bench, built on the first call."""
    if workdir not in _templates:
        made = Template(workdir, run_class, quick)
        made.build()
        _templates[workdir] = made
    return _templates[workdir]


# --- PostgreSQL: a copy of every table -----------------------------------------------


def _converter(data_type: str) -> Any:
    if data_type.startswith("timestamp"):
        return _parse_stamp
    if data_type == "date":
        return date.fromisoformat
    if data_type == "boolean":
        return bool
    return None


async def _copy_to_postgres(source: Path, database_url: str) -> dict[str, int]:
    """Every table of the SQLite books into the (migrated, empty) PostgreSQL database,
    by COPY, with the sequences moved past the copied ids; then VACUUM ANALYZE."""
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    copied: dict[str, int] = {}
    try:
        with contextlib.closing(sqlite3.connect(source)) as lite:
            held = {
                row[0] for row in lite.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            # The rows come from valid books: no foreign-key or trigger checks per row
            # (the deferred journal_balanced trigger would query once per entry). A
            # role that may not skip them (not a superuser) copies with them, slower.
            with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
                await conn.execute("SET session_replication_role = replica")
            for table in (t.name for t in Base.metadata.sorted_tables):
                if table not in held:
                    continue
                types = {
                    r["column_name"]: r["data_type"]
                    for r in await conn.fetch(
                        "SELECT column_name, data_type FROM information_schema.columns"
                        " WHERE table_schema = 'public' AND table_name = $1",
                        table,
                    )
                }
                columns = [
                    row[1]
                    for row in lite.execute(f'PRAGMA table_info("{table}")')
                    if row[1] in types
                ]
                convert = [_converter(types[c]) for c in columns]
                listed = ", ".join(f'"{c}"' for c in columns)
                cursor = lite.execute(f'SELECT {listed} FROM "{table}"')
                count = 0
                while rows := cursor.fetchmany(COPY_BATCH):
                    if any(convert):
                        rows = [
                            tuple(
                                v if f is None or v is None else f(v)
                                for f, v in zip(convert, row, strict=True)
                            )
                            for row in rows
                        ]
                    await conn.copy_records_to_table(table, records=rows, columns=columns)
                    count += len(rows)
                copied[table] = count
                if "id" in columns:
                    sequence = await conn.fetchval("SELECT pg_get_serial_sequence($1, 'id')", table)
                    if sequence:
                        await conn.execute(
                            f"SELECT setval('{sequence}',"
                            f' (SELECT COALESCE(MAX(id), 0) + 1 FROM "{table}"), false)'
                        )
            await conn.execute("RESET session_replication_role")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return copied


# --- the measurement ------------------------------------------------------------------


async def _auditor(settings: Any) -> None:
    database = Database(settings)
    try:
        async with database.session() as db:
            await staff.create_staff(
                db,
                Security(settings),
                username=AUDITOR[0],
                email=f"{AUDITOR[0]}@bench.example",
                password=AUDITOR[1],
                role=Role.auditor,
                actor=SYSTEM,
            )
    finally:
        await database.dispose()


def _get(client: httpx.Client, headers: dict[str, str], params: dict[str, Any]) -> Any:
    sent = time.perf_counter()
    r = client.get("/api/audit/balances", headers=headers, params=params)
    elapsed_ms = (time.perf_counter() - sent) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"GET /api/audit/balances {params}: {r.status_code} {r.text[:500]}")
    return r.json(), elapsed_ms


def _problems(body: dict[str, Any]) -> list[str]:
    found = []
    if not body["balanced"]:
        found.append("balanced is false")
    for currency, t in body["totals"].items():
        if t["net"] != "0.00":
            found.append(f"{currency} net {t['net']}")
        if _minor(t["customer_balances"]) + _minor(t["internal_balances"]) != 0:
            found.append(f"{currency} customer + internal != 0")
    return found


def _measure_instant(
    client: httpx.Client, headers: dict[str, str], instant: dict[str, Any]
) -> dict[str, Any]:
    at = instant["at"].isoformat()
    first = {"at": at, "limit": LIMIT}
    body, warm_ms = _get(client, headers, first)  # untimed warm-up
    problems = _problems(body)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < REQUESTS and (not times or time.perf_counter() - started < CAP_S):
        body, ms = _get(client, headers, first)
        times.append(ms)
        problems += _problems(body)
    # Every account, cursor to cursor.
    seen: dict[str, int] = {}
    sums: dict[tuple[str, str], int] = {}
    pages, cursor = 0, None
    paging_started = time.perf_counter()
    while True:
        params: dict[str, Any] = {"at": at, "limit": LIMIT}
        if cursor:
            params["cursor"] = cursor
        page, _ = _get(client, headers, params)
        pages += 1
        problems += _problems(page)
        if page["totals"] != body["totals"]:
            problems.append(f"page {pages}: totals differ from the first page's")
        for account in page["accounts"]:
            if account["account_number"] in seen:
                problems.append(f"{account['account_number']} listed twice")
            value = _minor(account["balance"])
            seen[account["account_number"]] = value
            key = (account["currency"], account["kind"])
            sums[key] = sums.get(key, 0) + value
        cursor = page["next_cursor"]
        if not cursor:
            break
    paging_s = time.perf_counter() - paging_started
    expected = instant["expected"]
    wrong = [n for n in expected.keys() | seen.keys() if expected.get(n) != seen.get(n)]
    if wrong:
        problems.append(f"{len(wrong)} accounts' balances differ from their entries' sum")
    for currency, t in body["totals"].items():
        for kind, field in (("customer", "customer_balances"), ("internal", "internal_balances")):
            if sums.get((currency, kind), 0) != _minor(t[field]):
                problems.append(f"{currency} {kind}: the pages sum to other than the totals")
    return {
        "instant": instant["name"],
        "at": at,
        "entries_by_then": instant["entries_by_then"],
        "accounts_open": len(expected),
        "warmup_ms": round(warm_ms, 1),
        "first_page_ms": [round(t, 1) for t in times],
        "p50_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "paging": {
            "pages": pages,
            "accounts": len(seen),
            "total_s": round(paging_s, 2),
            "per_page_ms": round(paging_s / pages * 1000, 1),
        },
        "totals": body["totals"],
        "problems": problems[:20],
        "ok": not problems,
    }


async def _profile(settings: Any, at: datetime, is_sqlite: bool) -> dict[str, Any]:
    """books_at in process at `at`: the whole call and each statement (median of
    PROFILE_RUNS), and each SELECT's plan."""
    database = Database(settings)
    captured: list[tuple[str, Any, float]] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        started = conn.info["bench_started"].pop()
        captured.append((statement, parameters, (time.perf_counter() - started) * 1000))

    event.listen(database.engine.sync_engine, "before_cursor_execute", before)
    event.listen(database.engine.sync_engine, "after_cursor_execute", after)
    calls: list[float] = []
    runs: list[list[tuple[str, Any, float]]] = []
    try:
        for _ in range(PROFILE_RUNS):
            captured.clear()
            started = time.perf_counter()
            async with database.session() as db:
                await reconciliation.books_at(db, at=at, cursor=None, limit=LIMIT)
            calls.append((time.perf_counter() - started) * 1000)
            runs.append(list(captured))
        event.remove(database.engine.sync_engine, "before_cursor_execute", before)
        event.remove(database.engine.sync_engine, "after_cursor_execute", after)
        statements = []
        async with database.engine.connect() as conn:
            for n, (statement, parameters, _) in enumerate(runs[-1]):
                if not statement.lstrip().upper().startswith("SELECT"):
                    continue
                ms = statistics.median(run[n][2] for run in runs if len(run) > n)
                prefix = "EXPLAIN QUERY PLAN " if is_sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
                plan = (await conn.exec_driver_sql(prefix + statement, parameters)).all()
                lines = (
                    [" " * 2 * int(row[1] > 0) + str(row[-1]) for row in plan]
                    if is_sqlite
                    else [str(row[0]) for row in plan]
                )
                statements.append(
                    {
                        "what": "trial balance" if "GROUP BY" in statement else "page",
                        "sql": " ".join(statement.split()),
                        "median_ms": round(ms, 1),
                        "plan": lines,
                    }
                )
    finally:
        await database.dispose()
    return {"books_at_ms": [round(c, 1) for c in calls], "statements": statements}


def latency(engine: str, args: Any, workdir: Path, run_class: Any) -> dict[str, Any]:
    books_ = template(workdir, run_class, args.quick)
    run = run_class(engine, WORKERS, args.pg_url, workdir / "audit")
    label = f"{engine} {WORKERS}w audit"
    out: dict[str, Any] = {"workers": WORKERS, "books": books_.info, "load_before": _load()}
    print(f"\n== {label}: GET /api/audit/balances?at=, load {out['load_before']}", flush=True)
    started = time.perf_counter()
    try:
        if engine == "sqlite":
            run.create_from(books_.run)
        else:
            run.create()
            copied = asyncio.run(
                _copy_to_postgres(books_.run.data_dir / "bank.db", run.database_url)
            )
            out["copied_rows"] = sum(copied.values())
        out["prepare_s"] = round(time.perf_counter() - started, 1)
        print(f"  books ready in {out['prepare_s']} s", flush=True)
        asyncio.run(_auditor(run.settings))
        env = {**run.env, "BANK_FRAUD_SCORING": "false"}
        with (
            Server(env, WORKERS, run.data_dir / "server.log") as server,
            httpx.Client(base_url=server.base_url, timeout=300) as client,
        ):
            r = client.post(
                "/api/auth/token", data={"username": AUDITOR[0], "password": AUDITOR[1]}
            )
            r.raise_for_status()
            headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
            out["instants"] = []
            for instant in books_.instants:
                measured = _measure_instant(client, headers, instant)
                print(
                    f"  {instant['name']:>6} {measured['at']}: first page p50"
                    f" {measured['p50_ms']} ms, max {measured['max_ms']} ms"
                    f" ({len(measured['first_page_ms'])} requests); every account"
                    f" ({measured['paging']['pages']} pages) {measured['paging']['total_s']} s"
                    f"{'' if measured['ok'] else '; PROBLEMS: ' + '; '.join(measured['problems'])}",
                    flush=True,
                )
                out["instants"].append(measured)
        out["load_after"] = _load()
        out["profile"] = asyncio.run(
            _profile(run.settings, books_.instants[-1]["at"], engine == "sqlite")
        )
    finally:
        run.drop()
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    return out


def targets(audit: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, limit: str, ok: bool) -> None:
        out.append({"target": name, "value": value, "limit": limit, "pass": bool(ok)})

    for engine, t in audit.items():
        b = t["books"]
        size = f"{b['entries']:,} entries, {b['accounts']:,} accounts"
        size += ", quick" if b["quick"] else ""
        worst = max(i["max_ms"] for i in t["instants"])
        requests = sum(len(i["first_page_ms"]) for i in t["instants"])
        add(
            f"audit {engine} {t['workers']}w: GET /api/audit/balances?at= first page"
            f" (limit {LIMIT}) max ms, {requests} requests at {len(t['instants'])} instants"
            f" ({size})",
            round(worst),
            f"<= {LIMIT_MS:g}",
            worst <= LIMIT_MS,
        )
        fine = all(i["ok"] for i in t["instants"])
        add(
            f"audit {engine}: balanced (net 0.00), pages sum to the totals, every balance"
            " = its entries' sum",
            fine,
            "true",
            fine,
        )
    return out


def markdown(audit: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "| audit scenario: GET /api/audit/balances?at= | instant | entries by then "
        "| accounts open | first page p50 ms | max ms | requests | every account: pages "
        "| s | balanced |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, t in audit.items():
        for i in t["instants"]:
            lines.append(
                f"| {engine} {t['workers']}w | {i['instant']} ({i['at']}) "
                f"| {i['entries_by_then']:,} | {i['accounts_open']:,} | {i['p50_ms']:.1f} "
                f"| {i['max_ms']:.1f} | {len(i['first_page_ms'])} | {i['paging']['pages']} "
                f"| {i['paging']['total_s']} | {'yes' if i['ok'] else 'NO'} |"
            )
    for engine, t in audit.items():
        b = t["books"]
        statements = ", ".join(
            f"{s['what']} {s['median_ms']} ms" for s in t["profile"]["statements"]
        )
        lines.append(
            f"\n{engine}: books of {b['entries']:,} entries, {b['accounts']:,} accounts"
            f" (built once on SQLite in {b['build_s']} s); ready in {t['prepare_s']} s; load"
            f" {t['load_before']} -> {t['load_after']} (1 min, {os.cpu_count()} CPUs);"
            f" books_at in process at the end {t['profile']['books_at_ms']} ms (of which,"
            f" median: {statements})"
        )
    return lines
