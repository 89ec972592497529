"""What the crash test reads straight from the server's database, read-only: the SQLite
file opened with `mode=ro`, PostgreSQL in read-only transactions. Only plain SQL both
engines share, no parameters, and nothing written."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

SQLITE_PREFIX = "sqlite+aiosqlite:///"
PENDING_KYC = "Pending KYC Approval"
MOVEMENT_KINDS = ("deposit", "withdrawal", "transfer")  # the journals fraud scoring queues
_MOVEMENT_IN = ", ".join(f"'{kind}'" for kind in MOVEMENT_KINDS)


@dataclass(frozen=True, slots=True)
class Posted:
    """The journals that carry one description (the crash test's Idempotency-Key)."""

    count: int
    transaction_id: str  # the lowest journal id among them


@dataclass(frozen=True, slots=True)
class Scored:
    """One movement journal as fraud scoring left it."""

    flagged: bool | None  # journals.flagged: NULL until scored
    scores: int  # its fraud_scores rows
    flag_id: int | None  # the flag its score names


@dataclass(frozen=True, slots=True)
class Scoring:
    """What fraud scoring wrote: every movement journal, the scores of journals that are
    not one (missing, or of another kind), and each flag's transaction ids."""

    movements: dict[int, Scored]
    strays: dict[int, str | None]  # a score's journal id → that journal's kind (None: none)
    flags: dict[int, list[int]]


def _sqlite_rows(path: str, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql).fetchall()


def _transaction_id(body: Any) -> str | None:
    answer = json.loads(body) if isinstance(body, str | bytes) else body
    return answer.get("transaction_id") if isinstance(answer, dict) else None


def _json_list(value: Any) -> list[Any]:
    """A JSON column as the raw driver returns it: SQLite text, asyncpg str (json)."""
    parsed = json.loads(value) if isinstance(value, str | bytes) else value
    return parsed if isinstance(parsed, list) else [parsed]


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)  # SQLite stores 0 and 1


class Books:
    def __init__(self, database_url: str) -> None:
        self.url = database_url

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.url.startswith(SQLITE_PREFIX):
            return await asyncio.to_thread(_sqlite_rows, self.url[len(SQLITE_PREFIX) :], sql)
        import asyncpg

        dsn = self.url.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(dsn, server_settings={"default_transaction_read_only": "on"})
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def transfers(self, prefix: str) -> dict[str, Posted]:
        """Transfer journals whose description starts with `prefix`, by description."""
        rows = await self.rows(
            "SELECT description, COUNT(*), MIN(id) FROM journals"
            f" WHERE kind = 'transfer' AND description LIKE '{prefix}%' GROUP BY description"
        )
        return {row[0]: Posted(int(row[1]), str(row[2])) for row in rows}

    async def idempotency_keys(self, prefix: str) -> dict[str, tuple[int, str | None]]:
        """Keys filed whose name starts with `prefix`: their status (0 while the first
        request is in flight) and the transaction id of the answer filed."""
        rows = await self.rows(
            "SELECT key, response_status, response_body FROM idempotency_keys"
            f" WHERE key LIKE '{prefix}%'"
        )
        return {row[0]: (int(row[1]), _transaction_id(row[2])) for row in rows}

    async def customers(self, prefix: str) -> dict[str, str | None]:
        """Users whose username starts with `prefix`, with their customer's status."""
        rows = await self.rows(
            "SELECT u.username, c.status FROM users u"
            " LEFT JOIN customers c ON c.user_id = u.id"
            f" WHERE u.username LIKE '{prefix}%'"
        )
        return {row[0]: row[1] for row in rows}

    async def duplicate_usernames(self) -> list[str]:
        rows = await self.rows(
            "SELECT LOWER(username) FROM users GROUP BY LOWER(username) HAVING COUNT(*) > 1"
        )
        return [row[0] for row in rows]

    async def customer_total(self) -> int:
        """The sum of every customer account's balance, in cents."""
        rows = await self.rows(
            "SELECT COALESCE(SUM(balance), 0) FROM accounts WHERE kind = 'customer'"
        )
        return int(rows[0][0])

    async def job_states(self) -> dict[str, int]:
        rows = await self.rows("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {row[0]: int(row[1]) for row in rows}

    async def score_queue(self) -> list[tuple[int, str | None, Any]]:
        """The movements queued for scoring: journal id, the scorer leasing it, until when."""
        rows = await self.rows(
            "SELECT journal_id, owner, lease_until FROM score_queue ORDER BY journal_id"
        )
        return [(int(row[0]), row[1], row[2]) for row in rows]

    async def scoring(self) -> Scoring:
        movements = await self.rows(
            "SELECT j.id, j.flagged, COUNT(s.journal_id), MIN(s.flag_id) FROM journals j"
            " LEFT JOIN fraud_scores s ON s.journal_id = j.id"
            f" WHERE j.kind IN ({_MOVEMENT_IN}) GROUP BY j.id, j.flagged"
        )
        strays = await self.rows(
            "SELECT s.journal_id, j.kind FROM fraud_scores s"
            " LEFT JOIN journals j ON j.id = s.journal_id"
            f" WHERE j.id IS NULL OR j.kind NOT IN ({_MOVEMENT_IN})"
        )
        flags = await self.rows("SELECT id, transaction_ids FROM fraud_flags")
        return Scoring(
            movements={
                int(row[0]): Scored(
                    _flag(row[1]), int(row[2]), None if row[3] is None else int(row[3])
                )
                for row in movements
            },
            strays={int(row[0]): row[1] for row in strays},
            flags={int(row[0]): [int(i) for i in _json_list(row[1])] for row in flags},
        )
