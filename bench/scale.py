"""Scale curves: does the cost of a payment, a history page, a statement and the audit
verification stay flat as the books grow? Books are built by bench.books (valid,
audited, every journal through the one posting function), then measured against a real
`bank serve`.

    python -m bench.scale                     # the scale curves alone (python -m bench runs
                                              # them after the engines), printed, not saved
    python -m bench.scale --quick             # smaller books
    python -m bench.scale --only statements   # history pages and a 10,000-entry statement
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from app.cli import migrate_database
from app.db import Database
from app.security import Security
from app.settings import Settings
from bench import books
from bench.loadgen import build_request, run_load
from bench.server import Server

JWT = "bench-jwt-secret-" + "j" * 40
PII = "bench-pii-secret-" + "p" * 40
AUDIT_KEY = "bench-audit-signing-key-" + "a" * 40
CLIENTS = 20  # customers whose accounts the measured transfers use


def _settings(data_dir: Path) -> Settings:
    return Settings(
        _env_file=None,
        env="production",
        data_dir=data_dir,  # type: ignore[call-arg]
        jwt_secret=JWT,
        pii_secret=PII,
        audit_signing_key=AUDIT_KEY,
    )


def _env(data_dir: Path) -> dict[str, str]:
    return {
        "BANK_ENV": "production",
        "BANK_DATA_DIR": str(data_dir),
        "BANK_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'bank.db'}",
        "BANK_JWT_SECRET": JWT,
        "BANK_PII_SECRET": PII,
        "BANK_AUDIT_SIGNING_KEY": AUDIT_KEY,
    }


def build(
    data_dir: Path, *, customers: int, accounts_each: int, journals: int, hot_entries: int
) -> tuple[books.ScaleResult, float]:
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    settings = _settings(data_dir)
    migrate_database(settings)

    async def go() -> books.ScaleResult:
        database = Database(settings)
        try:
            async with database.session() as db:
                return await books.build(
                    db,
                    settings,
                    Security(settings),
                    customers=customers,
                    accounts_per_customer=accounts_each,
                    journals=journals,
                    hot_account_entries=hot_entries,
                )
        finally:
            await database.dispose()

    started = time.perf_counter()
    result = asyncio.run(go())
    return result, time.perf_counter() - started


def _login(client: httpx.Client, username: str) -> str:
    r = client.post("/api/auth/token", data={"username": username, "password": books.SEED_PASSWORD})
    r.raise_for_status()
    return r.json()["access_token"]


def transfer_latency(
    server: Server, result: books.ScaleResult, tokens: list[str], duration: float
) -> dict[str, Any]:
    """p50/p99 of transfers among the first CLIENTS customers' first accounts, one at a
    time."""
    each = result.accounts // result.customers
    numbers = [result.account_numbers[i * each] for i in range(CLIENTS)]
    host = f"127.0.0.1:{server.port}"
    counter = iter(range(10**9))

    def make(rng: Any) -> bytes:
        src = rng.randrange(CLIENTS)
        dst = (src + 1 + rng.randrange(CLIENTS - 1)) % CLIENTS
        body = (
            f'{{"from_account":"{numbers[src]}","to_account":"{numbers[dst]}","amount":"0.01"}}'
        ).encode()
        return build_request(
            "POST",
            "/api/transactions/transfer",
            host,
            {
                "Authorization": f"Bearer {tokens[src]}",
                "Content-Type": "application/json",
                "Idempotency-Key": f"s-{next(counter)}",
            },
            body,
        )

    def load(seconds: float) -> Any:
        # One client: the cost of a transfer on these books, not the queue in front of it.
        return asyncio.run(
            run_load(
                "127.0.0.1",
                server.port,
                concurrency=1,
                duration_s=seconds,
                make_request=make,
                ok_status=201,
            )
        )

    load(3.0)  # warm-up, untimed: caches filled, the build's writes flushed to disk
    return load(duration).summary()


def _timed(client: httpx.Client, url: str, headers: dict[str, str], repeat: int = 5) -> float:
    """Median latency of `repeat` requests after one untimed warm-up (first-use costs such
    as compiling the query or importing fpdf2 are not what the curves measure)."""
    client.get(url, headers=headers).raise_for_status()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        r = client.get(url, headers=headers)
        r.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def history_and_statement(
    server: Server, result: books.ScaleResult, token: str
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    number = result.account_numbers[0]
    out: dict[str, float] = {}
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        url = f"/api/transactions?account_number={number}&limit=50"
        out["history_page_1_ms"] = _timed(client, url, headers)
        cursor = None
        for _ in range(99):
            page = client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=headers)
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        out["history_page_100_ms"] = (
            _timed(client, f"{url}&cursor={cursor}", headers) if cursor else float("nan")
        )
        since = (datetime.now(UTC) - timedelta(days=60)).date().isoformat()
        stmt = f"/api/accounts/{number}/statement?from={since}"
        response = client.get(stmt, headers=headers)
        response.raise_for_status()
        body = response.json()
        out["statement_entries"] = len(body["entries"])
        out["statement_json_ms"] = _timed(client, stmt + "&format=json", headers, 3)
        out["statement_pdf_ms"] = _timed(client, stmt + "&format=pdf", headers, 3)
    return out


VERIFY_SCRIPT = """
import asyncio, json, resource, time
from app.db import Database
from app.services import audit
from app.settings import load_settings
async def main():
    database = Database(load_settings())
    async with database.session() as db:
        started = time.perf_counter()
        report = await audit.verify_chain(db)
        elapsed = time.perf_counter() - started
    await database.dispose()
    print(json.dumps({"valid": report.valid, "records": report.entries_checked,
                      "seconds": elapsed,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
asyncio.run(main())
"""


def audit_verification(data_dir: Path, records: int) -> dict[str, Any]:
    """`bank verify`'s chain check over a log of at least `records` (topped up with
    filler records), in a fresh process: time and peak memory."""

    async def pad() -> None:
        database = Database(_settings(data_dir))
        try:
            async with database.session() as db:
                await books.pad_audit_log(db, records)
        finally:
            await database.dispose()

    asyncio.run(pad())
    done = subprocess.run(
        [sys.executable, "-c", VERIFY_SCRIPT],
        env={**os.environ, **_env(data_dir)},
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    data["records_per_s"] = round(data["records"] / data["seconds"]) if data["seconds"] else 0
    return data


def history_and_statement_targets(m: dict[str, Any]) -> list[dict[str, Any]]:
    page_ratio = m["history_page_100_ms"] / m["history_page_1_ms"]
    return [
        {
            "target": "history page 100 vs page 1",
            "value": round(page_ratio, 2),
            "limit": "<= 1.5",
            "pass": page_ratio <= 1.5,
        },
        {
            "target": f"statement JSON, {m['statement_entries']} entries (ms)",
            "value": round(m["statement_json_ms"]),
            "limit": "<= 300",
            "pass": m["statement_json_ms"] <= 300,
        },
        {
            "target": f"statement PDF, {m['statement_entries']} entries (ms)",
            "value": round(m["statement_pdf_ms"]),
            "limit": "<= 2000",
            "pass": m["statement_pdf_ms"] <= 2000,
        },
    ]


def run(workdir: Path, quick: bool = False) -> dict[str, Any]:
    big_journals = 50_000 if quick else 500_000  # ~1 M ledger entries in full mode
    many_accounts = 10_000 if quick else 100_000
    duration = 3.0 if quick else 6.0
    hot = 5_500 if quick else 10_000  # page 100 of 50 needs more than 5,000
    audit_records = 100_000 if quick else 1_000_000
    m: dict[str, Any] = {}
    curves: dict[str, dict[str, Any]] = {}
    cases = (
        ("1k accounts, ~2k entries", 1_000, 1, 0, 0),
        (f"1k accounts, ~{2 * big_journals // 1000}k entries", 1_000, 1, big_journals, hot),
        (f"{many_accounts // 1000}k accounts", many_accounts // 10, 10, 0, 0),
    )
    for label, customers, each, journals, hot_entries in cases:
        data_dir = workdir / "scale"
        print(f"\n== scale: building {label}", flush=True)
        result, seconds = build(
            data_dir,
            customers=customers,
            accounts_each=each,
            journals=journals,
            hot_entries=hot_entries,
        )
        m[f"build {label} (s)"] = round(seconds, 1)
        with (
            Server(_env(data_dir), 1, data_dir / "server.log") as server,
            httpx.Client(base_url=server.base_url, timeout=60) as client,
        ):
            tokens = [_login(client, result.usernames[i]) for i in range(CLIENTS)]
            curves[label] = transfer_latency(server, result, tokens, duration)
            if journals:
                m.update(history_and_statement(server, result, tokens[0]))
        if journals:
            m["audit_verify"] = audit_verification(data_dir, audit_records)
        shutil.rmtree(data_dir, ignore_errors=True)
    small, big, wide = (curves[c[0]] for c in cases)
    m["transfer p50/p99 ms"] = {k: (v["p50_ms"], v["p99_ms"]) for k, v in curves.items()}
    verify = m["audit_verify"]
    targets = [
        {
            "target": "p50 transfer at ~1M entries vs ~1k",
            "value": round(big["p50_ms"] / small["p50_ms"], 2),
            "limit": "<= 1.25",
            "pass": big["p50_ms"] <= 1.25 * small["p50_ms"],
        },
        {
            "target": "p50 transfer at 100k accounts vs 1k",
            "value": round(wide["p50_ms"] / small["p50_ms"], 2),
            "limit": "<= 1.25",
            "pass": wide["p50_ms"] <= 1.25 * small["p50_ms"],
        },
        *history_and_statement_targets(m),
        {
            "target": f"audit verify records/s ({verify['records']} records)",
            "value": verify["records_per_s"],
            "limit": ">= 100000",
            "pass": verify["valid"] and verify["records_per_s"] >= 100_000,
        },
        {
            "target": "audit verify peak RSS MB",
            "value": round(verify["peak_rss_mb"]),
            "limit": "<= 256",
            "pass": verify["peak_rss_mb"] <= 256,
        },
    ]
    return {"measurements": m, "curves": curves, "targets": targets}


def run_statements(workdir: Path, hot: int = 10_000) -> dict[str, Any]:
    """Only the history pages and the statement: a book whose first account has `hot`
    transfers (plus its opening deposit and a few random ones) in the last 30 days."""
    data_dir = workdir / "scale"
    print(f"\n== scale: building a {hot:,}-entry account", flush=True)
    result, seconds = build(
        data_dir, customers=1_000, accounts_each=1, journals=2 * hot, hot_entries=hot
    )
    m: dict[str, Any] = {"build (s)": round(seconds, 1)}
    with (
        Server(_env(data_dir), 1, data_dir / "server.log") as server,
        httpx.Client(base_url=server.base_url, timeout=60) as client,
    ):
        m.update(history_and_statement(server, result, _login(client, result.usernames[0])))
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"measurements": m, "targets": history_and_statement_targets(m)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller books (all curves)")
    parser.add_argument("--only", choices=("all", "statements"), default="all")
    parser.add_argument("--hot", type=int, default=10_000, help="entries of the statement account")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bank-scale-"))
    try:
        if args.only == "statements":
            results = run_statements(workdir, args.hot)
        else:
            results = run(workdir, quick=args.quick)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results["measurements"], indent=2))
    print("\n| target | value | limit | result |\n|---|---|---|---|")
    for t in results["targets"]:
        verdict = "pass" if t["pass"] else "FAIL"
        print(f"| {t['target']} | {t['value']} | {t['limit']} | {verdict} |")
    return 0 if all(t["pass"] for t in results["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
