from __future__ import annotations

from typing import Any

from pydantic import Field

from app.schemas.common import Schema, UtcDateTime
from app.schemas.ledger import AuditTransactionOut


class AuditRecordOut(Schema):
    seq: int
    at: UtcDateTime
    actor_id: str | None
    actor_role: str | None
    action: str
    entity_type: str | None
    entity_id: str | None
    outcome: str
    ip: str | None
    request_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class ChainVerificationOut(Schema):
    valid: bool
    entries_checked: int
    first_invalid_seq: int | None


class CheckpointOut(Schema):
    seq: int = Field(description="The chain's head when signed")
    hash: str = Field(description="That record's hash")
    at: str = Field(description="When it was signed, ISO 8601 UTC")
    signature: str = Field(
        description="Ed25519, base64, over `bank-audit-checkpoint:<seq>:<hash>:<at>`"
    )
    key_id: str


class SigningKeyOut(Schema):
    key_id: str
    public_key: str = Field(description="PEM (SubjectPublicKeyInfo)")


class KnownKeyOut(SigningKeyOut):
    first_used_at: str | None = Field(
        description="When it first signed a checkpoint (null: the current key, not used yet)"
    )
    current: bool = Field(description="The key signing checkpoints and exports now")


class KnownKeysOut(Schema):
    items: list[KnownKeyOut]


class MovementsOut(Schema):
    type: str
    status: str
    count: int
    sum: str


class OutcomeCountOut(Schema):
    kyc_outcome: str
    count: int


class RuleCountOut(Schema):
    rule: str
    opened: int


class FlagSummaryOut(Schema):
    opened: int
    resolved: int
    by_rule: list[RuleCountOut]
    median_minutes_to_resolve: float | None


class HoldSummaryOut(Schema):
    outcome: str
    count: int
    sum: str


class LoanSummaryOut(Schema):
    status: str
    delinquency: str
    count: int
    outstanding: str


class StaffActionsOut(Schema):
    actor_id: str | None
    action: str
    count: int


class SummaryOut(Schema):
    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    transactions: list[MovementsOut] = Field(description="Journals posted in the period")
    customers: list[OutcomeCountOut] = Field(description="Customers registered in it")
    flags: FlagSummaryOut
    holds: list[HoldSummaryOut] = Field(description="Holds placed in it, by outcome")
    loans: list[LoanSummaryOut] = Field(
        description="Loans applied for by its end, as they stood on its last day (today, for"
        " a period not over): status, delinquency and principal outstanding then"
    )
    large_movements: list[AuditTransactionOut] = Field(
        description="Deposits, withdrawals and transfers of 10,000.00 or more (first 1,000)"
    )
    large_movements_truncated: bool = Field(
        description="More than 1,000 large movements: list them with /api/audit/transactions"
        "?min_amount=10000.00"
    )
    staff_actions: list[StaffActionsOut] = Field(description="Admins' audited actions")
    sla_breaches: int = Field(description="Items waiting past their SLA deadline now")
    as_of: str = Field(
        description="When the report was read (ISO 8601 UTC): the SLA breaches are as of then"
        " (items waiting past their deadline now), and a period not over yet is reported up"
        " to then"
    )
