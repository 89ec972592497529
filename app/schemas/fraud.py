"""Fraud review: flags, scores and their explanation, held transactions, block and allow
lists, backtests (API.md §7)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.schemas.common import Body, IsoDate, IsoInstant, PlainText, Schema, UtcDateTime
from app.schemas.ledger import TransactionOut

Reason = PlainText


class ReasonOut(Schema):
    code: str = Field(examples=["structuring"])
    points: int
    detail: str = Field(examples=["4 movements of 9,000.00–9,999.99 in 24 h"])


class FlagOut(Schema):
    flag_id: str
    transaction_id: str = Field(description="The movement that opened the flag")
    transaction_ids: list[str] = Field(description="Every movement on the flag, oldest first")
    customer_id: str | None
    account_number: str | None
    score: int = Field(ge=0, le=100, description="The highest score on the flag")
    rules_version: str = Field(description="SHA-256 of the rule set that opened it")
    rule_codes: list[str]
    reasons: list[ReasonOut]
    status: Literal["open", "resolved"]
    decision: Literal["legitimate", "fraud"] | None
    note: str | None
    assigned_to: str | None
    created_at: UtcDateTime
    updated_at: UtcDateTime
    resolved_by: str | None
    resolved_at: UtcDateTime | None


class ScoreOut(Schema):
    transaction_id: str
    score: int
    rules_version: str
    reasons: list[ReasonOut]
    features: dict[str, Any] = Field(description="What the rules read about the movement")
    scored_at: UtcDateTime


class FlagDetailOut(FlagOut):
    transaction: TransactionOut
    scores: list[ScoreOut] = Field(description="The score of every movement on the flag")
    recent_activity: list[TransactionOut] = Field(description="The customer's 20 newest movements")


class FlagAssignOut(FlagOut):
    pass


class FlagResolve(Body):
    decision: Literal["legitimate", "fraud"]
    note: PlainText = Field(min_length=3, max_length=500)


class ExplainOut(Schema):
    flag_id: str
    identical: bool = Field(description="Every replayed score equals the stored one")
    scores: list[ExplainedScore]


class ExplainedScore(Schema):
    transaction_id: str
    rules_version: str
    features: dict[str, Any]
    stored_score: int
    stored_reasons: list[ReasonOut]
    replayed_score: int
    replayed_reasons: list[ReasonOut]


class HeldTransactionOut(TransactionOut):
    customer_id: str | None
    expires_at: str = Field(description="When the hold is rejected by itself if undecided")
    decided_by: str | None = Field(description="The admin's user id, or `system`")
    decided_at: str | None
    decision_reason: str | None


class ApproveIn(Body):
    reason: Reason | None = Field(default=None, max_length=500)


class RejectIn(Body):
    reason: Reason = Field(min_length=3, max_length=500)


class ListEntryIn(Body):
    list: Literal["block", "allow"]
    target_type: Literal["account", "customer", "national_id"]
    target: PlainText = Field(
        min_length=1,
        max_length=64,
        description="An account number, a customer id, or a national id (stored only as"
        " its keyed hash, which the entry shows instead)",
    )
    reason: Reason = Field(min_length=3, max_length=500)
    rules: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Allow entries only: the rule codes suppressed for this party",
    )
    expires_at: IsoInstant | None = None


class ListEntryOut(Schema):
    entry_id: str
    list: Literal["block", "allow"]
    target_type: Literal["account", "customer", "national_id"]
    target: str
    reason: str
    rules: list[str]
    expires_at: UtcDateTime | None
    created_by: str | None
    created_at: UtcDateTime


class BacktestIn(Body):
    # 64,000 characters stay under the 1 MiB body limit even as JSON \uXXXX escapes
    rules: str = Field(
        min_length=1, max_length=64_000, description="A candidate rule set, in the TOML format"
    )
    from_: IsoDate = Field(alias="from")
    to: IsoDate = Field(description="Inclusive end date")


class Confusion(Schema):
    """Against flags already resolved: a `fraud` flag is caught when the candidate still
    flags one of its movements; a `legitimate` one is raised when it still does."""

    true_positive: int = Field(description="Confirmed-fraud flags still caught")
    false_negative: int = Field(description="Confirmed-fraud flags it would miss")
    false_positive: int = Field(description="Legitimate flags it would still raise")
    true_negative: int = Field(description="Legitimate flags it would no longer raise")
    precision: str | None = Field(description="TP / (TP + FP), four places; null if 0/0")
    recall: str | None = Field(description="TP / (TP + FN), four places; null if 0/0")


class BacktestOut(Schema):
    current_version: str
    candidate_version: str
    movements: int = Field(description="Movements of the period re-scored")
    complete: bool = Field(description="False when the time budget cut the run short")
    current_flagged: int = Field(description="Movements the current rules flag")
    candidate_flagged: int = Field(description="Movements the candidate rules flag")
    added: int
    dropped: int
    added_transaction_ids: list[str] = Field(description="Up to 100")
    dropped_transaction_ids: list[str] = Field(description="Up to 100")
    confusion: Confusion
    notes: list[str]


ExplainOut.model_rebuild()
