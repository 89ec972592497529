from __future__ import annotations

from typing import Any

from pydantic import Field

from app.schemas.common import Schema, UtcDateTime


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
