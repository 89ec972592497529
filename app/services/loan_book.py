"""An active loan's book, as pure functions of its state: time passing (`advance`: daily
interest, due dates, late fees) and a payment (`allocate`). The service reads the state
under the loan's lock, runs these, and posts what they return; a read (the payoff amount
today) runs the same functions without posting, so both always agree.

Interest, in minor units:
- each day earns round(outstanding principal · APR / 365) (actual/365), posted as
  accrued interest (receivable against interest income);
- on an installment's due date its scheduled interest (round(balance · APR / 12)) falls
  due, and the period's accrual is trued up to it, so the income of a period is exactly
  the schedule's interest;
- an installment still unpaid `grace_days` after its due date is charged the late fee,
  once.

A payment goes, in this order, to fees, interest due, principal due (oldest installment
first within each), then to future principal, which lowers the installment of the rows
not yet due (same term, lower payment). Paying exactly the payoff amount (everything
due, the interest accrued since the last due date and the principal left) closes the
loan; a payment that would clear the principal but not that interest is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from app.errors import PayoffExceeded, PayoffRequired
from app.money import format_amount
from app.services import amortization

DAYS_PER_YEAR = 365
PARTS = ("fees", "interest_due", "principal_due", "interest_accrued", "future_principal")
"""A payment's parts, in the order it is allocated to them."""


@dataclass(slots=True)
class Installment:
    number: int
    due_date: date
    principal: int
    interest: int
    balance: int
    fee: int = 0
    paid_principal: int = 0
    paid_interest: int = 0
    paid_fee: int = 0

    @property
    def owed(self) -> int:
        return (
            self.principal
            + self.interest
            + self.fee
            - self.paid_principal
            - self.paid_interest
            - self.paid_fee
        )

    @property
    def settled(self) -> bool:
        return self.owed == 0


@dataclass(slots=True)
class Book:
    """What an active loan owes, as of the end of day `accrued_through`."""

    annual_rate: Decimal  # percent
    outstanding_principal: int
    accrued_interest: int  # since the last due date, posted
    accrued_through: date
    anchor: date  # the disbursement date: due dates fall on its day of the month
    installments: list[Installment]  # by number: those unsettled when read, then as changed
    monthly_payment: int

    def copy(self) -> Book:
        return replace(self, installments=[replace(i) for i in self.installments])

    def due(self, today: date) -> list[Installment]:
        return [i for i in self.installments if i.due_date <= today and not i.settled]

    def future(self, today: date) -> list[Installment]:
        return [i for i in self.installments if i.due_date > today]


@dataclass(frozen=True, slots=True)
class Accrual:
    """What `advance` earned: interest to post (negative: a true-up down) and late fees."""

    interest: int = 0
    fees: tuple[tuple[int, int], ...] = ()  # (installment number, fee)

    @property
    def fee_total(self) -> int:
        return sum(fee for _, fee in self.fees)


def daily_interest(principal: int, annual_rate: Decimal) -> int:
    with localcontext() as ctx:
        ctx.prec = 40
        exact = Decimal(principal) * annual_rate / 100 / DAYS_PER_YEAR
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def advance(book: Book, today: date, *, grace_days: int, late_fee: int) -> Accrual:
    """Move `book` (in place) to the end of `today`: each day's interest, each due date's
    true-up, each late fee. Days already accrued are not accrued again."""
    interest = 0
    fees: list[tuple[int, int]] = []
    by_due = {i.due_date: i for i in book.installments}
    by_fee_day = {i.due_date + timedelta(days=grace_days + 1): i for i in book.installments}
    day = book.accrued_through
    while day < today:
        day += timedelta(days=1)
        earned = daily_interest(book.outstanding_principal, book.annual_rate)
        book.accrued_interest += earned
        interest += earned
        if (falling_due := by_due.get(day)) is not None:
            interest += falling_due.interest - book.accrued_interest
            book.accrued_interest = 0
        late = by_fee_day.get(day)
        if late is not None and late_fee and not late.fee and not late.settled:
            late.fee = late_fee
            fees.append((late.number, late_fee))
    book.accrued_through = max(book.accrued_through, today)
    return Accrual(interest, tuple(fees))


@dataclass(frozen=True, slots=True)
class Arrears:
    overdue_amount: int
    days_past_due: int

    @property
    def delinquency(self) -> str:
        d = self.days_past_due
        if d == 0:
            return "current"
        return "1-30" if d <= 30 else "31-60" if d <= 60 else "61-90" if d <= 90 else "90+"


def arrears(book: Book, today: date) -> Arrears:
    """What is owed from installments whose due date has passed, and since when."""
    late = [i for i in book.installments if i.due_date < today and not i.settled]
    if not late:
        return Arrears(0, 0)
    return Arrears(sum(i.owed for i in late), (today - min(i.due_date for i in late)).days)


def payoff_amount(book: Book, today: date) -> int:
    """Everything due, the interest accrued since the last due date, and the principal
    not yet due: what closes the loan today (`book` advanced to today)."""
    due = book.due(today)
    return (
        sum(i.owed for i in due)
        + book.accrued_interest
        + book.outstanding_principal
        - sum(i.principal - i.paid_principal for i in due)
    )


def next_due_date(book: Book) -> date | None:
    return min((i.due_date for i in book.installments if not i.settled), default=None)


@dataclass(slots=True)
class Allocation:
    """Where a payment goes, part by part, and the book after it."""

    amount: int
    parts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTS, 0))
    paid_off: bool = False
    rescheduled: bool = False  # the rows not yet due were recomputed (an extra payment)

    @property
    def principal(self) -> int:
        return self.parts["principal_due"] + self.parts["future_principal"]

    @property
    def interest(self) -> int:
        return self.parts["interest_due"] + self.parts["interest_accrued"]

    @property
    def fees(self) -> int:
        return self.parts["fees"]


def allocate(book: Book, amount: int, today: date) -> Allocation:
    """Apply `amount` to `book` (in place, already advanced to `today`)."""
    payoff = payoff_amount(book, today)
    if amount > payoff:
        raise PayoffExceeded(
            f"The payoff amount today is {format_amount(payoff)}; {format_amount(amount)} is"
            " more than the loan owes.",
            field="amount",
        )
    if payoff - book.accrued_interest <= amount < payoff:
        raise PayoffRequired(
            f"{format_amount(amount)} would repay all the principal but not the"
            f" {format_amount(book.accrued_interest)} of interest accrued since the last"
            f" due date: the payoff amount is {format_amount(payoff)}.",
            field="amount",
        )
    # Nothing is changed before here: a refused amount leaves the book as it was.
    result = Allocation(amount)
    left = amount
    due = book.due(today)
    for part, owed_of, pay in (
        ("fees", lambda i: i.fee - i.paid_fee, "paid_fee"),
        ("interest_due", lambda i: i.interest - i.paid_interest, "paid_interest"),
        ("principal_due", lambda i: i.principal - i.paid_principal, "paid_principal"),
    ):
        for installment in due:
            taken = min(left, owed_of(installment))
            if taken:
                setattr(installment, pay, getattr(installment, pay) + taken)
                result.parts[part] += taken
                left -= taken
    book.outstanding_principal -= result.parts["principal_due"]
    future = book.future(today)
    if left == 0:
        result.paid_off = not future and not book.outstanding_principal
        result.paid_off = result.paid_off and not book.accrued_interest
        return result
    kept = [i for i in book.installments if i.due_date <= today]  # all paid by now
    if left >= book.outstanding_principal:  # the payoff (checked above)
        result.parts["interest_accrued"] = book.accrued_interest
        result.parts["future_principal"] = book.outstanding_principal
        if future:  # the next row takes the rest, paid; the rows after it are cancelled
            first = future[0]
            first.principal = first.paid_principal = (
                first.paid_principal + book.outstanding_principal
            )
            first.interest = first.paid_interest = book.accrued_interest
            first.balance = 0
            kept.append(first)
        book.accrued_interest = 0
        book.outstanding_principal = 0
        book.installments = kept
        result.paid_off = True
        return result
    result.parts["future_principal"] = left
    book.outstanding_principal -= left
    # The rows not yet due are recomputed from the principal left (same count, same dates,
    # a lower payment). What was paid ahead stays on the next row, as paid, so the rows'
    # principal parts still sum to the loan's.
    first = future[0]
    ahead = first.paid_principal + left
    rows = amortization.schedule(
        book.outstanding_principal,
        book.annual_rate,
        # A few cents left over a long term would round to rows of nothing: fewer rows.
        amortization.safe_months(book.outstanding_principal, book.annual_rate, len(future)),
        book.anchor,
        first_number=first.number,
    )
    recomputed = [
        Installment(r.number, r.due_date, r.principal, r.interest, r.balance) for r in rows
    ]
    recomputed[0].principal += ahead
    recomputed[0].paid_principal = ahead
    book.installments = kept + recomputed
    book.monthly_payment = amortization.monthly_payment(
        book.outstanding_principal, book.annual_rate, len(rows)
    )
    result.rescheduled = True
    return result
