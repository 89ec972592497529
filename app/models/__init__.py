"""Every table, imported here so Alembic and the services see one metadata."""

from app.models.audit import AuditCheckpoint, AuditRecord, AuditSigningKey
from app.models.base import Base
from app.models.customer import Customer, CustomerStatus, KycDocument, KycStatus
from app.models.fraud import (
    AccountDay,
    Flag,
    FlagDecision,
    FlagKey,
    FlagStatus,
    FraudBucket,
    FraudScore,
    Hold,
    HoldStatus,
    ListEntry,
    Payee,
    RuleSet,
    ScoreQueue,
)
from app.models.inbox import InboxClaim
from app.models.job import Job, JobKind
from app.models.ledger import (
    Account,
    AccountKind,
    AccountStatus,
    Entry,
    IdempotencyRecord,
    Journal,
    JournalKind,
    JournalStatus,
    OutgoingMinute,
)
from app.models.loan import (
    Installment,
    Loan,
    LoanApproval,
    LoanStatus,
    Recommendation,
    Repayment,
)
from app.models.user import LoginThrottle, RefreshToken, Role, User

__all__ = [
    "Account",
    "AccountDay",
    "AccountKind",
    "AccountStatus",
    "AuditCheckpoint",
    "AuditRecord",
    "AuditSigningKey",
    "Base",
    "Customer",
    "CustomerStatus",
    "Entry",
    "Flag",
    "FlagDecision",
    "FlagKey",
    "FlagStatus",
    "FraudBucket",
    "FraudScore",
    "Hold",
    "HoldStatus",
    "IdempotencyRecord",
    "InboxClaim",
    "Installment",
    "Job",
    "JobKind",
    "Journal",
    "JournalKind",
    "JournalStatus",
    "KycDocument",
    "KycStatus",
    "ListEntry",
    "Loan",
    "LoanApproval",
    "LoanStatus",
    "LoginThrottle",
    "OutgoingMinute",
    "Payee",
    "Recommendation",
    "RefreshToken",
    "Repayment",
    "Role",
    "RuleSet",
    "ScoreQueue",
    "User",
]
