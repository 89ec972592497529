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

The compliance report on the same books (issue 21: "the summary report for a month of
1 M entries <= 5 s"): GET /api/audit/reports/summary?from=&to= over the whole history
(the first journal's UTC day to the last's, both inclusive: every journal), by the same
auditor, one untimed warm-up then REPORTS timed JSON requests (p50 and max; the target:
the slowest <= 5 s), then format=csv and format=pdf once each (information). Checks: its
transactions (type, status, count, sum) equal a GROUP BY over the journals table made
by the bench on the engine's own database (the same bounds; timed too: the floor under
the report), and its large movements are the first 1,000 deposits, withdrawals and
transfers of 10,000.00 or more by id (the opening deposits of 100,000.00). Where the
time goes (information): reports.summary called in process, each statement timed, and
the slowest SELECTs' plans.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import re
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from app.db import Database
from app.models import Base, Role
from app.schemas.common import day_start
from app.security import Security
from app.services import reconciliation, reports, staff
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
REPORTS = 5  # timed JSON reports, after one untimed warm-up
REPORT_LIMIT_MS = 5000.0
REPORT_CAP_S = 120.0  # the timed reports stop here (at least one is sent)
PLANS_SHOWN = 2  # the report's slowest SELECTs whose plans are kept

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
        self.period: tuple[date, date] = (date.min, date.min)

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
            first, last = conn.execute(
                "SELECT MIN(created_at), MAX(created_at) FROM journals"
            ).fetchone()
            self.period = (_parse_stamp(first).date(), _parse_stamp(last).date())
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


async def _statement_runs(
    database: Database, call: Callable[[Any], Awaitable[Any]]
) -> tuple[list[float], list[list[tuple[str, Any, float]]]]:
    """`call(db)` PROFILE_RUNS times in process: each run's wall time (ms) and the
    statements it sent, each with its parameters and time (ms)."""
    captured: list[tuple[str, Any, float]] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        started = conn.info["bench_started"].pop()
        captured.append((statement, parameters, (time.perf_counter() - started) * 1000))

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    calls: list[float] = []
    runs: list[list[tuple[str, Any, float]]] = []
    try:
        for _ in range(PROFILE_RUNS):
            captured.clear()
            started = time.perf_counter()
            async with database.session() as db:
                await call(db)
            calls.append((time.perf_counter() - started) * 1000)
            runs.append(list(captured))
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    return calls, runs


def _selects(runs: list[list[tuple[str, Any, float]]]) -> list[tuple[int, str, Any, float]]:
    """The last run's SELECTs (position, text, parameters) with their median time."""
    return [
        (n, statement, parameters, statistics.median(run[n][2] for run in runs if len(run) > n))
        for n, (statement, parameters, _) in enumerate(runs[-1])
        if statement.lstrip().upper().startswith("SELECT")
    ]


async def _plan(conn: Any, statement: str, parameters: Any, is_sqlite: bool) -> list[str]:
    prefix = "EXPLAIN QUERY PLAN " if is_sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
    plan = (await conn.exec_driver_sql(prefix + statement, parameters)).all()
    if is_sqlite:
        return [" " * 2 * int(row[1] > 0) + str(row[-1]) for row in plan]
    return [str(row[0]) for row in plan]


async def _profile(settings: Any, at: datetime, is_sqlite: bool) -> dict[str, Any]:
    """books_at in process at `at`: the whole call and each statement (median of
    PROFILE_RUNS), and each SELECT's plan."""
    database = Database(settings)
    try:
        calls, runs = await _statement_runs(
            database, lambda db: reconciliation.books_at(db, at=at, cursor=None, limit=LIMIT)
        )
        statements = []
        async with database.engine.connect() as conn:
            for _, statement, parameters, ms in _selects(runs):
                statements.append(
                    {
                        "what": "trial balance" if "GROUP BY" in statement else "page",
                        "sql": " ".join(statement.split()),
                        "median_ms": round(ms, 1),
                        "plan": await _plan(conn, statement, parameters, is_sqlite),
                    }
                )
    finally:
        await database.dispose()
    return {"books_at_ms": [round(c, 1) for c in calls], "statements": statements}


# --- the compliance report ------------------------------------------------------------

GROUPS_SQL = (
    "SELECT kind, status, COUNT(*), SUM(amount) FROM journals"
    " WHERE created_at >= {0} AND created_at < {1} GROUP BY kind, status ORDER BY kind, status"
)
LARGE_SQL = (
    "SELECT id FROM journals WHERE created_at >= {0} AND created_at < {1}"
    " AND kind IN ({kinds}) AND amount >= {threshold} ORDER BY id"
)


def _bounds(period: tuple[date, date]) -> tuple[datetime, datetime]:
    """The report's own bounds: the first day's start to the day after the last's."""
    start, end = day_start(period[0]), day_start(period[1], next_day=True)
    assert start is not None and end is not None
    return start, end


def _sqlite_stamp(moment: datetime) -> str:
    """An instant as SQLite stores a UTCDateTime (naive UTC text), for comparing."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


async def _pg_apart(database_url: str, start: datetime, end: datetime, large_sql: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        runs = []
        for _ in range(PROFILE_RUNS):
            started = time.perf_counter()
            groups = await conn.fetch(GROUPS_SQL.format("$1", "$2"), start, end)
            runs.append((time.perf_counter() - started) * 1000)
        large = [r[0] for r in await conn.fetch(large_sql.format("$1", "$2"), start, end)]
        total = await conn.fetchval("SELECT COUNT(*) FROM journals")
    finally:
        await conn.close()
    return [tuple(r) for r in groups], runs, large, total


def _journals_apart(engine: str, run: Any, period: tuple[date, date]) -> dict[str, Any]:
    """What the report must say of the period's journals, read by the bench itself from
    the engine's own database: GROUP BY kind, status (timed: median of PROFILE_RUNS) and
    the large movements' ids."""
    start, end = _bounds(period)
    large_sql = LARGE_SQL.replace(
        "{kinds}", ", ".join(f"'{kind.value}'" for kind in reports.MOVEMENTS)
    ).replace("{threshold}", str(reports.CASH_REPORTING_MINOR))
    if engine == "sqlite":
        with contextlib.closing(sqlite3.connect(run.data_dir / "bank.db")) as conn:
            bounds = (_sqlite_stamp(start), _sqlite_stamp(end))
            runs = []
            for _ in range(PROFILE_RUNS):
                started = time.perf_counter()
                groups = conn.execute(GROUPS_SQL.format("?", "?"), bounds).fetchall()
                runs.append((time.perf_counter() - started) * 1000)
            large = [r[0] for r in conn.execute(large_sql.format("?", "?"), bounds)]
            (total,) = conn.execute("SELECT COUNT(*) FROM journals").fetchone()
    else:
        groups, runs, large, total = asyncio.run(_pg_apart(run.database_url, start, end, large_sql))
    return {
        "transactions": [
            {"type": kind, "status": status, "count": n, "sum_minor": int(amount or 0)}
            for kind, status, n, amount in groups
        ],
        "journals_in_period": sum(n for _, _, n, _ in groups),
        "journals_total": total,
        "group_by_ms": round(statistics.median(runs), 1),
        "large_movements": len(large),
        "large_ids": [str(i) for i in large[: reports.LARGE_MOVEMENTS_SHOWN]],
    }


def _get_report(
    client: httpx.Client, headers: dict[str, str], period: tuple[date, date], format: str
) -> tuple[httpx.Response, float]:
    params = {"from": period[0].isoformat(), "to": period[1].isoformat(), "format": format}
    sent = time.perf_counter()
    r = client.get("/api/audit/reports/summary", headers=headers, params=params)
    elapsed_ms = (time.perf_counter() - sent) * 1000
    if r.status_code != 200:
        raise RuntimeError(
            f"GET /api/audit/reports/summary {params}: {r.status_code} {r.text[:500]}"
        )
    return r, elapsed_ms


def _report_problems(
    body: dict[str, Any], period: tuple[date, date], apart: dict[str, Any]
) -> list[str]:
    found = []
    if (body["from"], body["to"]) != (period[0].isoformat(), period[1].isoformat()):
        found.append(f"period {body['from']}..{body['to']}")
    said = [
        {
            "type": t["type"],
            "status": t["status"],
            "count": t["count"],
            "sum_minor": _minor(t["sum"]),
        }
        for t in body["transactions"]
    ]
    if said != apart["transactions"]:
        found.append(f"transactions {said} != the journals' GROUP BY {apart['transactions']}")
    ids = [m["transaction_id"] for m in body["large_movements"]]
    if ids != apart["large_ids"]:
        found.append(
            f"large movements: {len(ids)} listed, not the first {len(apart['large_ids'])}"
            f" of {apart['large_movements']} journals >= 10,000.00 by id"
        )
    if any(_minor(m["amount"]) < reports.CASH_REPORTING_MINOR for m in body["large_movements"]):
        found.append("a large movement under 10,000.00")
    return found


def _csv_problems(text: str, apart: dict[str, Any]) -> list[str]:
    rows = list(csv.DictReader(io.StringIO(text)))
    said = [
        {
            "type": r["key"],
            "status": r["detail"],
            "count": int(r["count"]),
            "sum_minor": _minor(r["amount"]),
        }
        for r in rows
        if r["section"] == "transactions"
    ]
    if said != apart["transactions"]:
        return [f"csv: transactions {said} != the journals' GROUP BY"]
    return []


def _measure_report(
    client: httpx.Client,
    headers: dict[str, str],
    period: tuple[date, date],
    apart: dict[str, Any],
) -> dict[str, Any]:
    r, warm_ms = _get_report(client, headers, period, "json")  # untimed warm-up
    problems = _report_problems(r.json(), period, apart)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < REPORTS and (not times or time.perf_counter() - started < REPORT_CAP_S):
        r, ms = _get_report(client, headers, period, "json")
        times.append(ms)
        problems += _report_problems(r.json(), period, apart)
    json_bytes = len(r.content)
    if apart["journals_in_period"] != apart["journals_total"]:
        problems.append(
            f"{apart['journals_in_period']:,} of {apart['journals_total']:,} journals in the period"
        )
    formats: dict[str, Any] = {}
    for format, media in (("csv", "text/csv"), ("pdf", "application/pdf")):
        got, ms = _get_report(client, headers, period, format)
        formats[format] = {"ms": round(ms, 1), "bytes": len(got.content)}
        if not got.headers.get("content-type", "").startswith(media):
            problems.append(f"{format}: content-type {got.headers.get('content-type')}")
        if format == "csv":
            problems += _csv_problems(got.text, apart)
        elif not got.content.startswith(b"%PDF"):
            problems.append("pdf: not a PDF")
    return {
        "from": period[0].isoformat(),
        "to": period[1].isoformat(),
        "days": (period[1] - period[0]).days + 1,
        "journals_in_period": apart["journals_in_period"],
        "journals_total": apart["journals_total"],
        "large_movements": apart["large_movements"],
        "group_by_ms": apart["group_by_ms"],
        "warmup_ms": round(warm_ms, 1),
        "json_ms": [round(t, 1) for t in times],
        "p50_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "json_bytes": json_bytes,
        "formats": formats,
        "transactions": apart["transactions"],
        "problems": problems[:20],
        "ok": not problems,
    }


def _what(statement: str) -> str:
    """A SELECT's short name: the table it reads first, and whether it groups."""
    found = re.search(r"\bFROM\s+\(?\s*(\w+)", statement, re.IGNORECASE)
    name = found.group(1) if found else "?"
    return name + (" GROUP BY" if "GROUP BY" in statement.upper() else "")


async def _profile_report(
    settings: Any, period: tuple[date, date], is_sqlite: bool
) -> dict[str, Any]:
    """reports.summary in process: the whole call and each statement (median of
    PROFILE_RUNS), and the slowest SELECTs' plans."""
    database = Database(settings)
    try:
        calls, runs = await _statement_runs(
            database, lambda db: reports.summary(db, since=period[0], until=period[1])
        )
        selects = _selects(runs)
        statements = [
            {
                "what": _what(statement),
                "sql": " ".join(statement.split())[:600],
                "median_ms": round(ms, 1),
            }
            for _, statement, _, ms in selects
        ]
        slowest = sorted(range(len(selects)), key=lambda i: -selects[i][3])[:PLANS_SHOWN]
        async with database.engine.connect() as conn:
            for i in slowest:
                _, statement, parameters, _ = selects[i]
                statements[i]["plan"] = await _plan(conn, statement, parameters, is_sqlite)
    finally:
        await database.dispose()
    total = statistics.median(calls)
    in_statements = sum(s["median_ms"] for s in statements)
    return {
        "summary_ms": [round(c, 1) for c in calls],
        "in_statements_ms": round(in_statements, 1),
        "outside_statements_ms": round(total - in_statements, 1),
        "statements": statements,
    }


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
        apart = _journals_apart(engine, run, books_.period)
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
            out["load_before_report"] = _load()
            report = _measure_report(client, headers, books_.period, apart)
            print(
                f"  report {report['from']}..{report['to']} ({report['journals_in_period']:,}"
                f" journals): JSON p50 {report['p50_ms']} ms, max {report['max_ms']} ms"
                f" ({len(report['json_ms'])} requests); csv {report['formats']['csv']['ms']} ms,"
                f" pdf {report['formats']['pdf']['ms']} ms; the journals' GROUP BY"
                f" {report['group_by_ms']} ms"
                f"{'' if report['ok'] else '; PROBLEMS: ' + '; '.join(report['problems'])}",
                flush=True,
            )
            out["report"] = report
        out["load_after"] = _load()
        out["profile"] = asyncio.run(
            _profile(run.settings, books_.instants[-1]["at"], engine == "sqlite")
        )
        out["report_profile"] = asyncio.run(
            _profile_report(run.settings, books_.period, engine == "sqlite")
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
        if "report" not in t:
            continue
        r = t["report"]
        add(
            f"audit {engine} {t['workers']}w: GET /api/audit/reports/summary (JSON) max ms,"
            f" {r['from']}..{r['to']} ({r['days']} days, {r['journals_in_period']:,} journals),"
            f" {len(r['json_ms'])} requests ({size})",
            round(r["max_ms"]),
            f"<= {REPORT_LIMIT_MS:g}",
            r["max_ms"] <= REPORT_LIMIT_MS,
        )
        add(
            f"audit {engine}: the report's transactions (JSON and CSV) = the journals'"
            " GROUP BY, every journal in the period, large movements = the first 1,000"
            " >= 10,000.00",
            r["ok"],
            "true",
            r["ok"],
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
    reported = {engine: t for engine, t in audit.items() if "report" in t}
    if not reported:
        return lines
    lines += [
        "",
        "| audit scenario: GET /api/audit/reports/summary | period | journals "
        "| JSON p50 ms | max ms | requests | csv ms | pdf ms | journals' GROUP BY ms "
        "| summary in process ms | right |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, t in reported.items():
        r, p = t["report"], t["report_profile"]
        lines.append(
            f"| {engine} {t['workers']}w | {r['from']}..{r['to']} ({r['days']} days) "
            f"| {r['journals_in_period']:,} | {r['p50_ms']:.1f} | {r['max_ms']:.1f} "
            f"| {len(r['json_ms'])} | {r['formats']['csv']['ms']:.1f} "
            f"| {r['formats']['pdf']['ms']:.1f} | {r['group_by_ms']:.1f} "
            f"| {statistics.median(p['summary_ms']):.1f} | {'yes' if r['ok'] else 'NO'} |"
        )
    for engine, t in reported.items():
        p = t["report_profile"]
        slowest = sorted(p["statements"], key=lambda s: -s["median_ms"])[:4]
        named = ", ".join(f"{s['what']} {s['median_ms']} ms" for s in slowest)
        lines.append(
            f"\n{engine} report: load {t['load_before_report']} before it; reports.summary in"
            f" process {p['summary_ms']} ms: {p['in_statements_ms']} ms in"
            f" {len(p['statements'])} SELECTs (slowest, median: {named}),"
            f" {p['outside_statements_ms']} ms outside them"
        )
    return lines
