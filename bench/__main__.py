"""`make bench`: transfers over HTTP against a real `bank serve`, on SQLite (1 and 2
workers) and PostgreSQL (2 and 4 workers), with the raw-storage ceilings (stdlib sqlite3;
pgbench's TPC-B-like script) and the framework ceiling measured in the same run, the
books verified after every run, and pass/fail per target.

    python -m bench                      # everything (about 8 minutes, and 2 per engine
                                         # for the loans scenario: its seeding is slow; the
                                         # audit scenario's books of 1 M entries take 1 to 4
                                         # more, built once for both engines)
    python -m bench --engines sqlite     # SQLite only
    python -m bench --quick              # a short smoke run
    python -m bench --product-only       # the product scenario (fraud scoring) only
    python -m bench --loans-only         # the loans scenario (GET /api/loans/{id}) only
    python -m bench --audit-only         # the audit scenario (GET /api/audit/balances?at=
                                         # over ~1 M entries) only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from app.cli import migrate_database
from app.settings import Settings
from bench import pg_ceiling, raw_ceiling, report
from bench.loadgen import build_request, run_load
from bench.seed import customer_total, seed_customers
from bench.server import BANK, Server

RESULTS = Path(__file__).resolve().parent / "results"
CUSTOMERS = 100
OPENING_MINOR = 100_000_000  # 1,000,000.00 each
JWT = "bench-jwt-secret-" + "j" * 40
PII = "bench-pii-secret-" + "p" * 40
AUDIT_KEY = "bench-audit-signing-key-" + "a" * 40


def progress():  # type: ignore[no-untyped-def]
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} req"),
            TimeElapsedColumn(),
        )
    except ImportError:  # the bench extra is not installed: plain output
        return None


class Run:
    """One engine + worker count: a fresh database, seeded, served, measured, verified."""

    def __init__(self, engine: str, workers: int, pg_url: str | None, workdir: Path) -> None:
        self.engine, self.workers = engine, workers
        self.data_dir = workdir / f"{engine}-{workers}w"
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        self.pg_admin = pg_url
        self.pg_db = f"bank_bench_{uuid.uuid4().hex[:8]}" if engine == "postgres" else None
        if self.pg_db:
            assert pg_url is not None
            self.database_url = pg_url.rsplit("/", 1)[0] + f"/{self.pg_db}"
        else:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'bank.db'}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "BANK_ENV": "production",
            "BANK_DATABASE_URL": self.database_url,
            "BANK_DATA_DIR": str(self.data_dir),
            "BANK_JWT_SECRET": JWT,
            "BANK_PII_SECRET": PII,
            "BANK_AUDIT_SIGNING_KEY": AUDIT_KEY,
            "BANK_LOG_JSON": "false",
        }

    @property
    def settings(self) -> Settings:
        return Settings(
            _env_file=None,
            env="production",
            database_url=self.database_url,  # type: ignore[call-arg]
            data_dir=self.data_dir,
            jwt_secret=JWT,
            pii_secret=PII,
            audit_signing_key=AUDIT_KEY,
        )

    def _pg(self, sql: str) -> None:
        import asyncpg

        async def go() -> None:
            assert self.pg_admin is not None
            dsn = self.pg_admin.replace("postgresql+asyncpg", "postgresql")
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(go())

    def create(self) -> None:
        if self.pg_db:
            self._pg(f'CREATE DATABASE "{self.pg_db}"')
        migrate_database(self.settings)

    def create_from(self, template: Run) -> None:
        """The template's seeded books, copied: each run starts from the same state
        without seeding again (and the template's tokens stay valid: same users)."""
        if self.pg_db:
            self._pg(f'CREATE DATABASE "{self.pg_db}" TEMPLATE "{template.pg_db}"')
        else:
            source = template.data_dir / "bank.db"
            with contextlib.closing(sqlite3.connect(source)) as conn:  # all of it in one file
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            shutil.copyfile(source, self.data_dir / "bank.db")

    def drop(self) -> None:
        if self.pg_db:
            self._pg(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')

    def verify(self) -> tuple[bool, str]:
        done = subprocess.run(
            [BANK, "verify"],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        return done.returncode == 0, (done.stdout + done.stderr).strip()


def _history_settings(data_dir: Path) -> Settings:
    return Settings(
        _env_file=None,
        env="production",
        database_url=f"sqlite+aiosqlite:///{data_dir / 'bank.db'}",  # type: ignore[call-arg]
        data_dir=data_dir,
        jwt_secret=JWT,
        pii_secret=PII,
        audit_signing_key=AUDIT_KEY,
    )


def login_all(base_url: str, seeded: list[Any]) -> list[str]:
    tokens = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for customer in seeded:
            r = client.post(
                "/api/auth/token",
                data={"username": customer.username, "password": customer.password},
            )
            r.raise_for_status()
            tokens.append(r.json()["access_token"])
    return tokens


def transfer_factory(tokens: list[str], seeded: list[Any], host: str, hot: bool = False):  # type: ignore[no-untyped-def]
    numbers = [c.account_numbers[0] for c in seeded]
    headers = [{"Authorization": f"Bearer {t}", "Content-Type": "application/json"} for t in tokens]
    counter = iter(range(10**9))

    def make(rng: Any) -> bytes:
        n = next(counter)
        if hot:  # two hot accounts sending to each other
            src = n % 2
            dst = 1 - src
        else:
            src = rng.randrange(len(numbers))
            dst = (src + 1 + rng.randrange(len(numbers) - 1)) % len(numbers)
        body = (
            f'{{"from_account":"{numbers[src]}","to_account":"{numbers[dst]}",'
            f'"amount":"0.{rng.randrange(1, 100):02d}"}}'
        ).encode()
        return build_request(
            "POST",
            "/api/transactions/transfer",
            host,
            {**headers[src], "Idempotency-Key": f"b-{n}"},
            body,
        )

    return make


def me_factory(tokens: list[str], host: str):  # type: ignore[no-untyped-def]
    prebuilt = [
        build_request("GET", "/api/auth/me", host, {"Authorization": f"Bearer {t}"}) for t in tokens
    ]
    return lambda rng: prebuilt[rng.randrange(len(prebuilt))]


def measure(
    server: Server, make: Any, ok: int, concurrency: int, duration: float, label: str
) -> dict[str, Any]:
    bar = progress()
    if bar is None:
        print(f"  {label} ...", flush=True)
        result = asyncio.run(
            run_load(
                "127.0.0.1",
                server.port,
                concurrency=concurrency,
                duration_s=duration,
                make_request=make,
                ok_status=ok,
            )
        )
    else:
        with bar:
            task = bar.add_task(label, total=None)
            result = asyncio.run(
                run_load(
                    "127.0.0.1",
                    server.port,
                    concurrency=concurrency,
                    duration_s=duration,
                    make_request=make,
                    ok_status=ok,
                    on_tick=lambda n: bar.advance(task, n),
                )
            )
    return result.summary()


def bench_engine(
    engine: str, workers_list: list[int], args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {"engine": engine, "runs": []}
    if workers_list or not args.no_product:  # the loans scenario seeds books of its own
        print(f"\n== {engine}: seeding {CUSTOMERS} customers", flush=True)
        template = Run(engine, 0, args.pg_url, workdir)
        try:
            template.create()
            seeded = asyncio.run(
                seed_customers(
                    template.settings,
                    count=CUSTOMERS,
                    accounts_each=1,
                    opening_minor=OPENING_MINOR,
                )
            )
            tokens = _measure_runs(engine, workers_list, args, workdir, template, seeded, out)
            if not args.no_product:
                from bench import product

                out["product"] = product.throughput(
                    engine, args, workdir, template, tokens, seeded, Run, measure, transfer_factory
                )
        finally:
            template.drop()
    if not args.no_loans:
        from bench import loans

        out["loans"] = loans.latency(engine, args, workdir, Run)
    if not args.no_audit:
        from bench import audit_books

        out["audit"] = audit_books.latency(engine, args, workdir, Run)
    return out


def _measure_runs(
    engine: str,
    workers_list: list[int],
    args: argparse.Namespace,
    workdir: Path,
    template: Run,
    seeded: list[Any],
    out: dict[str, Any],
) -> list[str]:
    """Measure each worker count; returns the seeded customers' tokens."""
    tokens: list[str] | None = None
    if not workers_list:  # the product scenario only: log in on a server of its own
        run = Run(engine, 1, args.pg_url, workdir)
        try:
            run.create_from(template)
            with Server(run.env, 1, run.data_dir / "server.log") as server:
                return login_all(server.base_url, seeded)
        finally:
            run.drop()
    for workers in workers_list:
        run = Run(engine, workers, args.pg_url, workdir)
        print(f"\n== {engine}, {workers} worker(s)", flush=True)
        try:
            run.create_from(template)
            before = asyncio.run(customer_total(run.settings))
            entry: dict[str, Any] = {"workers": workers, "settings": []}
            with Server(run.env, workers, run.data_dir / "server.log") as server:
                entry["ready_s"] = round(server.ready_after_s, 3)
                host = f"127.0.0.1:{server.port}"
                tokens = tokens or login_all(server.base_url, seeded)
                # The ceilings first, on a quiet server: measured after a burst of
                # transfers, /auth/me shared the CPU with the WAL checkpoint they left.
                ceilings = {
                    concurrency: measure(
                        server,
                        me_factory(tokens, host),
                        200,
                        concurrency,
                        args.ceiling_duration,
                        f"{engine} {workers}w /auth/me  c={concurrency}",
                    )
                    for concurrency in args.concurrency
                }
                for concurrency in args.concurrency:
                    t = measure(
                        server,
                        transfer_factory(tokens, seeded, host),
                        201,
                        concurrency,
                        args.duration,
                        f"{engine} {workers}w transfers c={concurrency}",
                    )
                    entry["settings"].append(
                        {
                            "concurrency": concurrency,
                            "transfers": t,
                            "framework_ceiling": ceilings[concurrency],
                        }
                    )
                if engine == "postgres" and workers == max(workers_list):
                    entry["hot_accounts"] = measure(
                        server,
                        transfer_factory(tokens, seeded, host, hot=True),
                        201,
                        128,
                        args.duration,
                        f"{engine} {workers}w hot accounts c=128",
                    )
            after = asyncio.run(customer_total(run.settings))
            verified, verify_output = run.verify()
            entry["books"] = {
                "total_before": before,
                "total_after": after,
                "conserved": before == after,
                "bank_verify": verified,
                "verify_output": verify_output,
            }
            out["runs"].append(entry)
        finally:
            run.drop()
    assert tokens is not None
    return tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument(
        "--concurrency", default="1,8,32,128", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--ceiling-duration", type=float, default=4.0)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "BANK_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale curves")
    parser.add_argument(
        "--no-product", action="store_true", help="skip the product scenario (fraud scoring)"
    )
    parser.add_argument(
        "--product-only", action="store_true", help="only the product scenario (fraud scoring)"
    )
    parser.add_argument(
        "--no-loans", action="store_true", help="skip the loans scenario (GET /api/loans/{id})"
    )
    parser.add_argument(
        "--loans-only", action="store_true", help="only the loans scenario (GET /api/loans/{id})"
    )
    parser.add_argument(
        "--no-audit",
        action="store_true",
        help="skip the audit scenario (GET /api/audit/balances?at= over ~1 M entries)",
    )
    parser.add_argument(
        "--audit-only",
        action="store_true",
        help="only the audit scenario (GET /api/audit/balances?at= over ~1 M entries)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.ceiling_duration, args.concurrency = 3.0, 2.0, [8, 32]
    only = [name for name in ("product", "loans", "audit") if getattr(args, f"{name}_only")]
    if only:  # the scenarios named, and nothing else
        args.no_scale = True
        args.no_product = args.no_product or "product" not in only
        args.no_loans = args.no_loans or "loans" not in only
        args.no_audit = args.no_audit or "audit" not in only
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="bank-bench-"))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "args": {k: v for k, v in vars(args).items() if k != "pg_url"},
        "raw_ceiling": {
            "sqlite_full_per_s": round(raw_ceiling.measure(workdir), 1),
            "sqlite_normal_per_s": round(raw_ceiling.measure(workdir, 2.0, "NORMAL"), 1),
        },
        "engines": {},
    }
    if "postgres" in engines and not only:
        print("\n== postgres: pgbench (TPC-B-like) ceiling", flush=True)
        tps = pg_ceiling.measure(args.pg_url, args.concurrency, seconds=args.duration)
        results["raw_ceiling"]["postgres_pgbench_tps"] = {str(c): v for c, v in tps.items()}
    try:
        for engine in engines:
            workers = [1, 2] if engine == "sqlite" else [2, 4]
            if only:
                workers = []
            results["engines"][engine] = bench_engine(engine, workers, args, workdir)
        if not args.no_product:
            from bench import product

            results["product"] = {
                "throughput": {
                    engine: data["product"]
                    for engine, data in results["engines"].items()
                    if "product" in data
                },
                "history": product.history_cost(workdir, _history_settings),
            }
        if not args.no_loans:
            results["loans"] = {
                engine: data["loans"]
                for engine, data in results["engines"].items()
                if "loans" in data
            }
        if not args.no_audit:
            results["audit"] = {
                engine: data["audit"]
                for engine, data in results["engines"].items()
                if "audit" in data
            }
        if not args.no_scale:
            from bench import scale

            results["scale"] = scale.run(workdir, quick=args.quick)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["targets"] = report.evaluate(results)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    # A run of the loans (or audit) scenario alone is filed under its name: it does not
    # overwrite the day's full (or product) results, nor their chart of transfers.
    prefix = f"{stamp}-{only[0]}" if only in (["loans"], ["audit"]) else stamp
    for engine in engines:
        path = RESULTS / f"{prefix}-{engine}.json"
        path.write_text(
            json.dumps({**results, "engines": {engine: results["engines"][engine]}}, indent=2)
        )
        print(f"results: {path}")
    print(report.markdown(results))
    if any(data["runs"] for data in results["engines"].values()):
        chart = report.chart(results, RESULTS / f"{stamp}-chart.png")
        if chart:
            print(f"chart: {chart}")
    failed = [t for t in results["targets"] if not t["pass"]]
    print(
        f"\n{len(results['targets']) - len(failed)} of {len(results['targets'])} targets pass"
        f" ({results['elapsed_s']} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
