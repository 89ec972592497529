"""Domain errors. Each has a stable snake_case `code` (the class name) and an HTTP status;
one handler in app.problems turns them into RFC 9457 problem+json."""

from __future__ import annotations

import re
from typing import Any, ClassVar


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class BankError(Exception):
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"
    code: ClassVar[str] = "bad_request"
    headers: dict[str, str] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            cls.code = _snake(cls.__name__)

    def __init__(
        self,
        detail: str | None = None,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.field = field
        if headers is not None:
            self.headers = headers

    denied_entity: tuple[str, str] | None = None
    audited_refusal: ClassVar[bool] = False
    """A refusal by a rule of the money path: audited (outcome `failed`) where it happens."""

    def denying(self, entity_type: str, entity_id: str) -> BankError:
        """Mark a 404 that hides someone else's object, so the denial gets audited."""
        self.denied_entity = (entity_type, entity_id)
        return self

    def errors(self) -> list[dict[str, str]] | None:
        return [{"field": self.field, "message": self.detail}] if self.field else None


# 401
class NotAuthenticated(BankError):
    status, title = 401, "Not authenticated"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class InvalidToken(NotAuthenticated):
    title = "Invalid or expired token"


class InvalidCredentials(NotAuthenticated):
    title = "Invalid username or password"


class TokenReused(NotAuthenticated):
    title = "Refresh token reused; the session has been revoked"


# 403
class Forbidden(BankError):
    status, title = 403, "Not allowed"


class KycRequired(Forbidden):
    title = "KYC verification required"
    audited_refusal = True


class CustomerSuspended(Forbidden):
    title = "Customer is suspended"
    audited_refusal = True


# 404
class NotFound(BankError):
    status, title = 404, "Not found"


class CustomerNotFound(NotFound):
    title = "Customer not found"


# 409
class Conflict(BankError):
    status, title = 409, "Conflict"


class UsernameTaken(Conflict):
    title = "Username already taken"


class EmailTaken(Conflict):
    title = "Email already registered"


# 413 / 415
class PayloadTooLarge(BankError):
    status, title = 413, "Payload too large"


class UnsupportedMediaType(BankError):
    status, title = 415, "Unsupported media type"


# 422
class ValidationFailed(BankError):
    status, title, code = 422, "Validation failed", "validation_error"


class InstantInFuture(ValidationFailed):
    title, code = "That instant has not happened yet", "at_in_future"


class WeakPassword(ValidationFailed):
    title, code = "Password does not meet the policy", "weak_password"


class InvalidCurrentPassword(ValidationFailed):
    title, code = "Current password is incorrect", "invalid_current_password"


# 423 / 429
class RateLimited(BankError):
    status, title = 429, "Too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many requests of this kind; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


class AccountLocked(BankError):
    status, title = 423, "Too many failed logins; try again later"


# Accounts and money movement (API.md §4, §5)
class InvalidAccountNumber(ValidationFailed):
    title, code = "Invalid account number", "invalid_account_number"


class AccountNotFound(NotFound):
    title = "Account not found"


class TransactionNotFound(NotFound):
    title = "Transaction not found"


class AccountNotActive(Conflict):
    title = "Account is not active"
    audited_refusal = True


class BalanceNotZero(Conflict):
    title = "Account balance is not zero"


class AccountClosed(Conflict):
    title = "Account is closed"


class StatusUnchanged(Conflict):
    title = "The status is already that"


class InsufficientFunds(ValidationFailed):
    title, code = "Insufficient funds", "insufficient_funds"
    audited_refusal = True


class CurrencyMismatch(ValidationFailed):
    title, code = "Currency mismatch", "currency_mismatch"
    audited_refusal = True


class SameAccount(ValidationFailed):
    title, code = "Source and destination are the same account", "same_account"
    audited_refusal = True


class AmountTooLarge(ValidationFailed):
    title, code = "Amount above the per-transaction maximum", "amount_too_large"


class DailyLimitExceeded(ValidationFailed):
    title, code = "Daily outgoing limit exceeded", "daily_limit_exceeded"
    audited_refusal = True


class BlockedCounterparty(ValidationFailed):
    title, code = "Counterparty on the block list", "blocked_counterparty"
    audited_refusal = True


class AlreadyDecided(Conflict):
    title = "Already decided"


class FlagNotFound(NotFound):
    title = "Flag not found"


class ListEntryNotFound(NotFound):
    title = "List entry not found"


class IdempotencyKeyReused(ValidationFailed):
    title, code = "Idempotency key reused with a different request", "idempotency_key_reused"


class IdempotencyInProgress(Conflict):
    title = "A request with this idempotency key is still in progress"


class LoanNotFound(NotFound):
    title = "Loan not found"


class LoanNotActive(Conflict):
    title = "The loan is not active"


class SameApprover(Conflict):
    title = "This admin has already approved the loan"
    audited_refusal = True


class ConflictOfInterest(Forbidden):
    title = "An admin may not decide for the customer they are linked to"
    audited_refusal = True


class PayoffExceeded(ValidationFailed):
    title, code = "Amount above the payoff amount", "payoff_exceeded"


class PayoffRequired(ValidationFailed):
    title, code = "Pay the payoff amount to close the loan", "payoff_required"


class DocumentNotFound(NotFound):
    title = "Document not found"


class StaffNotFound(NotFound):
    title = "Staff user not found"


class CannotDisableSelf(Conflict):
    title = "An admin cannot disable their own user"


class InboxItemNotFound(NotFound):
    title = "Inbox item not found"
