"""What the crash test's clients keep of an answer, and how they write money: shared by
the transfers' and registrations' clients (checks/crash.py) and the loans' clients
(checks/crash_loans.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

CENT = Decimal("0.01")


def money(cents: int) -> Decimal:
    """Minor units as the API writes them (two places)."""
    return (Decimal(cents) / 100).quantize(CENT)


@dataclass(frozen=True, slots=True)
class Answer:
    """A response's status, whether it was a replay of an Idempotency-Key's first answer,
    its problem code, and its JSON object (empty if it had none)."""

    status: int
    replayed: bool
    code: str | None
    body: dict[str, Any] = field(compare=False, repr=False)

    @classmethod
    def of(cls, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        return cls(
            response.status_code,
            response.headers.get("Idempotent-Replayed") == "true",
            body.get("code"),
            body,
        )

    @property
    def transaction_id(self) -> str | None:
        value = self.body.get("transaction_id")
        return value if isinstance(value, str) else None

    def __str__(self) -> str:
        replay = " (replayed)" if self.replayed else ""
        return f"{self.status} {self.code or self.transaction_id or ''}{replay}".strip()
