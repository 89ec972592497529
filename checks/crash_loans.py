"""The loans of `make crashtest` (checks/crash.py): during each cycle's load LOAN_CLIENTS
more clients work the loan book next to the transfers, and the kill meets them too.

Each loan client, over and over until the kill:
- applies for a loan (`POST /api/loans` with an Idempotency-Key): a seeded payer a
  personal loan, 1000.00 to 2500.00 over 6 to 60 months, paid out to its own account;
  every FOUR_EYES_EVERY-th application is the demo customer's home loan of 100000.00 to
  250000.00 over 60 to 360 months, at or above the four-eyes threshold (the server runs
  with BANK_FOUR_EYES_THRESHOLD=100000.00, its default: two different admins approve);
- or decides a pending loan: a burst of concurrent approvals by two or three of the
  admins (all three for a four-eyes loan, now and then one of them twice), sometimes with
  the borrower withdrawing it or one admin rejecting it in the same burst, so exactly one
  of them decides it and the others are refused (409 `already_decided`, or
  `same_approver` for the admin who approved already);
- or repays an active loan from the borrower's account (`POST …/repayments` with an
  Idempotency-Key; the amount 20.00 to 400.00, or now and then exactly the payoff amount
  read just before, which pays it off), and now and then a dry run instead.
At most MAX_OPEN loans are pending or active at a time, so the money paid out into the
payers' accounts stays small next to what the transfers move.

After the restart every unanswered request is sent again as it was: an application or a
repayment with the same Idempotency-Key and body, a decision as it was. Which of them had
committed before the kill is read from the database first: a filed key (application,
repayment), the admin's loan_approvals row (approval), the loan's status (rejection,
withdrawal). The checks, over every loan request of the run so far:
- a re-sent application or repayment that committed comes back 201 with
  `Idempotent-Replayed: true` and the loan or repayment filed, one that did not is
  executed now (no replay); a re-sent decision that committed is refused (409), never
  executed again;
- every application answered 201 is one loan, and there is no other; the approvals in the
  database are exactly the approvals answered 200 or committed before their resend; an
  active or paid-off loan has as many approvals (from different admins) as it requires, two
  at or above the threshold; a loan answered `active`, `rejected` or `withdrawn` is so;
- no loan was disbursed twice: exactly one journal of kind `disbursement` per active or
  paid-off loan (its description `Loan <id> disbursement`, its amount the principal, to the
  loan's account, its id the loan's disbursement_id), none for a pending, rejected or
  withdrawn one, none of a loan that does not exist;
- every repayment key executed at most once: as many loan_repayments rows as distinct
  keys answered 201, each the repayment its answers name (same loan, same amount), each
  with its own journal of kind `repayment`, and no other repayment journal; a refused key
  is not filed, none is left in progress (dry runs write nothing: they are not counted);
- an active or paid-off loan's outstanding_principal is its principal less the principal
  parts (`principal_due`, `future_principal`) of its repayments' allocations (0 once paid
  off), any other's is 0 with no repayment; the bank's `loans` account holds minus the
  outstanding principal of all loans;
- the customers' balances total what was seeded, plus the principal of the loans paid
  out, less the repayments answered 201 (checks/crash.py: drift 0.00);
- no 5xx, and no 4xx but the refusals named above (and a repayment's
  `insufficient_funds`, `payoff_exceeded`, `payoff_required`, `loan_not_active`).
After the last cycle each borrower's loans are read through the API too (status,
principal, outstanding principal as in the database).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from checks.answers import Answer, money
from checks.crash_books import LoanBooks, cents

LOAN_CLIENTS = 2
ADMIN_PASSWORD = "crash-admin-password-1"
EXTRA_ADMINS = ("crashadmin1", "crashadmin2")  # made through the API, next to the demo admin
LOAN_KEY_PREFIX = "crashloan-"
FOUR_EYES_CENTS = (
    10_000_000  # BANK_FOUR_EYES_THRESHOLD (its default, 100000.00), set for the server
)
FOUR_EYES_EVERY = 3
PERSONAL_CENTS, PERSONAL_MONTHS = (100_000, 250_000), (6, 60)
HOME_CENTS, HOME_MONTHS = (FOUR_EYES_CENTS, 25_000_000), (60, 360)
PAYER_INCOME, DEMO_INCOME = "6000.00", "40000.00"
MAX_OPEN = 6
REPAY_CENTS = (2_000, 40_000)
PAYOFF_SHARE = 0.3
DRY_RUN_SHARE = 0.1
WITHDRAW_SHARE = 0.12  # of decision bursts: the borrower withdraws meanwhile
REJECT_SHARE = 0.08  # of decision bursts: one admin rejects instead of approving
SAME_ADMIN_SHARE = 0.3  # of four-eyes bursts: one admin approves twice
IDLE_S = 0.05

APPLY, APPROVE, REJECT, WITHDRAW = "application", "approval", "rejection", "withdrawal"
REPAY, DRY_RUN = "repayment", "dry run"
KEYED = (APPLY, REPAY)
SUCCESS = {APPLY: 201, APPROVE: 200, REJECT: 200, WITHDRAW: 200, REPAY: 201, DRY_RUN: 200}
REPAY_REFUSALS = frozenset(
    {"insufficient_funds", "payoff_exceeded", "payoff_required", "loan_not_active"}
)
REFUSALS: dict[str, frozenset[str]] = {
    APPLY: frozenset(),
    APPROVE: frozenset({"already_decided", "same_approver"}),
    REJECT: frozenset({"already_decided"}),
    WITHDRAW: frozenset({"already_decided"}),
    REPAY: REPAY_REFUSALS,
    DRY_RUN: REPAY_REFUSALS,
}
PAID_OUT = frozenset({"active", "paid_off"})
OPEN = frozenset({"unknown", "pending", "active"})


@dataclass(frozen=True, slots=True)
class Reply(Answer):
    """An answer about a loan: the loan it shows, and a repayment's id."""

    @property
    def loan(self) -> dict[str, Any]:
        """The loan as this answer shows it (a repayment's answer nests it)."""
        loan = self.body.get("loan", self.body)
        return loan if isinstance(loan, dict) else {}

    def __str__(self) -> str:
        what = self.code or self.body.get("repayment_id") or self.loan.get("status") or ""
        replay = " (replayed)" if self.replayed else ""
        return f"{self.status} {what}{replay}".strip()


@dataclass(frozen=True, slots=True)
class Borrower:
    username: str
    token: str
    account: str
    demo: bool = False


@dataclass(frozen=True, slots=True)
class Admin:
    username: str
    token: str
    user_id: int


@dataclass(slots=True)
class Case:
    """A loan as the clients know it."""

    borrower: Borrower
    principal: int
    loan_id: str | None = None  # None until its application is answered 201
    status: str = "unknown"  # as the client last learned it
    busy: bool = False  # a decision burst is on its way


@dataclass(slots=True)
class LoanCall:
    kind: str
    name: str  # an application's or repayment's Idempotency-Key; else a label
    case: Case
    token: str
    payload: dict[str, Any] | None
    admin: Admin | None = None  # who approves or rejects
    amount: int = 0  # a repayment's, in cents
    cycle: int = 0
    first: Reply | None = None
    resent: Reply | None = None
    dropped_by_kill: bool = False
    committed: bool | None = None  # unanswered: had it committed before its resend?

    @property
    def final(self) -> Reply | None:
        return self.resent or self.first

    @property
    def answers(self) -> list[Reply]:
        return [a for a in (self.first, self.resent) if a is not None]

    @property
    def succeeded(self) -> bool:
        return self.final is not None and self.final.status == SUCCESS[self.kind]

    @property
    def executed(self) -> bool:
        """Whether it took effect (once): answered success, or (a decision) committed
        before the kill left it unanswered; a keyed one that committed is answered 201."""
        return self.succeeded or (self.kind in (APPROVE, REJECT, WITHDRAW) and bool(self.committed))

    def path(self) -> str:
        loan = self.case.loan_id
        return {
            APPLY: "/api/loans",
            APPROVE: f"/api/admin/loans/{loan}/approve",
            REJECT: f"/api/admin/loans/{loan}/reject",
            WITHDRAW: f"/api/loans/{loan}/withdraw",
            REPAY: f"/api/loans/{loan}/repayments",
            DRY_RUN: f"/api/loans/{loan}/repayments?dry_run=true",
        }[self.kind]

    def label(self) -> str:
        who = f" by {self.admin.username}" if self.admin else ""
        return f"{self.kind} {self.name} (loan {self.case.loan_id or '?'}{who})"


async def send(client: httpx.AsyncClient, call: LoanCall) -> Reply:
    headers = {"Authorization": f"Bearer {call.token}"}
    if call.kind in KEYED:
        headers["Idempotency-Key"] = call.name
    return Reply.of(await client.post(call.path(), json=call.payload, headers=headers))


@dataclass
class Before:
    """What had committed when the server came back, before anything was re-sent."""

    filed: dict[str, tuple[int, dict[str, Any]]]
    books: LoanBooks


class LoanTraffic:
    """The loan clients' requests, and the loans they know of, over the whole run."""

    def __init__(
        self,
        rng: random.Random,
        borrowers: list[Borrower],
        demo: Borrower,
        admins: list[Admin],
    ) -> None:
        self.rng, self.borrowers, self.demo, self.admins = rng, borrowers, demo, admins
        self.cases: list[Case] = []
        self.calls: list[LoanCall] = []
        self.count = 0

    # -- the load --------------------------------------------------------------------

    async def run_client(
        self,
        client: httpx.AsyncClient,
        cycle: int,
        killed: asyncio.Event,
        calls: list[LoanCall],
        unexpected: Callable[[str], None],
    ) -> None:
        """One loan client until the kill: what it sends goes to `calls`; a connection
        error before the kill goes to `unexpected`."""

        async def post(call: LoanCall) -> Reply | None:
            calls.append(call)
            try:
                call.first = await send(client, call)
            except httpx.TransportError as exc:
                if killed.is_set():
                    call.dropped_by_kill = True
                else:
                    unexpected(f"{call.label()}: {type(exc).__name__}: {exc}")
                return None
            self.learn(call, call.first)
            return call.first

        while not killed.is_set():
            pending = [c for c in self.cases if c.status == "pending" and not c.busy]
            active = [c for c in self.cases if c.status == "active"]
            open_now = sum(c.status in OPEN for c in self.cases)
            if pending:
                case = self.rng.choice(pending)
                case.busy = True
                try:
                    replies = await asyncio.gather(*map(post, self.burst(case, cycle)))
                finally:
                    case.busy = False
                if None in replies:
                    return
            elif active and (open_now >= MAX_OPEN or self.rng.random() < 0.6):
                case = self.rng.choice(active)
                try:
                    view = await self.read_loan(client, case)
                except httpx.TransportError as exc:
                    if not killed.is_set():
                        unexpected(f"reading loan {case.loan_id}: {type(exc).__name__}: {exc}")
                    return
                except LookupError as exc:
                    unexpected(str(exc))
                    return
                if view is not None and await post(self.repayment(case, view, cycle)) is None:
                    return
            elif open_now < MAX_OPEN:
                if await post(self.application(cycle)) is None:
                    return
            else:
                await asyncio.sleep(IDLE_S)  # every open loan is being decided

    async def read_loan(self, client: httpx.AsyncClient, case: Case) -> dict[str, Any] | None:
        """The loan as its borrower reads it now; None (and the case updated) if it is
        no longer active."""
        response = await client.get(
            f"/api/loans/{case.loan_id}",
            headers={"Authorization": f"Bearer {case.borrower.token}"},
        )
        if response.status_code != 200:
            raise LookupError(f"reading loan {case.loan_id}: {Reply.of(response)}")
        view = response.json()
        if view["status"] != "active":
            case.status = view["status"]
            return None
        return view

    def application(self, cycle: int) -> LoanCall:
        self.count += 1
        rng = self.rng
        four_eyes = sum(1 for c in self.calls if c.kind == APPLY) % FOUR_EYES_EVERY == 0
        borrower = self.demo if four_eyes else rng.choice(self.borrowers)
        low, high = HOME_CENTS if four_eyes else PERSONAL_CENTS
        principal = rng.randint(low // 100, high // 100) * 100  # whole units
        months = rng.randint(*(HOME_MONTHS if four_eyes else PERSONAL_MONTHS))
        case = Case(borrower, principal)
        self.cases.append(case)
        payload = {
            "product": "home" if four_eyes else "personal",
            "principal": str(money(principal)),
            "term_months": months,
            "monthly_income": DEMO_INCOME if four_eyes else PAYER_INCOME,
            "account_number": borrower.account,
            "purpose": f"crash test {cycle}",
        }
        name = f"{LOAN_KEY_PREFIX}{cycle}-app{self.count}"
        call = LoanCall(APPLY, name, case, borrower.token, payload, cycle=cycle)
        self.calls.append(call)
        return call

    def burst(self, case: Case, cycle: int) -> list[LoanCall]:
        """Concurrent decisions of one pending loan."""
        rng = self.rng
        self.count += 1
        four_eyes = case.principal >= FOUR_EYES_CENTS
        admins = rng.sample(self.admins, len(self.admins) if four_eyes else rng.randint(2, 3))
        if four_eyes and rng.random() < SAME_ADMIN_SHARE:
            admins.append(rng.choice(admins))
        kinds = [APPROVE] * len(admins)
        draw = rng.random()
        if draw < REJECT_SHARE:
            kinds[0] = REJECT
        calls = [
            LoanCall(
                kind,
                f"{cycle}-d{self.count}-{i}",
                case,
                admin.token,
                {"reason": f"crash test {cycle}: {kind}"},
                admin=admin,
                cycle=cycle,
            )
            for i, (kind, admin) in enumerate(zip(kinds, admins, strict=True))
        ]
        if REJECT_SHARE <= draw < REJECT_SHARE + WITHDRAW_SHARE:
            name = f"{cycle}-d{self.count}-w"
            calls.append(LoanCall(WITHDRAW, name, case, case.borrower.token, None, cycle=cycle))
        rng.shuffle(calls)
        self.calls += calls
        return calls

    def repayment(self, case: Case, view: dict[str, Any], cycle: int) -> LoanCall:
        rng = self.rng
        self.count += 1
        payoff = cents(view["payoff_amount"])
        amount = payoff if rng.random() < PAYOFF_SHARE else min(payoff, rng.randint(*REPAY_CENTS))
        payload = {"amount": str(money(amount)), "from_account": case.borrower.account}
        if rng.random() < DRY_RUN_SHARE:
            kind, name = DRY_RUN, f"{cycle}-dry{self.count}"
        else:
            kind, name = REPAY, f"{LOAN_KEY_PREFIX}{cycle}-pay{self.count}"
        call = LoanCall(kind, name, case, case.borrower.token, payload, amount=amount, cycle=cycle)
        self.calls.append(call)
        return call

    def learn(self, call: LoanCall, reply: Reply) -> None:
        """What an answer tells the clients about its loan."""
        if reply.status != SUCCESS[call.kind] or call.kind == DRY_RUN:
            return
        status = reply.loan.get("status")
        if call.kind == APPLY:
            call.case.loan_id = reply.body.get("loan_id")
        if call.case.status in ("unknown", "pending", "active") and status:
            call.case.status = status

    # -- after the restart -----------------------------------------------------------

    def mark_committed(self, calls: Iterable[LoanCall], before: Before) -> None:
        """Which of the unanswered requests had committed, as the database shows it."""
        books = before.books
        for call in calls:
            loan = books.loans.get(int(call.case.loan_id)) if call.case.loan_id else None
            if call.kind in KEYED:
                call.committed = before.filed.get(call.name, (0, {}))[0] == 201
            elif call.kind == APPROVE:
                assert call.admin is not None and loan is not None
                call.committed = (loan.id, call.admin.user_id) in books.approvals
            elif call.kind == REJECT:
                assert call.admin is not None and loan is not None
                call.committed = loan.status == "rejected" and loan.decided_by == call.admin.user_id
            elif call.kind == WITHDRAW:
                call.committed = loan is not None and loan.status == "withdrawn"
            else:
                call.committed = False  # a dry run writes nothing

    async def resend(
        self, client: httpx.AsyncClient, calls: list[LoanCall], unexpected: Callable[[str], None]
    ) -> None:
        async def again(call: LoanCall) -> None:
            try:
                call.resent = await send(client, call)
            except httpx.TransportError as exc:
                unexpected(f"re-sent {call.label()}: {type(exc).__name__}: {exc}")
                return
            self.learn(call, call.resent)

        await asyncio.gather(*map(again, calls))

    def sync(self, books: LoanBooks) -> None:
        """After the checks, the clients take each loan's status from the database (what
        an unanswered decision did)."""
        for case in self.cases:
            if case.loan_id and (row := books.loans.get(int(case.loan_id))) is not None:
                case.status = row.status

    # -- the numbers -----------------------------------------------------------------

    def flows(self, books: LoanBooks) -> tuple[int, int]:
        """Cents paid out (the principal of every active or paid-off loan) and repaid
        (every repayment answered 201)."""
        paid_out = sum(loan.principal for loan in books.loans.values() if loan.status in PAID_OUT)
        repaid = sum(c.amount for c in self.calls if c.kind == REPAY and c.succeeded)
        return paid_out, repaid

    def report(self, books: LoanBooks | None) -> list[str]:
        calls = self.calls
        kinds = Counter(c.kind for c in calls)
        finals = [(c.kind, c.final) for c in calls if c.final is not None]
        refusals = Counter(
            f"{kind} {reply.code}" for kind, reply in finals if reply.status != SUCCESS[kind]
        )
        statuses = Counter(loan.status for loan in books.loans.values()) if books else Counter()
        four_eyes = sum(
            1 for loan in (books.loans.values() if books else ()) if loan.approvals_required > 1
        )
        four_eyes_paid = sum(
            1
            for loan in (books.loans.values() if books else ())
            if loan.approvals_required > 1 and loan.status in PAID_OUT
        )
        resent = [c for c in calls if c.resent is not None]
        executed_approvals = sum(c.executed for c in calls if c.kind == APPROVE)
        first_of_two = sum(
            1
            for c in calls
            if c.kind == APPROVE
            and c.succeeded
            and c.final
            and c.final.loan.get("approvals") == 1
            and c.final.loan.get("approvals_required") == 2
        )
        return [
            f"  loan requests                  {len(calls)} ({kinds[APPLY]} applications, "
            f"{kinds[APPROVE]} approvals, {kinds[REJECT]} rejections, {kinds[WITHDRAW]} "
            f"withdrawals, {kinds[REPAY]} repayments, {kinds[DRY_RUN]} dry runs)",
            f"  loans                          {len(books.loans) if books else '-'} "
            f"({four_eyes} four-eyes): {statuses['active'] + statuses['paid_off']} approved and "
            f"paid out ({four_eyes_paid} four-eyes; {statuses['paid_off']} paid off since), "
            f"{statuses['rejected']} rejected, {statuses['withdrawn']} withdrawn, "
            f"{statuses['pending']} pending",
            f"  loan approvals                 {executed_approvals}"
            f" executed ({first_of_two} the first of two), "
            f"{len(books.approvals) if books else '-'} in loan_approvals",
            f"  repayments                     "
            f"{sum(c.succeeded for c in calls if c.kind == REPAY)} keys answered 201, "
            f"{len(books.repayments) if books else '-'} loan_repayments rows, "
            f"{sum(c.succeeded for c in calls if c.kind == DRY_RUN)} dry runs",
            f"  loan retries                   {len(resent)} re-sent "
            f"({sum(c.dropped_by_kill for c in calls)} dropped by the kill, "
            f"{sum(bool(c.committed) for c in resent)} had committed, "
            f"{sum(bool(c.resent and c.resent.replayed) for c in resent)} replayed)",
            f"  loan refusals                  "
            f"{', '.join(f'{k} {v}' for k, v in sorted(refusals.items())) or '-'}",
        ]


# -- the checks ----------------------------------------------------------------------


def answer_problem(call: LoanCall, reply: Reply) -> str | None:
    if reply.status >= 500:
        return f"server error {reply}"
    if reply.status == SUCCESS[call.kind]:
        if call.kind == DRY_RUN and (
            reply.body.get("dry_run") is not True or reply.body.get("repayment_id") is not None
        ):
            return (
                f"a dry run answered dry_run {reply.body.get('dry_run')},"
                f" repayment_id {reply.body.get('repayment_id')}"
            )
        return None
    if reply.status in (409, 422) and reply.code in REFUSALS[call.kind]:
        return None
    return f"unexpected answer {reply}"


def resent_problem(call: LoanCall, reply: Reply, before: Before) -> str | None:
    if call.kind in KEYED:
        _, filed = before.filed.get(call.name, (0, {}))
        what = "loan_id" if call.kind == APPLY else "repayment_id"
        if not call.committed:
            return (
                "nothing had committed, yet it was answered as a replay" if reply.replayed else None
            )
        if reply.status != 201 or not reply.replayed:
            return (
                f"committed before the kill ({what} {filed.get(what)}), answered {reply}"
                " without Idempotent-Replayed: true"
            )
        if reply.body.get(what) != filed.get(what):
            return f"replayed {what} {reply.body.get(what)}, the key filed {filed.get(what)}"
        return None
    if call.committed and reply.status == SUCCESS[call.kind]:
        return f"committed before the kill, yet executed again: {reply}"
    return None


def loan_problems(calls: list[LoanCall], books: LoanBooks, filed: dict[str, Any]) -> Iterable[str]:
    """The database against every loan request so far (see the module's docstring)."""
    yield from _application_problems(calls, books)
    yield from _decision_problems(calls, books)
    yield from _disbursement_problems(books)
    yield from _repayment_problems(calls, books, filed)
    yield from _outstanding_problems(books)


def _ids(ids: Iterable[Any], most: int = 10) -> str:
    ids = sorted(ids, key=str)
    more = f" and {len(ids) - most} more" if len(ids) > most else ""
    return ", ".join(map(str, ids[:most])) + more


def _application_problems(calls: list[LoanCall], books: LoanBooks) -> Iterable[str]:
    applied: dict[int, LoanCall] = {}
    for call in (c for c in calls if c.kind == APPLY and c.final is not None):
        if not call.succeeded:
            continue  # an unexpected answer, a failure already
        loan_id = int(call.final.body["loan_id"]) if call.final else 0
        ids = {int(a.body["loan_id"]) for a in call.answers if a.status == 201}
        if len(ids) > 1:
            yield f"application {call.name} answered loans {_ids(ids)}"
        if loan_id in applied:
            yield f"applications {applied[loan_id].name} and {call.name} answered loan {loan_id}"
        applied[loan_id] = call
        row = books.loans.get(loan_id)
        if row is None:
            yield f"application {call.name} answered loan {loan_id}, which does not exist"
        elif row.principal != call.case.principal:
            yield (
                f"loan {loan_id}: principal {money(row.principal)},"
                f" applied for {money(call.case.principal)}"
            )
        elif row.approvals_required != (2 if row.principal >= FOUR_EYES_CENTS else 1):
            yield (
                f"loan {loan_id} of {money(row.principal)}"
                f" requires {row.approvals_required} approvals"
            )
    unknown = set(books.loans) - set(applied)
    if unknown:
        yield f"{len(unknown)} loans no application was answered: {_ids(unknown)}"


def _decision_problems(calls: list[LoanCall], books: LoanBooks) -> Iterable[str]:
    decisions = [c for c in calls if c.kind in (APPROVE, REJECT, WITHDRAW) and c.case.loan_id]
    executed = [c for c in decisions if c.executed]
    # Two unanswered approvals of one admin and loan are both taken for committed when
    # its row is there (one of them did): a pair counts once, and twice only if two of its
    # approvals were answered 200.
    approved = {_pair(c) for c in executed if c.kind == APPROVE}
    answered = Counter(_pair(c) for c in decisions if c.kind == APPROVE and c.succeeded)
    twice = [pair for pair, n in answered.items() if n > 1]
    if twice:
        yield f"approved twice by the same admin (loan, admin): {_ids(twice)}"
    if set(approved) != books.approvals:
        missing = set(approved) - books.approvals
        extra = books.approvals - set(approved)
        yield (
            f"approvals executed but not on file (loan, admin): {_ids(missing) or '-'}; "
            f"on file but never executed: {_ids(extra) or '-'}"
        )
    per_loan = Counter(loan for loan, _ in books.approvals)
    for loan in books.loans.values():
        rows = per_loan[loan.id]
        if loan.approvals != rows:
            yield f"loan {loan.id}: approvals {loan.approvals}, {rows} loan_approvals rows"
        if loan.status in PAID_OUT and rows != loan.approvals_required:
            yield (
                f"loan {loan.id} is {loan.status}"
                f" with {rows} of {loan.approvals_required} approvals"
            )
        if loan.status == "pending" and rows >= loan.approvals_required:
            yield f"loan {loan.id} is pending with {rows} of {loan.approvals_required} approvals"
    for call in executed:
        loan = books.loans.get(int(call.case.loan_id or 0))
        status = loan.status if loan else None
        said = call.final.loan.get("status") if call.final and call.succeeded else None
        if (call.kind, status) in ((REJECT, "rejected"), (WITHDRAW, "withdrawn")):
            pass
        elif call.kind in (REJECT, WITHDRAW):
            yield f"{call.label()} executed, the loan is {status}"
        elif call.kind == APPROVE and said == "active" and status not in PAID_OUT:
            yield f"{call.label()} answered active, the loan is {status}"
    refused = [c for c in decisions if c.final is not None and c.final.code == "same_approver"]
    for call in refused:
        if _pair(call) not in books.approvals:
            yield f"{call.label()} answered same_approver, yet that admin's approval is not on file"
    for status, kind in (("rejected", REJECT), ("withdrawn", WITHDRAW)):
        decided = {int(c.case.loan_id or 0) for c in executed if c.kind == kind}
        undecided = {loan.id for loan in books.loans.values() if loan.status == status} - decided
        if undecided:
            yield f"loans {status} by no {kind} executed: {_ids(undecided)}"


def _pair(call: LoanCall) -> tuple[int, int]:
    """An approval's (loan id, admin's user id)."""
    return int(call.case.loan_id or 0), call.admin.user_id if call.admin else 0


def _disbursement_problems(books: LoanBooks) -> Iterable[str]:
    by_loan: dict[int, list[Any]] = {}
    for journal in books.disbursements:
        words = (journal.description or "").split()
        if (
            len(words) != 3
            or words[0] != "Loan"
            or words[2] != "disbursement"
            or not words[1].isdigit()
        ):
            yield f"disbursement journal {journal.id} names no loan: {journal.description!r}"
            continue
        by_loan.setdefault(int(words[1]), []).append(journal)
    strays = set(by_loan) - set(books.loans)
    if strays:
        yield f"disbursements of loans that do not exist: {_ids(strays)}"
    for loan in books.loans.values():
        posted = by_loan.get(loan.id, [])
        if loan.status not in PAID_OUT:
            if posted or loan.disbursement_id is not None:
                yield (
                    f"loan {loan.id} is {loan.status}, yet disbursed: journals "
                    f"{_ids(j.id for j in posted) or '-'}, disbursement_id {loan.disbursement_id}"
                )
            continue
        if len(posted) != 1:
            yield (
                f"loan {loan.id} ({loan.status}) has {len(posted)} disbursement journals:"
                f" {_ids(j.id for j in posted) or '-'}"
            )
            continue
        journal = posted[0]
        if journal.id != loan.disbursement_id:
            yield (
                f"loan {loan.id}: disbursement_id {loan.disbursement_id},"
                f" its journal is {journal.id}"
            )
        if journal.amount != loan.principal or journal.to_account_id != loan.account_id:
            yield (
                f"loan {loan.id}: disbursed {money(journal.amount)} to account id "
                f"{journal.to_account_id}, principal {money(loan.principal)} to {loan.account_id}"
            )


def _repayment_problems(
    calls: list[LoanCall], books: LoanBooks, filed: dict[str, tuple[int, dict[str, Any]]]
) -> Iterable[str]:
    repaid: dict[int, LoanCall] = {}
    keyed = [c for c in calls if c.kind in KEYED and c.final is not None]
    for call in keyed:
        entry = filed.get(call.name)
        if call.succeeded:
            if entry is None or entry[0] != 201 or entry[1] != call.final.body:  # type: ignore[union-attr]
                yield f"{call.kind} {call.name} answered 201, filed {entry[0] if entry else None}"
        elif entry is not None:
            yield f"{call.kind} {call.name} answered {call.final}, yet filed ({entry[0]})"
    stuck = sorted(name for name, (status, _) in filed.items() if status == 0)
    if stuck:
        yield f"{len(stuck)} loan keys still in progress after the restart: {', '.join(stuck[:10])}"
    for call in (c for c in keyed if c.kind == REPAY and c.succeeded):
        ids = {a.body.get("repayment_id") for a in call.answers if a.status == 201}
        if len(ids) != 1:
            yield f"repayment {call.name} answered repayments {_ids(ids)}"
        repayment_id = int(next(iter(ids)))
        if repayment_id in repaid:
            yield (
                f"repayments {repaid[repayment_id].name} and {call.name}"
                f" answered repayment {repayment_id}"
            )
        repaid[repayment_id] = call
        row = books.repayments.get(repayment_id)
        if row is None:
            yield f"repayment {call.name} answered repayment {repayment_id}, which does not exist"
        elif str(row.loan_id) != call.case.loan_id or row.amount != call.amount:
            yield (
                f"repayment {repayment_id} is {money(row.amount)} of loan {row.loan_id}; "
                f"{call.name} paid {money(call.amount)} of loan {call.case.loan_id}"
            )
    if len(books.repayments) != len(repaid):
        yield f"{len(books.repayments)} loan_repayments rows, {len(repaid)} keys answered 201"
    unknown = set(books.repayments) - set(repaid)
    if unknown:
        yield f"repayments no key was answered: {_ids(unknown)}"
    journals = Counter(r.journal_id for r in books.repayments.values())
    shared = [j for j, n in journals.items() if n > 1]
    if shared:
        yield f"journals of more than one repayment: {_ids(shared)}"
    for row in books.repayments.values():
        journal = books.repayment_journals.get(row.journal_id)
        loan = books.loans.get(row.loan_id)
        if journal is None:
            yield f"repayment {row.id}: no repayment journal {row.journal_id}"
        elif journal.amount != row.amount or (loan and journal.from_account_id != loan.account_id):
            yield (
                f"repayment {row.id} of {money(row.amount)}"
                f" from account id {loan and loan.account_id}:"
                f" journal {journal.id} of {money(journal.amount)} from {journal.from_account_id}"
            )
    orphans = set(books.repayment_journals) - set(journals)
    if orphans:
        yield f"repayment journals without a repayment: {_ids(orphans)}"


def _outstanding_problems(books: LoanBooks) -> Iterable[str]:
    principal_paid: Counter[int] = Counter()
    for row in books.repayments.values():
        principal_paid[row.loan_id] += row.principal_part
    for loan in books.loans.values():
        if loan.status in PAID_OUT:
            expected = loan.principal - principal_paid[loan.id]
            if loan.status == "paid_off" and expected != 0:
                yield f"loan {loan.id} is paid off with {money(expected)} of principal unpaid"
        else:
            expected = 0
            if principal_paid[loan.id] or any(
                r.loan_id == loan.id for r in books.repayments.values()
            ):
                yield f"loan {loan.id} is {loan.status}, yet repaid"
        if loan.outstanding_principal != expected:
            yield (
                f"loan {loan.id} ({loan.status}): outstanding_principal "
                f"{money(loan.outstanding_principal)},"
                f" principal less repaid principal {money(expected)}"
            )
    outstanding = sum(loan.outstanding_principal for loan in books.loans.values())
    if books.loans_account != -outstanding:
        yield (
            f"the bank's loans account holds {money(books.loans_account)}, "
            f"the loans' outstanding principal is {money(outstanding)}"
        )


async def listed(client: httpx.AsyncClient, token: str, path: str) -> AsyncIterator[dict[str, Any]]:
    """Every item of a customer's list endpoint, page after page."""
    params: dict[str, str] = {"limit": "500"}
    while True:
        response = await client.get(
            path, params=params, headers={"Authorization": f"Bearer {token}"}
        )
        response.raise_for_status()
        page = response.json()
        for item in page["items"]:
            yield item
        if not page["next_cursor"]:
            return
        params["cursor"] = page["next_cursor"]


async def api_problems(
    client: httpx.AsyncClient, borrowers: Iterable[Borrower], books: LoanBooks
) -> list[str]:
    """Each borrower's loans through the API, against the database."""
    problems, seen = [], set()
    for borrower in borrowers:
        async for item in listed(client, borrower.token, "/api/loans"):
            loan_id = int(item["loan_id"])
            seen.add(loan_id)
            row = books.loans.get(loan_id)
            if row is None:
                problems.append(f"{borrower.username} lists loan {loan_id}, which does not exist")
                continue
            shown = (item["status"], cents(item["principal"]), cents(item["outstanding_principal"]))
            stored = (row.status, row.principal, row.outstanding_principal)
            if shown != stored:
                problems.append(f"loan {loan_id}: the API shows {shown}, the database {stored}")
    if seen != set(books.loans):
        problems.append(f"loans no borrower lists: {_ids(set(books.loans) - seen)}")
    return problems
