"""What the crash test reads straight from the server's database, read-only: the SQLite
file opened with `mode=ro`, PostgreSQL in read-only transactions. Only plain SQL both
engines share, no parameters, and nothing written. The loans' side (checks/crash_loans.py)
is read by `Books.loan_books` and `Books.filed`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from dataclasses import dataclass
from decimal import Decimal
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


@dataclass(frozen=True, slots=True)
class LoanRow:
    """One row of `loans`, amounts in cents."""

    id: int
    customer_id: int
    account_id: int
    principal: int
    status: str
    approvals: int
    approvals_required: int
    outstanding_principal: int
    disbursement_id: int | None
    decided_by: int | None


@dataclass(frozen=True, slots=True)
class RepaymentRow:
    """One row of `loan_repayments`: its principal part is what its allocation puts on
    principal (`principal_due` and `future_principal`), in cents."""

    id: int
    loan_id: int
    journal_id: int
    amount: int
    principal_part: int


@dataclass(frozen=True, slots=True)
class JournalRow:
    id: int
    kind: str
    amount: int
    description: str | None
    from_account_id: int | None
    to_account_id: int | None


@dataclass(frozen=True, slots=True)
class LoanBooks:
    """What the loans left in the database: the loans, the admins' approvals (loan id,
    admin's user id), the journals of kind disbursement and repayment, the repayments,
    and the balance of the bank's internal `loans` account (−outstanding principal)."""

    loans: dict[int, LoanRow]
    approvals: set[tuple[int, int]]
    disbursements: list[JournalRow]
    repayment_journals: dict[int, JournalRow]
    repayments: dict[int, RepaymentRow]
    loans_account: int


PRINCIPAL_PARTS = ("principal_due", "future_principal")


def cents(text: Any) -> int:
    """A two-place decimal string ("12.34") in cents."""
    return int((Decimal(str(text)) * 100).to_integral_exact())


def _principal_part(allocation: Any) -> int:
    return sum(
        cents(part["amount"]) for part in _json_list(allocation) if part["part"] in PRINCIPAL_PARTS
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _sqlite_rows(path: str, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql).fetchall()


def _body(body: Any) -> dict[str, Any]:
    answer = json.loads(body) if isinstance(body, str | bytes) else body
    return answer if isinstance(answer, dict) else {}


def _transaction_id(body: Any) -> str | None:
    return _body(body).get("transaction_id")


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

    async def filed(self, prefix: str) -> dict[str, tuple[int, dict[str, Any]]]:
        """Keys filed whose name starts with `prefix`: their status (0 while the first
        request is in flight) and the answer filed (a JSON object, {} while in flight)."""
        rows = await self.rows(
            "SELECT key, response_status, response_body FROM idempotency_keys"
            f" WHERE key LIKE '{prefix}%'"
        )
        return {row[0]: (int(row[1]), _body(row[2])) for row in rows}

    async def loan_books(self) -> LoanBooks:
        loans = await self.rows(
            "SELECT id, customer_id, account_id, principal, status, approvals,"
            " approvals_required, outstanding_principal, disbursement_id, decided_by FROM loans"
        )
        approvals = await self.rows("SELECT loan_id, admin_id FROM loan_approvals")
        journals = await self.rows(
            "SELECT id, kind, amount, description, from_account_id, to_account_id FROM journals"
            " WHERE kind IN ('disbursement', 'repayment')"
        )
        repayments = await self.rows(
            "SELECT id, loan_id, journal_id, amount, allocation FROM loan_repayments"
        )
        lent = await self.rows(
            "SELECT COALESCE(SUM(balance), 0) FROM accounts"
            " WHERE kind = 'internal' AND code = 'loans'"
        )
        posted = [
            JournalRow(int(r[0]), r[1], int(r[2]), r[3], _optional_int(r[4]), _optional_int(r[5]))
            for r in journals
        ]
        return LoanBooks(
            loans={
                int(r[0]): LoanRow(
                    int(r[0]),
                    int(r[1]),
                    int(r[2]),
                    int(r[3]),
                    r[4],
                    int(r[5]),
                    int(r[6]),
                    int(r[7]),
                    _optional_int(r[8]),
                    _optional_int(r[9]),
                )
                for r in loans
            },
            approvals={(int(r[0]), int(r[1])) for r in approvals},
            disbursements=[j for j in posted if j.kind == "disbursement"],
            repayment_journals={j.id: j for j in posted if j.kind == "repayment"},
            repayments={
                int(r[0]): RepaymentRow(
                    int(r[0]), int(r[1]), int(r[2]), int(r[3]), _principal_part(r[4])
                )
                for r in repayments
            },
            loans_account=int(lent[0][0]),
        )

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
