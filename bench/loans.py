"""The "loans" scenario of `make bench` (issue 20): GET /api/loans/{id} stays fast with
360 installments and 1,000 repayments (p99 <= 50 ms).

- Seeding, through the API of a real `bank serve` (the customer and two admins are made
  in process, as bench.seed and `bank create-user` do): one customer with a funded
  account applies for a home loan of 300,000.00 over 360 months; two admins approve it
  (it is above BANK_FOUR_EYES_THRESHOLD), which pays it out and writes its 360
  installments; then 1,000 repayments of 10.00, one after the other, each lowering the
  future principal (so each rewrites the installments not yet due).
- Latency: a bounded number of GET /api/loans/{id} from a few keep-alive clients (after
  a short warm-up), p50 / p95 / p99: the target. For information (no target): the same
  read from one client (what one request costs, without queueing behind the others on
  two cores) and GET /api/loans/{id}/schedule. Then the books are verified
  (`bank verify`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from app.db import Database
from app.models import Role
from app.security import Security
from app.services import staff
from app.services.audit import SYSTEM
from bench.loadgen import build_request, run_load
from bench.seed import seed_customers
from bench.server import Server

WORKERS = {"sqlite": 2, "postgres": 2}  # two cores: one worker each
CONCURRENCY = 4
PRODUCT, PRINCIPAL, TERM = "home", "300000.00", 360
MONTHLY_INCOME = "25000.00"
OPENING_MINOR = 2_000_000  # 20,000.00: the repayments' 10,000.00 and then some
REPAYMENTS, REPAYMENT = 1000, "10.00"
WARMUP = 100
REQUESTS = 2000  # GET /api/loans/{id}
SINGLE_REQUESTS = 500  # the same from one client
SCHEDULE_REQUESTS = 500  # GET /api/loans/{id}/schedule: 360 rows each, for information
QUICK_REPAYMENTS, QUICK_REQUESTS = 100, 500  # --quick: a smoke run, labelled as such
CAP_S = 90.0  # a measurement stops here even if its requests are not all sent
P99_LIMIT_MS = 50.0
ADMINS = (("loanadmin1", "bench-admin-pass-1"), ("loanadmin2", "bench-admin-pass-2"))


async def _admins(settings: Any) -> None:
    database = Database(settings)
    security = Security(settings)
    try:
        async with database.session() as db:
            for username, password in ADMINS:
                await staff.create_staff(
                    db,
                    security,
                    username=username,
                    email=f"{username}@bench.example",
                    password=password,
                    role=Role.admin,
                    actor=SYSTEM,
                )
    finally:
        await database.dispose()


def _login(client: httpx.Client, username: str, password: str) -> dict[str, str]:
    r = client.post("/api/auth/token", data={"username": username, "password": password})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _check(r: httpx.Response, status: int, what: str) -> dict[str, Any]:
    if r.status_code != status:
        raise RuntimeError(f"{what}: {r.status_code} {r.text[:500]}")
    return r.json()  # type: ignore[no-any-return]


def _seed_loan(base_url: str, customer: Any, repayments: int) -> dict[str, Any]:
    """Apply, approve twice, repay `repayments` times; the loan's id, headers, timings."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        me = _login(client, customer.username, customer.password)
        admins = [_login(client, u, p) for u, p in ADMINS]
        account = customer.account_numbers[0]
        started = time.perf_counter()
        loan = _check(
            client.post(
                "/api/loans",
                headers={**me, "Idempotency-Key": "loan-apply"},
                json={
                    "product": PRODUCT,
                    "principal": PRINCIPAL,
                    "term_months": TERM,
                    "monthly_income": MONTHLY_INCOME,
                    "account_number": account,
                    "purpose": "home purchase",
                },
            ),
            201,
            "apply",
        )
        loan_id = loan["loan_id"]
        for n, admin in enumerate(admins):
            decided = _check(
                client.post(
                    f"/api/admin/loans/{loan_id}/approve",
                    headers=admin,
                    json={"reason": f"bench approval {n + 1}"},
                ),
                200,
                "approve",
            )
        if decided["status"] != "active":
            raise RuntimeError(f"loan {loan_id} is {decided['status']} after two approvals")
        approved_s = time.perf_counter() - started
        started = time.perf_counter()
        body = {"amount": REPAYMENT, "from_account": account}
        slowest = 0.0
        for n in range(repayments):
            sent = time.perf_counter()
            _check(
                client.post(
                    f"/api/loans/{loan_id}/repayments",
                    headers={**me, "Idempotency-Key": f"loan-repay-{n}"},
                    json=body,
                ),
                201,
                f"repayment {n}",
            )
            slowest = max(slowest, time.perf_counter() - sent)
            if (n + 1) % 250 == 0:
                print(f"  {n + 1} repayments ({time.perf_counter() - started:.1f} s)", flush=True)
        repaid_s = time.perf_counter() - started
        shown = _check(client.get(f"/api/loans/{loan_id}", headers=me), 200, "get loan")
        rows = _check(
            client.get(f"/api/loans/{loan_id}/schedule", headers=me), 200, "get schedule"
        )["rows"]
    return {
        "loan_id": loan_id,
        "headers": me,
        "seed": {
            "apply_and_approve_s": round(approved_s, 2),
            "repayments": repayments,
            "repayments_s": round(repaid_s, 2),
            "repayment_mean_ms": round(repaid_s / max(repayments, 1) * 1000, 1),
            "repayment_max_ms": round(slowest * 1000, 1),
        },
        "loan": {
            key: shown[key]
            for key in (
                "status",
                "term_months",
                "outstanding_principal",
                "monthly_payment",
                "payoff_amount",
                "next_due_date",
            )
        },
        "schedule_rows": len(rows),
    }


def _load(
    server: Server, request: bytes, requests: int, label: str, concurrency: int = CONCURRENCY
) -> dict[str, Any]:
    print(f"  {label}: {requests} requests, {concurrency} client(s) ...", flush=True)
    result = asyncio.run(
        run_load(
            "127.0.0.1",
            server.port,
            concurrency=concurrency,
            duration_s=CAP_S,
            make_request=lambda rng: request,
            ok_status=200,
            max_requests=requests,
        )
    )
    return result.summary()


def latency(engine: str, args: Any, workdir: Path, run_class: Any) -> dict[str, Any]:
    workers = WORKERS[engine]
    run = run_class(engine, workers, args.pg_url, workdir / "loans")
    label = f"{engine} {workers}w loans"
    repayments, requests = (
        (QUICK_REPAYMENTS, QUICK_REQUESTS) if args.quick else (REPAYMENTS, REQUESTS)
    )
    print(f"\n== {label}: a {TERM}-month loan, {repayments} repayments", flush=True)
    started = time.perf_counter()
    try:
        run.create()
        (customer,) = asyncio.run(
            seed_customers(
                run.settings, count=1, accounts_each=1, opening_minor=OPENING_MINOR, prefix="loan"
            )
        )
        asyncio.run(_admins(run.settings))
        out: dict[str, Any] = {"workers": workers, "concurrency": CONCURRENCY}
        with Server(run.env, workers, run.data_dir / "server.log") as server:
            seeded = _seed_loan(server.base_url, customer, repayments)
            out.update({k: v for k, v in seeded.items() if k != "headers"})
            host = f"127.0.0.1:{server.port}"
            path = f"/api/loans/{seeded['loan_id']}"
            get = build_request("GET", path, host, seeded["headers"])
            schedule = build_request("GET", f"{path}/schedule", host, seeded["headers"])
            _load(server, get, WARMUP, f"{label} warm-up")
            out["get"] = _load(server, get, requests, f"{label} GET {path}")
            out["get_one_client"] = _load(server, get, SINGLE_REQUESTS, f"{label} GET {path}", 1)
            out["schedule"] = _load(server, schedule, SCHEDULE_REQUESTS, f"{label} schedule")
        verified, verify_output = run.verify()
        out["bank_verify"] = verified
        out["verify_output"] = verify_output
    finally:
        run.drop()
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    return out


def targets(loans: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, limit: str, ok: bool) -> None:
        out.append({"target": name, "value": value, "limit": limit, "pass": bool(ok)})

    for engine, t in loans.items():
        label = f"loans {engine} {t['workers']}w c={t['concurrency']}"
        p99 = t["get"]["p99_ms"]
        add(
            f"{label}: GET /api/loans/{{id}} p99 ms ({t['schedule_rows']} installments,"
            f" {t['seed']['repayments']} repayments)",
            p99,
            f"<= {P99_LIMIT_MS:g}",
            p99 <= P99_LIMIT_MS,
        )
        fine = (
            t["get"]["ok"] == t["get"]["requests"]
            and t["schedule"]["ok"] == t["schedule"]["requests"]
            and t["bank_verify"]
        )
        add(f"{label}: every read 200 and books verified", fine, "true", fine)
    return out


def markdown(loans: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "| loans scenario: GET /api/loans/{id} | requests | per s | p50 ms | p95 ms "
        "| p99 ms | max ms | 1 client p50 / p99 ms | schedule p50 / p99 ms "
        "| seeding: 1,000 repayments s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, t in loans.items():
        g, one, s = t["get"], t["get_one_client"], t["schedule"]
        lines.append(
            f"| {engine} {t['workers']}w c={t['concurrency']} | {g['requests']} "
            f"| {g['per_second']:.0f} | {g['p50_ms']:.1f} | {g['p95_ms']:.1f} "
            f"| {g['p99_ms']:.1f} | {g['max_ms']:.0f} | {one['p50_ms']:.1f} / {one['p99_ms']:.1f} "
            f"| {s['p50_ms']:.1f} / {s['p99_ms']:.1f} | {t['seed']['repayments_s']} |"
        )
    return lines
