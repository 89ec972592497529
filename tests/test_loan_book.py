"""A loan's book under any sequence of days passing and payments (issue 20): a model test
of app.services.loan_book, read back after each step as the service reads it (the
unsettled rows only). The rows' principal parts always sum to the principal, the
outstanding principal is what the rows still owe, the interest and fees posted and not
yet paid are exactly what is owed of them, and the payoff leaves nothing owed."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import PayoffExceeded, PayoffRequired
from app.services import amortization, loan_book

START = date(2027, 1, 31)
steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=70), st.integers(min_value=0, max_value=10**6)),
    min_size=1,
    max_size=25,
)


def fresh(principal: int, rate: Decimal, months: int) -> loan_book.Book:
    rows = amortization.schedule(principal, rate, months, START)
    return loan_book.Book(
        rate,
        principal,
        0,
        START,
        START,
        [
            loan_book.Installment(r.number, r.due_date, r.principal, r.interest, r.balance)
            for r in rows
        ],
        rows[0].payment,
    )


@settings(max_examples=200, deadline=None)
@given(
    principal=st.integers(min_value=100_000, max_value=5_000_000),
    rate_bps=st.sampled_from([0, 625, 749, 1199, 2999]),
    months=st.integers(min_value=1, max_value=24),
    plan=steps,
    payoff_at_end=st.booleans(),
)
def test_any_history_keeps_the_book_exact(principal, rate_bps, months, plan, payoff_at_end):
    rate = Decimal(rate_bps) / 100
    book = fresh(principal, rate, months)
    rows = {i.number: replace(i) for i in book.installments}
    posted_interest = posted_fees = paid_interest = paid_fees = paid_principal = 0
    today = START

    def read_back() -> loan_book.Book:
        unsettled = [
            replace(i) for i in sorted(rows.values(), key=lambda i: i.number) if not i.settled
        ]
        return replace(book, installments=unsettled)

    def store(after: loan_book.Book, before: list[int]) -> None:
        kept = {i.number for i in after.installments}
        for number in before:
            if number not in kept:
                del rows[number]  # cancelled by a payoff
        for i in after.installments:
            rows[i.number] = replace(i)

    def check() -> None:
        assert sum(i.principal for i in rows.values()) == principal
        unsettled = [i for i in rows.values() if not i.settled]
        assert book.outstanding_principal == sum(i.principal - i.paid_principal for i in unsettled)
        fallen_due = [i for i in unsettled if i.due_date <= book.accrued_through]
        owed_interest = sum(i.interest - i.paid_interest for i in fallen_due)
        owed_fees = sum(i.fee - i.paid_fee for i in rows.values())
        assert posted_interest - paid_interest == book.accrued_interest + owed_interest
        assert posted_fees - paid_fees == owed_fees
        assert all(
            i.paid_principal <= i.principal and i.paid_interest <= i.interest for i in rows.values()
        )

    paid_off = False
    for days, amount in plan:
        today += timedelta(days=days)
        book = read_back()
        accrual = loan_book.advance(book, today, grace_days=5, late_fee=2500)
        posted_interest += accrual.interest
        posted_fees += accrual.fee_total
        store(book, [i.number for i in book.installments])
        check()
        if amount == 0:
            continue
        book = read_back()
        before = [i.number for i in book.installments]
        payoff = loan_book.payoff_amount(book, today)
        unchanged = book.copy()
        try:
            result = loan_book.allocate(book, min(amount, payoff), today)
        except PayoffRequired:
            assert book == unchanged  # a refused amount changes nothing
            continue
        store(book, before)
        paid_interest += result.interest
        paid_fees += result.fees
        paid_principal += result.principal
        assert sum(result.parts.values()) == result.amount
        check()
        if result.paid_off:
            paid_off = True
            break
    if payoff_at_end and not paid_off:
        book = read_back()
        accrual = loan_book.advance(book, today, grace_days=5, late_fee=2500)
        posted_interest += accrual.interest
        posted_fees += accrual.fee_total
        before = [i.number for i in book.installments]
        amount = loan_book.payoff_amount(book, today)
        result = loan_book.allocate(book, amount, today)
        store(book, before)
        paid_interest += result.interest
        paid_fees += result.fees
        paid_principal += result.principal
        assert result.paid_off
        paid_off = True
        check()
    if paid_off:
        assert paid_principal == principal
        assert posted_interest == paid_interest and posted_fees == paid_fees
        assert all(i.settled for i in rows.values())
        assert max(rows.values(), key=lambda i: i.number).balance == 0


def test_an_amount_above_the_payoff_is_refused():
    book = fresh(1_000_000, Decimal("11.99"), 12)
    try:
        loan_book.allocate(book, 1_000_001, START)
    except PayoffExceeded as exc:
        assert exc.field == "amount"
    else:
        raise AssertionError("no refusal")


def test_a_few_cents_left_over_a_long_term_are_not_spread_into_rows_of_nothing():
    """An extra payment leaves 100.00 of a 30-year home loan: recomputed over the 360 rows
    left, the rounding would end the schedule rows early (installments of 0.00). The rows
    are recomputed over as many as amortize it instead; the ones after are dropped."""
    rate = Decimal("6.25")
    spread = amortization.schedule(10_000, rate, 360, START)
    assert any(row.payment == 0 for row in spread)  # what the reschedule must not do
    book = fresh(5_000_000, rate, 360)
    today = START + timedelta(days=1)
    loan_book.advance(book, today, grace_days=5, late_fee=2500)
    result = loan_book.allocate(book, 4_990_000, today)
    assert result.rescheduled and book.outstanding_principal == 10_000
    rows = book.installments
    assert 1 < len(rows) < 360
    assert all(i.principal + i.interest > 0 for i in rows)
    assert rows[-1].balance == 0 and sum(i.principal for i in rows) == 5_000_000
    assert book.monthly_payment > 0
