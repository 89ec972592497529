"""Money: integer minor units inside, two-place decimal strings outside.

This is the one place that converts amounts. Request bodies are parsed with
`parse_float=Decimal` (see app.routing), so a JSON number never becomes a float."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

MINOR_PER_MAJOR = 100
CENT = Decimal("0.01")
# Far above any configurable limit, far below BIGINT: 10^13 major units.
MAX_AMOUNT_MINOR = 10**15
# As a string: digits, then at most two decimals. No sign, no spaces, no exponent: a
# client that sends " 10.00 " or "+10.00" has a formatting bug worth hearing about.
AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]{1,2})?$"
AMOUNT_RE = re.compile(AMOUNT_PATTERN)


def parse_amount(value: Any) -> int:
    """A positive amount with at most two decimal places, as minor units."""
    if isinstance(value, (bool, float)):
        raise ValueError('must be a decimal string such as "12.50" or a JSON number')
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        if len(value) > 40 or not AMOUNT_RE.fullmatch(value):
            raise ValueError(
                'must be digits with at most two decimals, such as "12.50" '
                "(no sign, spaces or exponent)"
            )
        amount = Decimal(value)
    else:
        raise ValueError('must be a decimal string such as "12.50" or a JSON number')
    try:
        if not amount.is_finite():
            raise ValueError("must be a finite number")
        if amount <= 0:
            raise ValueError("must be greater than zero")
        if amount * MINOR_PER_MAJOR >= MAX_AMOUNT_MINOR:
            raise ValueError("is too large")
        if amount != amount.quantize(CENT):
            raise ValueError("must have at most two decimal places")
    except InvalidOperation as exc:
        raise ValueError("is not a valid amount") from exc
    return int(amount * MINOR_PER_MAJOR)


def format_amount(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    major, cents = divmod(abs(minor), MINOR_PER_MAJOR)
    return f"{sign}{major}.{cents:02d}"


Amount = Annotated[
    int,
    BeforeValidator(parse_amount),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": AMOUNT_PATTERN,
            "examples": ["12.50"],
            "description": "Positive, at most two decimal places; a JSON number is accepted.",
        }
    ),
]
