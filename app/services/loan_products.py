"""Loan products as data: `app/data/loan_products.toml` (or BANK_LOAN_PRODUCTS_PATH), read
and checked once at start-up. A bad file refuses to start, naming the field."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.errors import ValidationFailed
from app.money import Amount, format_amount
from app.services.amortization import monthly_payment, rounding_slack
from app.settings import ConfigurationError

DEFAULT_PRODUCTS = Path(__file__).resolve().parent.parent / "data" / "loan_products.toml"
RATE_PATTERN = r"^[0-9]{1,2}(\.[0-9]{1,2})?$"  # percent, 0 to 99.99, at most two decimals


class ProductsError(ConfigurationError):
    """The loan products file is missing or malformed."""


class _Product(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60)
    annual_rate: Annotated[str, Field(pattern=RATE_PATTERN)]
    min_principal: Amount
    max_principal: Amount
    min_term_months: int = Field(ge=1, le=600)
    max_term_months: int = Field(ge=1, le=600)

    @model_validator(mode="after")
    def _ranges(self) -> _Product:
        if self.min_principal > self.max_principal:
            raise ValueError("max_principal is below min_principal")
        if self.min_term_months > self.max_term_months:
            raise ValueError("max_term_months is below min_term_months")
        slack = rounding_slack(Decimal(self.annual_rate), self.max_term_months)
        payment = monthly_payment(
            self.min_principal, Decimal(self.annual_rate), self.max_term_months
        )
        if slack >= payment:
            raise ValueError(
                f"at {self.annual_rate} % over {self.max_term_months} months the installments'"
                f" rounding (up to a cent a row, compounding at the rate) can add up to"
                f" {format_amount(slack)}, more than the payment of {format_amount(payment)} on"
                " min_principal, so a schedule could end rows early: lower annual_rate or"
                " max_term_months, or raise min_principal"
            )
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    products: dict[Annotated[str, Field(pattern=r"^[a-z_]{1,16}$")], _Product] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Product:
    code: str
    name: str
    annual_rate: Decimal  # percent: 11.99
    min_principal: int  # minor units
    max_principal: int
    min_term_months: int
    max_term_months: int

    @property
    def rate_bps(self) -> int:
        return int(self.annual_rate * 100)

    def check(self, *, principal: int, term_months: int) -> None:
        """A principal and term this product lends: else 422 naming the field."""
        if not self.min_principal <= principal <= self.max_principal:
            raise ValidationFailed(
                f"A {self.code} loan lends {format_amount(self.min_principal)} to"
                f" {format_amount(self.max_principal)}.",
                field="principal",
            )
        if not self.min_term_months <= term_months <= self.max_term_months:
            raise ValidationFailed(
                f"A {self.code} loan runs {self.min_term_months} to {self.max_term_months} months.",
                field="term_months",
            )


@dataclass(frozen=True, slots=True)
class Catalog:
    products: dict[str, Product]

    def get(self, code: str) -> Product:
        product = self.products.get(code)
        if product is None:
            known = ", ".join(self.products)
            raise ValidationFailed(
                f"No loan product {code!r}; the products are {known}.", field="product"
            )
        return product


def parse_products(content: str, source: str = "loan products") -> Catalog:
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise ProductsError(f"{source}: not valid TOML: {exc}") from exc
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ProductsError(f"{source}: " + "; ".join(problems)) from exc
    return Catalog(
        {
            code: Product(
                code,
                p.name,
                Decimal(p.annual_rate),
                p.min_principal,
                p.max_principal,
                p.min_term_months,
                p.max_term_months,
            )
            for code, p in parsed.products.items()
        }
    )


def load_products(path: Path | None) -> Catalog:
    """The products at `path` (default: the file shipped in the package)."""
    path = path or DEFAULT_PRODUCTS
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProductsError(f"loan products {path}: cannot be read ({type(exc).__name__})") from exc
    return parse_products(content, f"loan products {path}")
