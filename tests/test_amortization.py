"""The annuity schedule (issue 20): the reference figures to the cent, a property test
over random loans, 0 %, month-end and leap-year due dates; the products file."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.services import amortization
from app.services.loan_products import (
    ProductsError,
    load_products,
    parse_products,
)


def test_the_reference_schedule_to_the_cent():
    rows = amortization.schedule(1_000_000, Decimal("11.99"), 12, date(2026, 1, 15))
    assert amortization.monthly_payment(1_000_000, Decimal("11.99"), 12) == 88844
    assert (rows[0].payment, rows[0].interest, rows[0].principal) == (88844, 9992, 78852)
    assert all(row.payment == 88844 for row in rows[:-1])
    assert rows[-1].payment == 88847
    assert amortization.total_interest(rows) == 66131
    assert sum(row.principal for row in rows) == 1_000_000
    assert rows[-1].balance == 0


def test_a_zero_rate_loan_pays_principal_over_n_with_the_remainder_last():
    rows = amortization.schedule(1000, Decimal(0), 3, date(2026, 3, 10))
    assert [row.payment for row in rows] == [333, 333, 334]
    rows = amortization.schedule(2000, Decimal(0), 3, date(2026, 3, 10))
    assert [row.payment for row in rows] == [666, 666, 668]
    assert [row.interest for row in rows] == [0, 0, 0]
    assert rows[-1].balance == 0


def test_due_dates_keep_the_day_of_month_clamped_to_month_end():
    rows = amortization.schedule(600_000, Decimal("6.25"), 3, date(2027, 1, 31))
    assert [row.due_date for row in rows] == [
        date(2027, 2, 28),
        date(2027, 3, 31),
        date(2027, 4, 30),
    ]
    leap = amortization.schedule(600_000, Decimal("6.25"), 2, date(2028, 1, 31))
    assert [row.due_date for row in leap] == [date(2028, 2, 29), date(2028, 3, 31)]
    assert amortization.due_date(date(2026, 12, 15), 1) == date(2027, 1, 15)


def closed_form(principal: int, rate: Decimal, months: int) -> Decimal:
    if rate == 0:
        return Decimal(principal) / months
    r = rate / 100 / 12
    return Decimal(principal) * r / (1 - (1 + r) ** -months)


@settings(max_examples=300, deadline=None)
@given(
    per_month=st.integers(min_value=1000, max_value=10**7),
    rate_bps=st.integers(min_value=0, max_value=1200),
    months=st.integers(min_value=1, max_value=360),
    extra=st.integers(min_value=0, max_value=99),
)
def test_any_schedule_repays_exactly_its_principal(per_month, rate_bps, months, extra):
    # At least 10.00 a month and at most 12 % a year (the products' highest is 11.99 %):
    # the payment's half cent of rounding compounds at the loan's rate, and beyond that
    # (24 % over 25 years: a factor of ~24,000) it can outgrow a whole payment, so the
    # schedule would end rows early. At 12 % over 30 years it stays under 18 cents.
    principal = per_month * months + extra
    rate = Decimal(rate_bps) / 100
    rows = amortization.schedule(principal, rate, months, date(2026, 1, 31))
    assert len(rows) == months
    assert sum(row.principal for row in rows) == principal
    assert all(row.balance >= 0 and row.principal >= 0 and row.interest >= 0 for row in rows)
    assert rows[-1].balance == 0
    exact = closed_form(principal, rate, months)
    assert all(abs(row.payment - exact) <= 1 for row in rows[:-1])
    assert rows[-1].payment > 0
    balance = principal
    for row in rows:  # each row's interest is on the balance before it
        r = rate / 100 / 12
        assert abs(row.interest - Decimal(balance) * r) <= Decimal("0.5")
        balance -= row.principal
        assert row.balance == balance


def test_the_shipped_products_are_the_documented_defaults():
    catalog = load_products(None)
    personal, auto, home = (catalog.products[c] for c in ("personal", "auto", "home"))
    assert (personal.annual_rate, personal.min_principal, personal.max_principal) == (
        Decimal("11.99"),
        100_000,
        5_000_000,
    )
    assert (personal.min_term_months, personal.max_term_months) == (6, 60)
    assert (auto.annual_rate, auto.min_term_months, auto.max_term_months) == (
        Decimal("7.49"),
        12,
        84,
    )
    assert (home.annual_rate, home.min_principal, home.max_term_months) == (
        Decimal("6.25"),
        5_000_000,
        360,
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "[products.x]\nname='X'\nannual_rate='abc'\nmin_principal='1.00'\nmax_principal='2.00'\n"
            "min_term_months=1\nmax_term_months=2\n",
            "products.x.annual_rate",
        ),
        (
            "[products.x]\nname='X'\nannual_rate='5'\nmin_principal='3.00'\nmax_principal='2.00'\n"
            "min_term_months=1\nmax_term_months=2\n",
            "max_principal is below min_principal",
        ),
        (
            "[products.x]\nname='X'\nannual_rate='5'\nmin_principal='1.00'\nmax_principal='2.00'\n"
            "min_term_months=0\nmax_term_months=2\n",
            "products.x.min_term_months",
        ),
        ("products = {}\n", "products"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_bad_products_file_is_refused_naming_the_field(text, named):
    with pytest.raises(ProductsError, match=named.replace(".", r"\.")):
        parse_products(text)


def _product(rate: str, min_principal: str, max_term: int) -> str:
    return (
        f"[products.risky]\nname='Risky'\nannual_rate='{rate}'\nmin_principal='{min_principal}'"
        f"\nmax_principal='900000.00'\nmin_term_months=12\nmax_term_months={max_term}\n"
    )


def test_a_product_whose_schedules_could_end_early_is_refused():
    """The payment's rounding compounds at the rate: at 24.56 % over 306 months (CI found
    it) the drift can reach 240.17, more than a small loan's whole payment, and such a
    schedule ends rows early. The file is refused at start-up naming the product and the
    way out; the same rate at a higher minimum principal, or a shorter term, is taken."""
    rows = amortization.schedule(20_791, Decimal("24.56"), 306, date(2027, 1, 15))
    assert any(row.principal == 0 for row in rows[:-1])  # what the check keeps out
    with pytest.raises(ProductsError, match=r"products\.risky: .*could end rows early"):
        parse_products(_product("24.56", "200.00", 306))
    assert parse_products(_product("24.56", "15000.00", 306)).get("risky").max_term_months == 306
    assert parse_products(_product("24.56", "200.00", 60)).get("risky").min_principal == 20_000
    for code, product in load_products(None).products.items():  # the shipped ones pass
        slack = amortization.rounding_slack(product.annual_rate, product.max_term_months)
        payment = amortization.monthly_payment(
            product.min_principal, product.annual_rate, product.max_term_months
        )
        assert slack < payment, code


def test_a_missing_products_file_refuses_to_start(tmp_path: Path):
    with pytest.raises(ProductsError, match="cannot be read"):
        load_products(tmp_path / "missing.toml")
