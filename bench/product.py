"""The "product" scenario of `make bench` (issue 19): transfers with fraud scoring on,
against the same run with scoring off, and what scoring costs.

- Throughput: SQLite 2 workers and PostgreSQL 4 workers at 32 clients, scoring off and
  on in turn (off, on, off, on: this machine drifts), each from a copy of the same seeded
  books; the ratio of the medians.
- Lag: for every transfer made while the load ran, its score's `scored_at` minus its
  journal's `created_at` (p50, p99), and how long the queue took to empty once the load
  stopped.
- One score's cost against history size: the same batch of new movements scored in
  process on a database whose customer has 10 prior movements and on one with 100,000
  (spread over the past year, the scorer's aggregates filled as scoring would have),
  CPU time per score, alternated; the ratio of the medians.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from app.cli import migrate_database
from app.db import Database
from app.models import Account, FraudScore, Journal, ScoreQueue
from app.services.rules import load_rules
from app.services.scoring import Scorer
from bench.seed import seed_customers
from bench.server import Server

CONCURRENCY = 32
WORKERS = {"sqlite": 2, "postgres": 4}
DRAIN_LIMIT_S = 30.0


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _lag(settings: Any, since: datetime, until: datetime) -> dict[str, Any]:
    database = Database(settings)
    try:
        async with database.session() as db:
            rows = (
                await db.execute(
                    select(Journal.created_at, FraudScore.scored_at)
                    .join(FraudScore, FraudScore.journal_id == Journal.id)
                    .where(
                        Journal.kind == "transfer",
                        Journal.created_at >= since,
                        Journal.created_at <= until,
                    )
                )
            ).all()
            unscored = await db.scalar(
                select(func.count())
                .select_from(Journal)
                .where(Journal.kind == "transfer", Journal.flagged.is_(None))
            )
    finally:
        await database.dispose()
    lags = [(scored - created).total_seconds() * 1000 for created, scored in rows]
    return {
        "scored": len(lags),
        "unscored_after_drain": int(unscored or 0),
        "lag_p50_ms": round(_percentile(lags, 0.50), 1),
        "lag_p99_ms": round(_percentile(lags, 0.99), 1),
        "lag_max_ms": round(max(lags, default=0.0), 1),
    }


async def _queue_empty_after(settings: Any) -> float:
    """Seconds until score_queue is empty (DRAIN_LIMIT_S if it never is)."""
    database = Database(settings)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < DRAIN_LIMIT_S:
            async with database.session() as db:
                left = await db.scalar(select(func.count()).select_from(ScoreQueue))
            if not left:
                return round(time.perf_counter() - started, 2)
            await asyncio.sleep(0.05)
    finally:
        await database.dispose()
    return DRAIN_LIMIT_S


def throughput(
    engine: str,
    args: Any,
    workdir: Path,
    template: Any,
    tokens: list[str],
    seeded: list[Any],
    run_class: Any,
    measure: Any,
    transfer_factory: Any,
) -> dict[str, Any]:
    workers = WORKERS[engine]
    runs: list[dict[str, Any]] = []
    for scoring in (False, True, False, True):
        run = run_class(engine, workers, args.pg_url, workdir)
        label = f"{engine} {workers}w product c={CONCURRENCY} scoring {'on' if scoring else 'off'}"
        print(f"\n== {label}", flush=True)
        try:
            run.create_from(template)
            env = {**run.env, "BANK_FRAUD_SCORING": "true" if scoring else "false"}
            entry: dict[str, Any] = {"scoring": scoring}
            with Server(env, workers, run.data_dir / "server.log") as server:
                host = f"127.0.0.1:{server.port}"
                started = datetime.now(UTC)
                entry["transfers"] = measure(
                    server,
                    transfer_factory(tokens, seeded, host),
                    201,
                    CONCURRENCY,
                    args.duration,
                    label,
                )
                stopped = datetime.now(UTC)
                if scoring:
                    entry["drain_s"] = asyncio.run(_queue_empty_after(run.settings))
                    entry.update(asyncio.run(_lag(run.settings, started, stopped)))
            verified, _ = run.verify()
            entry["bank_verify"] = verified
            runs.append(entry)
        finally:
            run.drop()
    off = [r["transfers"]["per_second"] for r in runs if not r["scoring"]]
    on = [r["transfers"]["per_second"] for r in runs if r["scoring"]]
    scored = [r for r in runs if r["scoring"]]
    return {
        "workers": workers,
        "concurrency": CONCURRENCY,
        "runs": runs,
        "off_per_s": round(statistics.median(off), 1),
        "on_per_s": round(statistics.median(on), 1),
        "ratio": round(statistics.median(on) / statistics.median(off), 3),
        "lag_p50_ms": max(r["lag_p50_ms"] for r in scored),
        "lag_p99_ms": max(r["lag_p99_ms"] for r in scored),
        "drain_s": max(r["drain_s"] for r in scored),
        "unscored_after_drain": sum(r["unscored_after_drain"] for r in scored),
        "errors_5xx": sum(r["transfers"]["errors_5xx"] for r in runs),
        "books_verified": all(r["bank_verify"] for r in runs),
    }


# --- one score's cost against history size ------------------------------------------

NEW_MOVEMENTS = 400
ROUNDS = 3


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class History:
    """A SQLite database whose first customer has `prior` movements behind them."""

    def __init__(self, workdir: Path, prior: int, settings_for: Any) -> None:
        self.prior = prior
        self.dir = workdir / f"history-{prior}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings_for(self.dir)
        self.path = self.dir / "bank.db"

    def build(self) -> None:
        migrate_database(self.settings)
        asyncio.run(
            seed_customers(
                self.settings, count=2, accounts_each=1, opening_minor=10**8, prefix="hist"
            )
        )
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            (source, customer), (target, _) = conn.execute(
                "SELECT id, customer_id FROM accounts WHERE kind = 'customer' ORDER BY id"
            ).fetchall()
            self.source, self.customer, self.target = source, customer, target
            conn.execute("DELETE FROM score_queue")  # the seeding's deposits: not measured
            rng = random.Random(self.prior)
            now = datetime.now(UTC)
            moments = sorted(
                now - timedelta(seconds=rng.uniform(600, 365 * 86400)) for _ in range(self.prior)
            )
            self._insert(conn, moments, queued=False)
            # The scorer's aggregates, as scoring those movements would have left them.
            conn.execute(
                "INSERT INTO fraud_buckets (key, minute, count) SELECT 't:' || from_account_id,"
                " CAST(strftime('%s', created_at) AS INTEGER) / 60, COUNT(*) FROM journals"
                " WHERE kind = 'transfer' AND from_account_id = ? GROUP BY 1, 2",
                (source,),
            )
            conn.execute(
                "INSERT INTO fraud_account_days (account_id, day, count, total)"
                " SELECT from_account_id, CAST(strftime('%s', created_at) AS INTEGER) / 86400,"
                " COUNT(*), SUM(amount) FROM journals WHERE kind = 'transfer'"
                " AND from_account_id = ? GROUP BY 1, 2",
                (source,),
            )
            conn.execute(
                "INSERT INTO fraud_payees (customer_id, account_id, first_journal_id)"
                " SELECT customer_id, to_account_id, MIN(id) FROM journals WHERE kind = 'transfer'"
                " AND customer_id = ? GROUP BY 1, 2",
                (customer,),
            )
            conn.commit()

    def _insert(self, conn: sqlite3.Connection, moments: list[datetime], *, queued: bool) -> None:
        next_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM journals").fetchone()[0]
        journals, entries, queue = [], [], []
        for n, at in enumerate(moments):
            journal_id, stamp = next_id + n, _stamp(at)
            amount = 1 + n % 9999
            journals.append(
                (
                    journal_id,
                    "transfer",
                    "completed",
                    amount,
                    "USD",
                    self.source,
                    self.target,
                    None,
                    self.customer,
                    None,
                    None,
                    None,
                    stamp,
                )
            )
            entries += [
                (journal_id, self.source, "USD", -amount, 10**11 - n, stamp),
                (journal_id, self.target, "USD", amount, n, stamp),
            ]
            if queued:
                queue.append((journal_id, stamp))
        conn.executemany(
            "INSERT INTO journals (id, kind, status, amount, currency, from_account_id,"
            " to_account_id, description, customer_id, initiated_by, reverses_id, flagged,"
            " created_at) VALUES (" + ", ".join("?" * 13) + ")",
            journals,
        )
        conn.executemany(
            "INSERT INTO entries (journal_id, account_id, currency, amount, balance_after,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            entries,
        )
        conn.executemany("INSERT INTO score_queue (journal_id, created_at) VALUES (?, ?)", queue)

    def score_new(self, rules: Any) -> float:
        """CPU microseconds per score of NEW_MOVEMENTS new transfers, scored in one batch."""
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            now = datetime.now(UTC)
            self._insert(
                conn,
                [now - timedelta(milliseconds=NEW_MOVEMENTS - n) for n in range(NEW_MOVEMENTS)],
                queued=True,
            )
            conn.commit()

        async def go() -> float:
            database = Database(
                self.settings.model_copy(update={"fraud_batch_size": NEW_MOVEMENTS})
            )
            try:
                scorer = Scorer(database, rules)
                async with database.session() as db:  # the pool's connection, opened
                    await db.scalar(select(func.count()).select_from(Account))
                started = time.process_time()
                scored = await scorer.drain()
                spent = time.process_time() - started
            finally:
                await database.dispose()
            assert scored == NEW_MOVEMENTS, scored
            return spent / scored * 1e6

        return asyncio.run(go())


def history_cost(workdir: Path, settings_for: Any) -> dict[str, Any]:
    print("\n== product: one score's CPU, 10 vs 100,000 prior movements", flush=True)
    rules = load_rules(None)
    small, large = History(workdir, 10, settings_for), History(workdir, 100_000, settings_for)
    small.build()
    large.build()
    costs: dict[int, list[float]] = {10: [], 100_000: []}
    for _ in range(ROUNDS):
        for history in (small, large):
            costs[history.prior].append(round(history.score_new(rules), 1))
    medians = {prior: statistics.median(values) for prior, values in costs.items()}
    return {
        "cpu_us_per_score": {str(prior): values for prior, values in costs.items()},
        "median_10": medians[10],
        "median_100000": medians[100_000],
        "ratio": round(medians[100_000] / medians[10], 3),
    }


def targets(product: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, limit: str, ok: bool) -> None:
        out.append({"target": name, "value": value, "limit": limit, "pass": bool(ok)})

    for engine, t in product.get("throughput", {}).items():
        label = f"product {engine} {t['workers']}w c={t['concurrency']}"
        add(f"{label}: transfers/s scoring on / off", t["ratio"], ">= 0.85", t["ratio"] >= 0.85)
        add(f"{label}: scoring lag p50 ms", t["lag_p50_ms"], "<= 200", t["lag_p50_ms"] <= 200)
        add(f"{label}: scoring lag p99 ms", t["lag_p99_ms"], "<= 2000", t["lag_p99_ms"] <= 2000)
        add(f"{label}: queue empty after load s", t["drain_s"], "<= 5", t["drain_s"] <= 5)
        unscored = t["unscored_after_drain"]
        add(f"{label}: transfers never scored", unscored, "== 0", unscored == 0)
        add(
            f"{label}: 5xx and books",
            t["errors_5xx"] == 0 and t["books_verified"],
            "true",
            t["errors_5xx"] == 0 and t["books_verified"],
        )
    history = product.get("history")
    if history:
        ratio = history["ratio"]
        add("product: score CPU at 100,000 vs 10 prior movements", ratio, "<= 1.5", ratio <= 1.5)
    return out


def markdown(product: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "| product scenario | scoring off /s | on /s | on/off | lag p50 ms "
        "| lag p99 ms | queue empty s |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine, t in product.get("throughput", {}).items():
        lines.append(
            f"| {engine} {t['workers']}w c={t['concurrency']} | {t['off_per_s']:.0f} "
            f"| {t['on_per_s']:.0f} | {t['ratio']:.3f} | {t['lag_p50_ms']} | {t['lag_p99_ms']} "
            f"| {t['drain_s']} |"
        )
    history = product.get("history")
    if history:
        lines.append(
            f"\nOne score's CPU: {history['median_10']} us at 10 prior movements,"
            f" {history['median_100000']} us at 100,000 (ratio {history['ratio']})."
        )
    return lines
