"""Fraud rules: the rule set is data, the rules are code.

A rule set is a TOML file (`app/data/fraud_rules.toml`, or `BANK_FRAUD_RULES_PATH`) with
one `[rules.<code>]` table of parameters per rule; it is validated when it is loaded (a
bad file names the rule and the field), and its version is the SHA-256 of its bytes.
Each rule is a small pure function of its parameters and the movement's features (what
the scorer read about the movement: app.services.scoring), returning a `Reason` or
None. A score is the sum of the reasons' points, capped at 100; the same rule set and
features always give the same score and reasons, which is what makes a score
replayable (explain) and a rule change testable (backtest).
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.money import Amount, format_amount
from app.settings import ConfigurationError

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "data" / "fraud_rules.toml"
MAX_SCORE = 100
OUTGOING = ("withdrawal", "transfer")

Points = Annotated[int, Field(ge=0, le=MAX_SCORE)]


class RulesError(ConfigurationError):
    """A rule set that cannot be used; the message names the rule and the field."""


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    points: Points


class LargeAmount(_Params):
    min_amount: Amount


class Structuring(_Params):
    min_amount: Amount
    max_amount: Amount
    min_count: int = Field(ge=1, le=1000)
    window_hours: int = Field(ge=1, le=24 * 31)


class Velocity(_Params):
    max_count: int = Field(ge=0, le=999)
    window_minutes: int = Field(ge=1, le=24 * 60)


class NewPayeeLarge(_Params):
    min_amount: Amount


class UnusualAmount(_Params):
    multiple: Decimal = Field(gt=0, le=1000)
    window_days: int = Field(ge=1, le=366)
    min_prior: int = Field(ge=1, le=10_000)


class NewAccountDrain(_Params):
    min_amount: Amount
    max_age_hours: int = Field(ge=1, le=24 * 366)
    min_share: Decimal = Field(gt=0, le=1)


class FlaggedCounterparty(_Params):
    pass


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    large_amount: LargeAmount
    structuring: Structuring
    velocity: Velocity
    new_payee_large: NewPayeeLarge
    unusual_amount: UnusualAmount
    new_account_drain: NewAccountDrain
    flagged_counterparty: FlaggedCounterparty


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: _Rules


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    points: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "points": self.points, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Score:
    score: int
    reasons: list[Reason]

    @property
    def codes(self) -> list[str]:
        return [reason.code for reason in self.reasons]


Features = dict[str, Any]
"""What the scorer read about one movement (JSON-safe, stored with its score):

- `kind`, `amount` (minor units);
- `band_count`: the customer's movements within the structuring band and window;
- `transfers_in_window`: outgoing transfers from the source account within the velocity
  window;
- `first_payee`: a transfer, the customer's first to its destination (else None);
- `prior_out_count`, `prior_out_total`: the source account's scored outgoing movements
  over the unusual-amount window, before this one (None unless outgoing);
- `account_age_seconds`, `balance_before`: the source account's (None unless outgoing);
- `destination_flag`: "open" or "fraud" when the destination account has such a flag;
- `suppressed`: rule codes an allow-list entry for a party of the movement suppresses.
(All counts include this movement.)"""


def money(minor: int) -> str:
    """An amount as a detail states it: 9,500.00."""
    return f"{Decimal(minor) / 100:,.2f}"


def _large_amount(p: LargeAmount, f: Features) -> Reason | None:
    if f["amount"] < p.min_amount:
        return None
    detail = f"One {f['kind']} of {money(f['amount'])} (at least {money(p.min_amount)})"
    return Reason("large_amount", p.points, detail)


def _structuring(p: Structuring, f: Features) -> Reason | None:
    if not p.min_amount <= f["amount"] <= p.max_amount or f["band_count"] < p.min_count:
        return None
    detail = (
        f"{f['band_count']} movements of {money(p.min_amount)}–{money(p.max_amount)}"
        f" in {p.window_hours} h"
    )
    return Reason("structuring", p.points, detail)


def _velocity(p: Velocity, f: Features) -> Reason | None:
    if f["kind"] != "transfer" or f["transfers_in_window"] <= p.max_count:
        return None
    detail = (
        f"{f['transfers_in_window']} transfers from this account in {p.window_minutes} min"
        f" (more than {p.max_count})"
    )
    return Reason("velocity", p.points, detail)


def _new_payee_large(p: NewPayeeLarge, f: Features) -> Reason | None:
    if f["kind"] != "transfer" or not f["first_payee"] or f["amount"] < p.min_amount:
        return None
    detail = f"First transfer to this payee, {money(f['amount'])} (at least {money(p.min_amount)})"
    return Reason("new_payee_large", p.points, detail)


def _unusual_amount(p: UnusualAmount, f: Features) -> Reason | None:
    count, total = f["prior_out_count"], f["prior_out_total"]
    if f["kind"] not in OUTGOING or not count or count < p.min_prior or not total:
        return None
    # amount >= multiple × total / count, without dividing
    if Decimal(f["amount"]) * count < p.multiple * total:
        return None
    average = (Decimal(total) / count).quantize(Decimal(1))
    ratio = (Decimal(f["amount"]) * count / total).quantize(Decimal("0.1"))
    detail = (
        f"{money(f['amount'])} is {ratio}× the average outgoing amount of"
        f" {money(int(average))} over {p.window_days} days ({count} movements)"
    )
    return Reason("unusual_amount", p.points, detail)


def _new_account_drain(p: NewAccountDrain, f: Features) -> Reason | None:
    age, before = f["account_age_seconds"], f["balance_before"]
    if f["kind"] not in OUTGOING or age is None or before is None or before <= 0:
        return None
    if f["amount"] < p.min_amount or age >= p.max_age_hours * 3600:
        return None
    if Decimal(f["amount"]) < p.min_share * before:
        return None
    share = (Decimal(f["amount"]) * 100 / before).quantize(Decimal(1))
    detail = (
        f"{money(f['amount'])} out of an account opened {age // 3600} h ago:"
        f" {share} % of its balance of {money(before)}"
    )
    return Reason("new_account_drain", p.points, detail)


def _flagged_counterparty(p: FlaggedCounterparty, f: Features) -> Reason | None:
    state = f.get("destination_flag")
    if f["kind"] != "transfer" or state is None:
        return None
    what = "a flag resolved as fraud" if state == "fraud" else "an open fraud flag"
    return Reason("flagged_counterparty", p.points, f"The destination account has {what}")


RULES: dict[str, Callable[[Any, Features], Reason | None]] = {
    "large_amount": _large_amount,
    "structuring": _structuring,
    "velocity": _velocity,
    "new_payee_large": _new_payee_large,
    "unusual_amount": _unusual_amount,
    "new_account_drain": _new_account_drain,
    "flagged_counterparty": _flagged_counterparty,
}
"""Every rule, in the order reasons are listed."""


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: str  # SHA-256 of the file's bytes
    content: str
    rules: _Rules

    def params(self, code: str) -> Any:
        return getattr(self.rules, code)

    def score(self, features: Features) -> Score:
        """The rules on `features`: the same inputs always give the same score."""
        suppressed = set(features.get("suppressed") or ())
        reasons = []
        for code, rule in RULES.items():
            params = self.params(code)
            if not params.enabled or code in suppressed:
                continue
            if (reason := rule(params, features)) is not None:
                reasons.append(reason)
        return Score(min(MAX_SCORE, sum(r.points for r in reasons)), reasons)

    @property
    def windows(self) -> Windows:
        s, v, u = self.rules.structuring, self.rules.velocity, self.rules.unusual_amount
        return Windows(
            s.min_amount, s.max_amount, s.window_hours * 3600, v.window_minutes * 60, u.window_days
        )


@dataclass(frozen=True, slots=True)
class Windows:
    """The parameters the features themselves depend on (the rest only decide on them)."""

    band_min: int
    band_max: int
    band_seconds: int
    velocity_seconds: int
    unusual_days: int


def parse_rules(content: str, source: str = "rules") -> RuleSet:
    """A rule set from its TOML text; RulesError names what is wrong."""
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from exc
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"{where}: {error['msg']}")
        raise RulesError(f"{source}: " + "; ".join(problems)) from exc
    band = parsed.rules.structuring
    if band.min_amount > band.max_amount:
        raise RulesError(
            f"{source}: rules.structuring.max_amount: {format_amount(band.max_amount)} is below"
            f" min_amount {format_amount(band.min_amount)}"
        )
    version = hashlib.sha256(content.encode()).hexdigest()
    return RuleSet(version, content, parsed.rules)


def load_rules(path: Path | None) -> RuleSet:
    """The rule set at `path` (default: the one shipped in the package)."""
    path = path or DEFAULT_RULES
    try:
        content = path.read_bytes().decode("utf-8")  # as the bytes are: no newline translation
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"fraud rules {path}: cannot be read ({type(exc).__name__})") from exc
    return parse_rules(content, f"fraud rules {path}")
