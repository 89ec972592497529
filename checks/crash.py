"""`make crashtest`: kill -9 the server mid-load, restart it, and check that nothing was
lost or done twice (issue 17).

For each engine (SQLite always; PostgreSQL too when BANK_CRASH_DATABASE_URL names a
server, on a temporary database there), customers with one account each are seeded
through the service layer, `bank serve --workers 2` is started, and then, each cycle:

1. concurrent httpx clients send transfers between the seeded accounts, each with its
   own Idempotency-Key (also its description; some amounts exceed the balance), and now
   and then a registration (multipart, two 1x1 PNG documents; registrations take no key);
2. at a random moment the server's whole process group is killed with SIGKILL;
3. the server is restarted on the same data directory and database; which unanswered
   requests committed before the kill is read from the database (read-only), and every
   unanswered request is sent again, with the same Idempotency-Key and body;
4. the checks, over every request of the run so far:
   - a re-sent transfer that committed comes back 201 with `Idempotent-Replayed: true`
     and the committed transaction id, one that did not is executed now (no replay); a
     re-sent registration that committed comes back 409 `username_taken` (executed
     once), one that did not comes back 201;
   - every transfer answered 201 is in the ledger exactly once (one journal with its key
     as description and the answer's transaction id), none answered 4xx is, and there is
     no journal nobody asked for; a 201's key is filed with its answer, a refused one's
     is not, none is left in progress; every registration answered 201 (or 409 after a
     committed first try) has its user, no other has, and no username appears twice;
   - the total of the customers' balances is what was seeded (transfers only move money
     between the seeded accounts), plus the principal of the loans paid out, less the
     loan repayments answered 201: drift 0.00;
   - every registered customer leaves `Pending KYC Approval` within KYC_WAIT_S of the
     kill, restart included (the job sweeper runs what the kill left behind; the server
     sweeps every 0.5 s with a 5 s lease here), and no job failed;
   - no movement is scored twice or never: the fraud score queue (read right after the
     kill, before the restart: what the kill left queued, and leased mid-batch) is empty
     within SCORE_WAIT_S of the kill (a batch the kill left leased is taken again once
     its lease runs out: the server runs with BANK_FRAUD_LEASE_SECONDS=3 here, 10 s by
     default); then every journal of kind deposit, withdrawal or transfer (the seeded
     opening deposits too) has exactly one fraud_scores row and `flagged` set (not
     NULL), no score belongs to a journal that does not exist (or is of another kind),
     no journal id appears twice across all flags' transaction_ids, and `flagged` is
     true exactly for the journals some flag lists (their score naming that flag, a
     false one's naming none);
   - `bank verify` exits 0;
   - no 5xx, no connection error but those the kill caused, and no 4xx but a refused
     transfer (`insufficient_funds`, `daily_limit_exceeded`) or that 409.
After the last cycle every seeded customer's transaction history and balance are read
through the API too: each transfer answered 201 exactly once, no other, same total.

Loans (checks/crash_loans.py has the details): during each load LOAN_CLIENTS more clients
apply for loans (the payers personal loans, the demo customer home loans at or above the
four-eyes threshold), have three admins (the demo admin and two made through the API)
approve them concurrently (sometimes racing a rejection or the borrower's withdrawal), and
repay them with an Idempotency-Key; the unanswered ones are re-sent after the restart like
the rest, and the checks find every loan disbursed once (by its journal), every repayment
key executed at most once, each loan's outstanding principal what its repayments left,
and the answers as the database has them.

    python -m checks.crash [--cycles-sqlite 10] [--cycles-postgres 5] [--seed N]

Money is counted in integer cents and shown as two-place Decimals. The seed fixes the
random choices (amounts, accounts, kill delays), not how the kill meets the server's
work; a failed run prints it, the failures, and where its server log was kept.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from bench.seed import PNG, SeededCustomer, seed_customers
from bench.server import BANK, ROOT, Server
from checks import crash_loans
from checks.answers import Answer, money
from checks.crash_books import PENDING_KYC, Books, LoanBooks, Scoring
from checks.crash_loans import (
    ADMIN_PASSWORD,
    EXTRA_ADMINS,
    FOUR_EYES_CENTS,
    LOAN_CLIENTS,
    LOAN_KEY_PREFIX,
    Admin,
    Before,
    Borrower,
    LoanCall,
    LoanTraffic,
)
from checks.live import DEMO, add_demo_users, fresh_environment

WORKERS = 2
CLIENTS = 12
CUSTOMERS = 12
OPENING_CENTS = 50_000  # 500.00 per seeded account
REGISTRATION_SHARE = 0.03
LARGE_SHARE = 0.15  # of transfers: 100.00 to 600.00, often more than the balance
KILL_AFTER_S = (0.4, 1.8)
LOAN_CONNECTIONS = 4 * LOAN_CLIENTS + 8  # a decision burst is up to five requests at once
KYC_WAIT_S = 30.0
SERVER_ENV = {
    # A job left queued is swept within half a second of the restart, one left running
    # by the kill within its lease (defaults: a sweep every 3 s, a 60 s lease).
    "BANK_JOB_SWEEP_SECONDS": "0.5",
    "BANK_JOB_LEASE_SECONDS": "5",
    # A scoring batch the kill left leased is taken again once its lease runs out (the
    # scorer sweeps every BANK_FRAUD_SWEEP_SECONDS, 1 s by default; a 10 s lease).
    "BANK_FRAUD_LEASE_SECONDS": "3",
    # The loans' checks hold the four-eyes loans to two approvals at this threshold.
    "BANK_FOUR_EYES_THRESHOLD": f"{Decimal(FOUR_EYES_CENTS) / 100:.2f}",
}
SCORE_WAIT_S = int(SERVER_ENV["BANK_FRAUD_LEASE_SECONDS"]) + 15.0  # from the kill
TRANSFER, REGISTRATION = "transfer", "registration"
KEY_PREFIX, USER_PREFIX, PAYER_PREFIX = "crash-", "reg", "payer"
TRANSFER_REFUSALS = frozenset({"insufficient_funds", "daily_limit_exceeded"})
DUPLICATE = "username_taken"


LOG_ALARMS = ("ERROR", "Traceback", "Exception", "CRITICAL")


@dataclass(slots=True)
class Call:
    """One request as the client knows it: what it sends, and what came back."""

    kind: str
    name: str  # a transfer's Idempotency-Key (and description), a registration's username
    payload: dict[str, str]
    token: str | None = None
    first: Answer | None = None
    resent: Answer | None = None
    dropped_by_kill: bool = False

    @property
    def final(self) -> Answer | None:
        return self.resent or self.first

    @property
    def answers(self) -> list[Answer]:
        return [a for a in (self.first, self.resent) if a is not None]


async def send(client: httpx.AsyncClient, call: Call) -> Answer:
    if call.kind == TRANSFER:
        headers = {"Authorization": f"Bearer {call.token}", "Idempotency-Key": call.name}
        response = await client.post(
            "/api/transactions/transfer", json=call.payload, headers=headers
        )
    else:
        files = {
            "id_document": ("passport.png", PNG, "image/png"),
            "address_proof": ("utility-bill.png", PNG, "image/png"),
        }
        response = await client.post("/api/customers/register", data=call.payload, files=files)
    return Answer.of(response)


class Traffic:
    """The requests the clients send: mostly transfers, now and then a registration."""

    def __init__(self, rng: random.Random, accounts: list[str], tokens: list[str]) -> None:
        self.rng, self.accounts, self.tokens = rng, accounts, tokens
        self.count = 0

    def next_call(self, cycle: int) -> Call:
        self.count += 1
        if self.rng.random() < REGISTRATION_SHARE:
            return self.registration(f"{USER_PREFIX}{cycle}n{self.count}")
        return self.transfer(f"{KEY_PREFIX}{cycle}-{self.count}")

    def transfer(self, key: str) -> Call:
        rng, n = self.rng, len(self.accounts)
        source = rng.randrange(n)
        target = (source + 1 + rng.randrange(n - 1)) % n
        large = rng.random() < LARGE_SHARE
        cents = rng.randint(10_000, 60_000) if large else rng.randint(1, 2_000)
        payload = {
            "from_account": self.accounts[source],
            "to_account": self.accounts[target],
            "amount": str(money(cents)),
            "description": key,
        }
        return Call(TRANSFER, key, payload, token=self.tokens[source])

    def registration(self, username: str) -> Call:
        payload = {
            "username": username,
            "email": f"{username}@crash.example",
            "password": "crash-test-password-1",
            "full_name": f"Crash Tester {self.count}",
            "date_of_birth": "1980-02-03",
            "phone": "+14155550142",
            "address": "1 Restart Road, Springfield",
            "national_id": f"CR{self.count:08d}",
        }
        return Call(REGISTRATION, username, payload)


@dataclass
class CycleNote:
    kill_after_s: float
    sent: int
    answered: int
    resent: int = 0
    replayed: int = 0
    restart_s: float = 0.0
    pending_kyc: int = 0  # registered customers still pending KYC right after the restart
    kyc_s: float = 0.0
    queued: int = 0  # movements in the score queue right after the kill (no server up)
    leased: int = 0  # of them, leased to a scorer the kill stopped mid-batch
    score_s: float = 0.0
    loan_sent: int = 0
    loan_resent: int = 0
    loan_replayed: int = 0


@dataclass
class EngineRun:
    """One engine's crash cycles: its server, its requests, and what failed."""

    label: str
    env: dict[str, str]
    cycles: int
    rng: random.Random
    calls: list[Call] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[CycleNote] = field(default_factory=list)
    unexpected_errors: int = 0
    reported: set[str] = field(default_factory=set)
    server: Server | None = None
    customers: list[SeededCustomer] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    loans: LoanTraffic | None = None
    loan_books: LoanBooks | None = None  # as the last check found them
    initial_cents: int = 0
    final_cents: int | None = None
    expected_cents: int = 0  # seeded, plus loans paid out, less repayments answered 201
    scored: int = 0  # movements scored, as the last check found them
    flagged: int = 0
    flags: int = 0
    elapsed_s: float = 0.0

    def __post_init__(self) -> None:
        self.books = Books(self.env["BANK_DATABASE_URL"])
        self.log = Path(self.env["BANK_DATA_DIR"]) / "server.log"

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def unexpected(self, cycle: int, what: str) -> None:
        """A connection error the kill did not cause (or an answer a client could not go
        on with)."""
        self.unexpected_errors += 1
        self.fail(f"cycle {cycle}: {what}")

    def fail_once(self, cycle: int, problem: str) -> None:
        """A problem of the books, reported at the first cycle that finds it."""
        if problem not in self.reported:
            self.reported.add(problem)
            self.fail(f"cycle {cycle}: {problem}")

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> None:
        await self.prepare()
        accounts = [c.account_numbers[0] for c in self.customers]
        traffic = Traffic(self.rng, accounts, self.tokens)
        for number in range(1, self.cycles + 1):
            await self.cycle(number, traffic)
        await self.check_through_api()

    async def prepare(self) -> None:
        await asyncio.to_thread(add_demo_users, self.env)  # also applies the migrations
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=Path(self.env["BANK_DATA_DIR"]),
            database_url=self.env["BANK_DATABASE_URL"],
        ).resolve_secrets()
        self.customers = await seed_customers(
            settings,
            count=CUSTOMERS,
            accounts_each=1,
            opening_minor=OPENING_CENTS,
            prefix=PAYER_PREFIX,
        )
        self.initial_cents = self.expected_cents = await self.books.customer_total()
        await self.start_server()
        self.tokens = await self.login()
        self.loans = await self.loan_traffic()

    async def cycle(self, number: int, traffic: Traffic) -> None:
        calls, loan_calls, kill_after = await self.load_until_killed(number, traffic)
        self.calls += calls
        killed_at = time.perf_counter()
        queue = await self.books.score_queue()  # as the kill left it
        await self.start_server()
        note = CycleNote(kill_after, len(calls), sum(c.first is not None for c in calls))
        note.restart_s = time.perf_counter() - killed_at
        note.pending_kyc = len(await self.pending_kyc())
        note.queued = len(queue)
        note.leased = sum(owner is not None for _, owner, _ in queue)
        unanswered = [c for c in calls if c.first is None]
        loans_unanswered = [c for c in loan_calls if c.first is None]
        committed = await self.committed(unanswered)
        before = Before(await self.books.filed(LOAN_KEY_PREFIX), await self.books.loan_books())
        await self.resend(number, unanswered)
        await self.resend_loans(number, loans_unanswered, before)
        note.resent = len(unanswered)
        note.replayed = sum(bool(c.resent and c.resent.replayed) for c in unanswered)
        note.loan_sent = len(loan_calls)
        note.loan_resent = len(loans_unanswered)
        note.loan_replayed = sum(bool(c.resent and c.resent.replayed) for c in loans_unanswered)
        self.check_resent(number, unanswered, committed)
        self.check_answers(number, calls)
        self.check_loan_answers(number, loan_calls, before)
        await self.check_books(number)
        note.kyc_s = await self.wait_for_kyc(number, killed_at)
        note.score_s = await self.wait_for_scoring(number, killed_at)
        await self.check_scoring(number)
        await asyncio.to_thread(self.verify, number)
        self.notes.append(note)
        print(
            f"  cycle {number:2}: killed after {kill_after:.2f} s: {note.sent} sent, "
            f"{note.answered} answered, {note.resent} re-sent ({note.replayed} replayed); "
            f"restart {note.restart_s:.1f} s; {note.pending_kyc} pending KYC then, "
            f"none {note.kyc_s:.1f} s after the kill; {note.queued} queued for scoring "
            f"at the kill ({note.leased} leased), none {note.score_s:.1f} s after; "
            f"loans: {note.loan_sent} requests, {note.loan_resent} re-sent "
            f"({note.loan_replayed} replayed)",
            flush=True,
        )

    # -- the server ------------------------------------------------------------------

    async def start_server(self) -> None:
        self.server = await asyncio.to_thread(Server(self.env, WORKERS, self.log).__enter__)

    def kill_server(self) -> None:
        """SIGKILL to the whole process group (the supervisor and its workers); back
        when none of them runs any more."""
        assert self.server is not None and self.server.process is not None
        pid = self.server.process.pid
        os.killpg(pid, signal.SIGKILL)
        self.server.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while living_members(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)

    def client(self, connections: int = CLIENTS) -> httpx.AsyncClient:
        assert self.server is not None
        return httpx.AsyncClient(
            base_url=self.server.base_url,
            timeout=30,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def login(self) -> list[str]:
        tokens = []
        async with self.client() as client:
            for customer in self.customers:
                response = await client.post(
                    "/api/auth/token",
                    data={"username": customer.username, "password": customer.password},
                )
                response.raise_for_status()
                tokens.append(response.json()["access_token"])
        return tokens

    async def loan_traffic(self) -> LoanTraffic:
        """The loan clients' cast: the payers and the demo customer (its checking account
        gets the four-eyes loans) borrow; the demo admin and two more, made through the
        API, decide."""
        async with self.client() as client:

            async def token(username: str, password: str) -> str:
                response = await client.post(
                    "/api/auth/token", data={"username": username, "password": password}
                )
                response.raise_for_status()
                return response.json()["access_token"]

            async def get(path: str, bearer: str) -> Any:
                response = await client.get(path, headers={"Authorization": f"Bearer {bearer}"})
                response.raise_for_status()
                return response.json()

            first_admin = await token(*DEMO["admin"])
            for username in EXTRA_ADMINS:
                response = await client.post(
                    "/api/admin/users",
                    json={
                        "username": username,
                        "email": f"{username}@crash.example",
                        "password": ADMIN_PASSWORD,
                        "role": "admin",
                    },
                    headers={"Authorization": f"Bearer {first_admin}"},
                )
                response.raise_for_status()
            admins = []
            for username, password in [DEMO["admin"], *((a, ADMIN_PASSWORD) for a in EXTRA_ADMINS)]:
                bearer = await token(username, password)
                me = await get("/api/auth/me", bearer)
                admins.append(Admin(username, bearer, int(me["user_id"])))
            demo_token = await token(*DEMO["customer"])
            demo_accounts = (await get("/api/accounts", demo_token))["items"]
            demo = Borrower(
                DEMO["customer"][0], demo_token, demo_accounts[0]["account_number"], demo=True
            )
        borrowers = [
            Borrower(c.username, t, c.account_numbers[0])
            for c, t in zip(self.customers, self.tokens, strict=True)
        ]
        return LoanTraffic(self.rng, borrowers, demo, admins)

    # -- load, kill, re-send -----------------------------------------------------------

    async def load_until_killed(
        self, cycle: int, traffic: Traffic
    ) -> tuple[list[Call], list[LoanCall], float]:
        calls: list[Call] = []
        loan_calls: list[LoanCall] = []
        killed = asyncio.Event()
        kill_after = self.rng.uniform(*KILL_AFTER_S)

        async def client_loop(client: httpx.AsyncClient) -> None:
            while not killed.is_set():
                call = traffic.next_call(cycle)
                calls.append(call)
                try:
                    call.first = await send(client, call)
                except httpx.TransportError as exc:
                    if killed.is_set():
                        call.dropped_by_kill = True
                    else:
                        self.unexpected_errors += 1
                        self.fail(f"cycle {cycle}: {call.kind} {call.name}: {describe(exc)}")
                    return

        async def killer() -> None:
            await asyncio.sleep(kill_after)
            killed.set()  # before the signal: every error after it is the kill's
            self.kill_server()

        assert self.loans is not None
        loans, unexpected = self.loans, functools.partial(self.unexpected, cycle)
        async with self.client() as client, self.client(LOAN_CONNECTIONS) as loan_client:
            await asyncio.gather(
                killer(),
                *(client_loop(client) for _ in range(CLIENTS)),
                *(
                    loans.run_client(loan_client, cycle, killed, loan_calls, unexpected)
                    for _ in range(LOAN_CLIENTS)
                ),
            )
        return calls, loan_calls, kill_after

    async def committed(self, calls: list[Call]) -> dict[str, str]:
        """Which of the unanswered requests committed before the kill: a transfer's key →
        its transaction id, a registration's username → ''."""
        journals = await self.books.transfers(KEY_PREFIX)
        users = await self.books.customers(USER_PREFIX)
        found: dict[str, str] = {}
        for call in calls:
            if call.kind == TRANSFER and call.name in journals:
                found[call.name] = journals[call.name].transaction_id
            elif call.kind == REGISTRATION and call.name in users:
                found[call.name] = ""
        return found

    async def resend(self, cycle: int, calls: list[Call]) -> None:
        gate = asyncio.Semaphore(CLIENTS)

        async def again(client: httpx.AsyncClient, call: Call) -> None:
            async with gate:
                try:
                    call.resent = await send(client, call)
                except httpx.TransportError as exc:
                    self.unexpected_errors += 1
                    self.fail(f"cycle {cycle}: re-sent {call.kind} {call.name}: {describe(exc)}")

        async with self.client() as client:
            await asyncio.gather(*(again(client, call) for call in calls))

    async def resend_loans(self, cycle: int, calls: list[LoanCall], before: Before) -> None:
        """The unanswered loan requests again, as they were, once it is known which had
        committed."""
        assert self.loans is not None
        self.loans.mark_committed(calls, before)
        async with self.client(LOAN_CONNECTIONS) as client:
            await self.loans.resend(client, calls, functools.partial(self.unexpected, cycle))

    # -- the checks --------------------------------------------------------------------

    def check_resent(self, cycle: int, calls: list[Call], committed: dict[str, str]) -> None:
        for call in calls:
            if call.resent is None:
                continue  # its connection error is a failure already
            if call.kind == TRANSFER:
                problem = resent_transfer_problem(call.resent, committed.get(call.name))
            else:
                problem = resent_registration_problem(call.resent, call.name in committed)
            if problem:
                self.fail(f"cycle {cycle}: re-sent {call.kind} {call.name}: {problem}")

    def check_answers(self, cycle: int, calls: list[Call]) -> None:
        for call in calls:
            for answer in call.answers:
                if (problem := answer_problem(call, answer)) is not None:
                    self.fail(f"cycle {cycle}: {call.kind} {call.name}: {problem}")

    def check_loan_answers(self, cycle: int, calls: list[LoanCall], before: Before) -> None:
        for call in calls:
            if call.resent is not None:
                problem = crash_loans.resent_problem(call, call.resent, before)
                if problem:
                    self.fail(f"cycle {cycle}: re-sent {call.label()}: {problem}")
            for answer in call.answers:
                if (problem := crash_loans.answer_problem(call, answer)) is not None:
                    self.fail(f"cycle {cycle}: {call.label()}: {problem}")

    async def check_loans(self, cycle: int) -> None:
        """The loans against every loan request so far; the money they moved goes into
        the customers' expected total."""
        assert self.loans is not None
        books = self.loan_books = await self.books.loan_books()
        filed = await self.books.filed(LOAN_KEY_PREFIX)
        for problem in crash_loans.loan_problems(self.loans.calls, books, filed):
            self.fail_once(cycle, f"loans: {problem}")
        paid_out, repaid = self.loans.flows(books)
        self.expected_cents = self.initial_cents + paid_out - repaid
        self.loans.sync(books)

    async def check_books(self, cycle: int) -> None:
        journals = await self.books.transfers(KEY_PREFIX)
        for problem in ledger_problems(self.calls, journals):
            self.fail_once(cycle, f"ledger: {problem}")
        keys = await self.books.idempotency_keys(KEY_PREFIX)
        for problem in key_problems(self.calls, keys):
            self.fail_once(cycle, f"idempotency keys: {problem}")
        users = await self.books.customers(USER_PREFIX)
        for problem in registration_problems(self.calls, users):
            self.fail_once(cycle, f"registrations: {problem}")
        for name in await self.books.duplicate_usernames():
            self.fail_once(cycle, f"username {name!r} appears more than once")
        await self.check_loans(cycle)
        self.final_cents = await self.books.customer_total()
        if self.final_cents != self.expected_cents:
            self.fail(
                f"cycle {cycle}: customer balances total {money(self.final_cents)}, "
                f"expected {money(self.expected_cents)} (seeded {money(self.initial_cents)}, "
                f"with the loans' money): drift {self.drift}"
            )
        failed_jobs = (await self.books.job_states()).get("failed", 0)
        if failed_jobs:
            self.fail_once(cycle, f"{failed_jobs} background jobs failed")

    async def wait_for_kyc(self, cycle: int, killed_at: float) -> float:
        """Seconds from the kill until no registered customer is pending KYC (at most
        KYC_WAIT_S: the restart and the checks before count against it)."""
        while True:
            pending = await self.pending_kyc()
            waited = time.perf_counter() - killed_at
            if not pending:
                return waited
            if waited > KYC_WAIT_S:
                self.fail(
                    f"cycle {cycle}: {len(pending)} customers still {PENDING_KYC!r} "
                    f"{KYC_WAIT_S:.0f} s after the kill: {', '.join(pending[:10])}"
                )
                return waited
            await asyncio.sleep(0.2)

    async def wait_for_scoring(self, cycle: int, killed_at: float) -> float:
        """Seconds from the kill until the fraud score queue is empty (it fails only if
        it is not within SCORE_WAIT_S; the first look comes after the KYC wait, so a
        longer one is an upper bound)."""
        while True:
            queue = await self.books.score_queue()
            waited = time.perf_counter() - killed_at
            if not queue:
                return waited
            if waited > SCORE_WAIT_S:
                leased = sum(owner is not None for _, owner, _ in queue)
                sample = ", ".join(
                    f"{journal} ({f'leased to {owner} until {until}' if owner else 'unleased'})"
                    for journal, owner, until in queue[:10]
                )
                self.fail(
                    f"cycle {cycle}: {len(queue)} movements still queued for scoring "
                    f"({leased} leased) {SCORE_WAIT_S:.0f} s after the kill: {sample}"
                )
                return waited
            await asyncio.sleep(0.2)

    async def check_scoring(self, cycle: int) -> None:
        scoring = await self.books.scoring()
        for problem in scoring_problems(scoring):
            self.fail_once(cycle, f"fraud scoring: {problem}")
        self.scored = sum(m.scores > 0 for m in scoring.movements.values())
        self.flagged = sum(bool(m.flagged) for m in scoring.movements.values())
        self.flags = len(scoring.flags)

    async def pending_kyc(self) -> list[str]:
        statuses = await self.books.customers(USER_PREFIX)
        return sorted(name for name, status in statuses.items() if status == PENDING_KYC)

    def verify(self, cycle: int) -> None:
        done = subprocess.run(
            [BANK, "verify"],
            env={**os.environ, **self.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()[-2000:]
            self.fail(f"cycle {cycle}: bank verify exited {done.returncode}:\n{output}")

    async def check_through_api(self) -> None:
        """Each seeded customer's history (as the payer) and balance, through the API."""
        sent_by_api: Counter[str] = Counter()
        ids: dict[str, str] = {}
        total = Decimal("0.00")
        async with self.client() as client:
            for customer, token in zip(self.customers, self.tokens, strict=True):
                async for item in crash_loans.listed(client, token, "/api/transactions"):
                    if (
                        item["type"] == TRANSFER
                        and item["from_account"] in customer.account_numbers
                    ):
                        sent_by_api[item["description"]] += 1
                        ids[item["description"]] = item["transaction_id"]
                for number in customer.account_numbers:
                    total += await balance(client, token, number)
            assert self.loans is not None and self.loan_books is not None
            loans = self.loans
            borrowers = [*loans.borrowers, loans.demo]
            for problem in await crash_loans.api_problems(client, borrowers, self.loan_books):
                self.fail(f"loans (API): {problem}")
            total += await balance(client, loans.demo.token, loans.demo.account)
        for problem in history_problems(self.calls, sent_by_api, ids):
            self.fail(f"transaction history (API): {problem}")
        if total != money(self.expected_cents):
            self.fail(
                f"balances (API) total {total}, expected {money(self.expected_cents)}"
                f" (seeded {money(self.initial_cents)}, with the loans' money)"
            )

    # -- the report --------------------------------------------------------------------

    @property
    def drift(self) -> Decimal | None:
        if self.final_cents is None:
            return None  # stopped before the first check
        return money(self.final_cents - self.expected_cents)

    def report(self) -> list[str]:
        calls = self.calls
        finals = [c.final for c in calls if c.final is not None]
        refusals = Counter(a.code for a in finals if 400 <= a.status < 500)
        server_errors = sum(a.status >= 500 for c in calls for a in c.answers)
        kinds = Counter(c.kind for c in calls)
        dropped = sum(c.dropped_by_kill for c in calls)
        return [
            f"{self.label}: {len(self.notes)} cycles in {self.elapsed_s:.1f} s",
            f"  requests sent                  {len(calls)} ({kinds[TRANSFER]} transfers, "
            f"{kinds[REGISTRATION]} registrations)",
            f"  answers seen before the kill   {sum(c.first is not None for c in calls)}",
            f"  re-sent                        {sum(n.resent for n in self.notes)} "
            f"({dropped} dropped by the kill)",
            f"  replays (Idempotent-Replayed)  {sum(n.replayed for n in self.notes)}",
            f"  201                            {sum(a.status == 201 for a in finals)}",
            f"  4xx                            {sum(refusals.values())} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(refusals.items(), key=str)) or '-'})",
            f"  5xx / connection errors        {server_errors + self.unexpected_errors}",
            f"  KYC                            {sum(map(registered, calls))} registered, "
            f"{sum(n.pending_kyc for n in self.notes)} pending at a restart, none after "
            f"{max((n.kyc_s for n in self.notes), default=0):.1f} s at most",
            f"  fraud scoring                  {self.scored} movements scored "
            f"({self.flagged} flagged, in {self.flags} flags), "
            f"{sum(n.queued for n in self.notes)} queued at a kill "
            f"({sum(n.leased for n in self.notes)} leased, in "
            f"{sum(n.leased > 0 for n in self.notes)} cycles), none after "
            f"{max((n.score_s for n in self.notes), default=0):.1f} s at most",
            *(self.loans.report(self.loan_books) if self.loans else []),
            f"  drift                          {self.drift if self.drift is not None else '-'}"
            f" (customer balances {money(self.initial_cents)} before, "
            f"{money(self.final_cents) if self.final_cents is not None else '-'} after, "
            f"{money(self.expected_cents)} expected)",
        ]


def living_members(group: int) -> int:
    """Processes of a process group that are not dead yet (Linux /proc; a zombie, dead
    but not yet reaped by init, does not count)."""
    living = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _parent, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        living += int(pgrp) == group and state != "Z"
    return living


def describe(exc: Exception) -> str:
    return f"connection error {type(exc).__name__}: {exc}"


def resent_transfer_problem(answer: Answer, committed_id: str | None) -> str | None:
    if committed_id is None:
        return "nothing had committed, yet it was answered as a replay" if answer.replayed else None
    if answer.status != 201 or not answer.replayed:
        return (
            f"committed before the kill (transaction {committed_id}), answered {answer}"
            " without Idempotent-Replayed: true"
        )
    if answer.transaction_id != committed_id:
        return f"replayed transaction {answer.transaction_id}, the ledger has {committed_id}"
    return None


def resent_registration_problem(answer: Answer, committed: bool) -> str | None:
    if committed and (answer.status, answer.code) != (409, DUPLICATE):
        return f"committed before the kill, answered {answer} (expected 409 {DUPLICATE})"
    if not committed and answer.status != 201:
        return f"had not committed, answered {answer} (expected 201)"
    return None


def answer_problem(call: Call, answer: Answer) -> str | None:
    if answer.status >= 500:
        return f"server error {answer}"
    if answer.status == 201:
        return None
    if call.kind == TRANSFER and answer.status == 422 and answer.code in TRANSFER_REFUSALS:
        return None
    if call.kind == REGISTRATION and answer is call.resent and answer.code == DUPLICATE:
        return None  # the first try committed (check_resent holds it to that)
    return f"unexpected answer {answer}"


def registered(call: Call) -> bool:
    """Whether the client may take the registration as executed once."""
    final = call.final
    return (
        call.kind == REGISTRATION
        and final is not None
        and (final.status == 201 or (final is call.resent and final.code == DUPLICATE))
    )


def ledger_problems(calls: Iterable[Call], journals: dict[str, Any]) -> Iterable[str]:
    transfers = [c for c in calls if c.kind == TRANSFER]
    for call in transfers:
        final, posted = call.final, journals.get(call.name)
        if final is None:
            continue  # never answered: a failure already
        if final.status == 201:
            if posted is None or posted.count != 1:
                yield f"{call.name} answered 201, {posted.count if posted else 0} journals"
            elif posted.transaction_id != final.transaction_id:
                yield (
                    f"{call.name} answered transaction {final.transaction_id}, "
                    f"the ledger has {posted.transaction_id}"
                )
        elif posted is not None:
            yield f"{call.name} answered {final}, yet {posted.count} journals hold it"
    unknown = sorted(set(journals) - {c.name for c in transfers})
    if unknown:
        yield f"{len(unknown)} journals no client asked for: {', '.join(unknown[:10])}"


def key_problems(calls: Iterable[Call], keys: dict[str, tuple[int, str | None]]) -> Iterable[str]:
    """A transfer answered 201 has its key filed with that answer; a refused one has
    none (its transaction rolled back); no key is left in progress after a restart."""
    transfers = [c for c in calls if c.kind == TRANSFER and c.final is not None]
    for call in transfers:
        assert call.final is not None
        filed = keys.get(call.name)
        if call.final.status == 201 and filed != (201, call.final.transaction_id):
            yield f"{call.name} answered {call.final}, filed {filed}"
        elif call.final.status != 201 and filed is not None:
            yield f"{call.name} answered {call.final}, yet filed {filed}"
    stuck = sorted(name for name, (status, _) in keys.items() if status == 0)
    if stuck:
        yield f"{len(stuck)} keys still in progress after the restart: {', '.join(stuck[:10])}"


def registration_problems(calls: Iterable[Call], users: dict[str, str | None]) -> Iterable[str]:
    registrations = [c for c in calls if c.kind == REGISTRATION]
    for call in registrations:
        if call.final is None:
            continue
        if call.name in users and users[call.name] is None:
            yield f"{call.name}: a user without a customer"
        if registered(call) != (call.name in users):
            state = "exists" if call.name in users else "is missing"
            yield f"{call.name} answered {call.final}, yet its user {state}"
    unknown = sorted(set(users) - {c.name for c in registrations})
    if unknown:
        yield f"users nobody registered: {', '.join(unknown[:10])}"


def shown(ids: Iterable[int], most: int = 10) -> str:
    ids = sorted(ids)
    more = f" and {len(ids) - most} more" if len(ids) > most else ""
    return ", ".join(map(str, ids[:most])) + more


def scoring_problems(scoring: Scoring) -> Iterable[str]:
    """Every movement scored exactly once, `flagged` set to whether a flag lists it, and
    each journal on one flag at most (see the module's docstring)."""
    movements = scoring.movements
    never = [j for j, m in movements.items() if m.scores == 0]
    if never:
        yield f"{len(never)} movements never scored (queue empty): journals {shown(never)}"
    twice = [j for j, m in movements.items() if m.scores > 1]
    if twice:
        yield f"{len(twice)} movements scored more than once: journals {shown(twice)}"
    missing = [j for j, kind in scoring.strays.items() if kind is None]
    if missing:
        yield f"{len(missing)} scores of journals that do not exist: {shown(missing)}"
    others = {j: kind for j, kind in scoring.strays.items() if kind is not None}
    if others:
        kinds = ", ".join(sorted(set(others.values())))
        yield f"{len(others)} scores of journals that are no movement ({kinds}): {shown(others)}"
    unset = [j for j, m in movements.items() if m.flagged is None]
    if unset:
        yield f"{len(unset)} movements with flagged NULL: journals {shown(unset)}"
    on_flags: dict[int, list[int]] = {}
    for flag, ids in scoring.flags.items():
        for journal in ids:
            on_flags.setdefault(journal, []).append(flag)
    listed = set(on_flags)
    again = {j: flags for j, flags in on_flags.items() if len(flags) > 1}
    if again:
        sample = "; ".join(
            f"{j} (flags {', '.join(map(str, again[j]))})" for j in sorted(again)[:10]
        )
        yield f"{len(again)} journals listed more than once across the flags: {sample}"
    strangers = listed - set(movements)
    if strangers:
        yield f"flags list journals that are no movement: {shown(strangers)}"
    flagged = {j for j, m in movements.items() if m.flagged}
    if flagged - listed:
        yield f"flagged, yet on no flag: journals {shown(flagged - listed)}"
    cleared = {j for j, m in movements.items() if m.flagged is False} & listed
    if cleared:
        yield f"flagged false, yet on a flag: journals {shown(cleared)}"
    scored = {j: m for j, m in movements.items() if m.scores}
    wrong = [j for j, m in scored.items() if m.flag_id not in (None, *on_flags.get(j, []))]
    if wrong:
        yield f"{len(wrong)} scores name a flag that does not list them: journals {shown(wrong)}"
    nameless = [j for j, m in scored.items() if m.flag_id is None and j in on_flags]
    if nameless:
        yield f"{len(nameless)} journals on a flag whose score names none: {shown(nameless)}"


def history_problems(
    calls: Iterable[Call], sent_by_api: Counter[str], ids: dict[str, str]
) -> Iterable[str]:
    transfers = [c for c in calls if c.kind == TRANSFER and c.final is not None]
    for call in transfers:
        assert call.final is not None
        expected = 1 if call.final.status == 201 else 0
        if sent_by_api[call.name] != expected:
            yield f"{call.name} answered {call.final}, listed {sent_by_api[call.name]} times"
        elif expected and ids[call.name] != call.final.transaction_id:
            yield f"{call.name} answered {call.final.transaction_id}, listed {ids[call.name]}"
    unknown = sorted(set(sent_by_api) - {c.name for c in transfers})
    if unknown:
        yield f"{len(unknown)} transfers nobody asked for: {', '.join(unknown[:10])}"


async def balance(client: httpx.AsyncClient, token: str, number: str) -> Decimal:
    response = await client.get(
        f"/api/accounts/{number}", headers={"Authorization": f"Bearer {token}"}
    )
    response.raise_for_status()
    return Decimal(response.json()["balance"])


# -- running the engines ----------------------------------------------------------------


def run_engine(label: str, database_url: str | None, cycles: int, rng: random.Random) -> EngineRun:
    print(
        f"== {label}: {cycles} kill -9 cycles, {WORKERS} workers, {CLIENTS} clients"
        f" (and {LOAN_CLIENTS} on loans)",
        flush=True,
    )
    started = time.perf_counter()
    with fresh_environment(database_url) as env:
        env = {**env, **SERVER_ENV}
        env.setdefault("BANK_DATABASE_URL", f"sqlite+aiosqlite:///{env['BANK_DATA_DIR']}/bank.db")
        run = EngineRun(label, env, cycles, rng)
        try:
            asyncio.run(run.run())
        except Exception as exc:
            traceback.print_exc()
            run.fail(f"the run stopped: {type(exc).__name__}: {exc}")
        finally:
            run.stop_server()
            run.elapsed_s = time.perf_counter() - started
        if run.failures:
            keep_log(run)
    return run


def keep_log(run: EngineRun) -> None:
    if not run.log.exists():
        return
    kept = Path(tempfile.gettempdir()) / f"crashtest-{run.label.lower()}-{os.getpid()}.log"
    shutil.copyfile(run.log, kept)
    lines = run.log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if any(word in line for word in LOG_ALARMS)]
    print(f"  server log kept at {kept}; " + ("its errors:" if errors else "its end:"))
    print("    " + "\n    ".join(errors[:40] or lines[-20:]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m checks.crash", description="kill -9 crash-and-restart test"
    )
    parser.add_argument("--cycles-sqlite", type=int, default=10, help="kill cycles on SQLite")
    parser.add_argument(
        "--cycles-postgres",
        type=int,
        default=5,
        help="kill cycles on PostgreSQL (run when BANK_CRASH_DATABASE_URL is set)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    print(f"crashtest: seed {seed} (repeat with --seed {seed})")
    engines: list[tuple[str, str | None, int]] = [("SQLite", None, args.cycles_sqlite)]
    if pg_url := os.environ.get("BANK_CRASH_DATABASE_URL"):
        engines.append(("PostgreSQL", pg_url, args.cycles_postgres))
    else:
        print("PostgreSQL: skipped (set BANK_CRASH_DATABASE_URL to run it too)")
    runs = [
        run_engine(label, url, cycles, random.Random(f"{seed}-{label}"))
        for label, url, cycles in engines
        if cycles > 0
    ]
    print()
    for run in runs:
        print("\n".join(run.report()))
    failures = [f"{run.label}: {message}" for run in runs for message in run.failures]
    if failures:
        print(f"\ncrashtest FAILED ({len(failures)} failed checks, seed {seed}):")
        print("\n".join(f"  - {message}" for message in failures[:50]))
        sys.exit(1)
    print(f"\ncrashtest passed (seed {seed})")


if __name__ == "__main__":
    main()
