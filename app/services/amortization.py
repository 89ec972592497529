"""Annuity loans: the monthly payment and the amortization schedule, in `Decimal` cents
(never a float). Pure functions of the principal, the rate, the term and the dates, so
a quote, a loan's schedule and its recomputation after an extra payment agree exactly.

- payment = P·r / (1 − (1 + r)^−n), r = APR / 12, rounded half-up to the cent (0 %: P / n,
  rounded down);
- each row's interest = round(balance · r), its principal = payment − interest;
- the last row pays the balance left, so the principal parts sum exactly to P and the
  final balance is 0.00;
- due dates fall on the disbursement's day of the month, clamped to the month's end
  (Jan 31 → Feb 28 or 29 → Mar 31).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, localcontext

MONTHS_PER_YEAR = 12


@dataclass(frozen=True, slots=True)
class Row:
    """One installment of a schedule, in minor units."""

    number: int
    due_date: date
    payment: int
    principal: int
    interest: int
    balance: int  # principal left after this row


def _cents(minor: Decimal) -> int:
    """An exact amount of minor units, rounded half-up to a whole cent."""
    return int(minor.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def monthly_rate(annual_rate: Decimal) -> Decimal:
    """APR in percent (11.99) → the monthly rate r as a fraction (0.0099916…)."""
    with localcontext() as ctx:
        ctx.prec = 40
        return annual_rate / 100 / MONTHS_PER_YEAR


def monthly_payment(principal: int, annual_rate: Decimal, months: int) -> int:
    """The annuity payment in minor units for `principal` minor units."""
    if months < 1:
        raise ValueError("a loan has at least one installment")
    with localcontext() as ctx:
        ctx.prec = 40
        if annual_rate == 0:
            return principal // months  # the last row takes the remainder
        r = monthly_rate(annual_rate)
        payment = Decimal(principal) * r / (1 - (1 + r) ** -months)
        return _cents(payment)


def rounding_slack(annual_rate: Decimal, months: int) -> int:
    """How far, at most, a schedule's balance can drift from the exact annuity's, in minor
    units: each row rounds its interest and pays a rounded payment (a cent at most
    between them), and the difference earns the rate until the end, so the drift is at
    most one cent a row compounded: ((1 + r)^n − 1) / r. It does not depend on the
    principal; the payment does, so the smallest principal at the longest term is where a
    schedule could end rows early (drift at least a whole payment)."""
    with localcontext() as ctx:
        ctx.prec = 40
        r = monthly_rate(annual_rate)
        if r == 0:
            return 0  # 0 %: P / n rounded down, the remainder on the last row
        return int(((1 + r) ** months - 1) / r) + 1


def safe_months(principal: int, annual_rate: Decimal, months: int) -> int:
    """The most installments, up to `months`, over which `principal` amortizes without the
    rounding ending the schedule early (rounding_slack below the payment): `months`
    itself but for a few cents' worth left over a long term. The slack grows with the
    term and the payment shrinks, so the answer is found by halving."""
    low, high = 1, months
    while low < high:
        middle = (low + high + 1) // 2
        if rounding_slack(annual_rate, middle) < monthly_payment(principal, annual_rate, middle):
            low = middle
        else:
            high = middle - 1
    return low


def due_date(anchor: date, months_after: int) -> date:
    """`months_after` months after `anchor`, on its day of the month or the month's end."""
    month_index = anchor.month - 1 + months_after
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(anchor.day, calendar.monthrange(year, month)[1]))


def schedule(
    principal: int,
    annual_rate: Decimal,
    months: int,
    anchor: date,
    *,
    first_number: int = 1,
    payment: int | None = None,
) -> list[Row]:
    """The rows of an annuity of `principal` over `months` installments, numbered from
    `first_number`, the k-th due `first_number + k − 1` months after `anchor` (the
    disbursement date). A remaining schedule (after an extra payment) passes the
    outstanding principal, the installments left and the first one's number."""
    r = monthly_rate(annual_rate)
    payment = payment if payment is not None else monthly_payment(principal, annual_rate, months)
    rows: list[Row] = []
    balance = principal
    for k in range(months):
        number = first_number + k
        with localcontext() as ctx:
            ctx.prec = 40
            interest = _cents(Decimal(balance) * r)
        last = k == months - 1
        part = balance if last else min(balance, payment - interest)
        balance -= part
        rows.append(Row(number, due_date(anchor, number), part + interest, part, interest, balance))
    return rows


def total_interest(rows: list[Row]) -> int:
    return sum(row.interest for row in rows)
