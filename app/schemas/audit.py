from __future__ import annotations

from typing import Any

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
