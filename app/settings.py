"""The one settings object. Nothing else in the code base reads the environment."""

from __future__ import annotations

import json
import os
import secrets
from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(RuntimeError):
    """The service refuses to start with this configuration."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BANK_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None, description="Defaults to sqlite+aiosqlite:///<data_dir>/bank.db"
    )
    jwt_secret: str | None = Field(default=None, min_length=32)
    pii_secret: str | None = Field(default=None, min_length=32)
    # The audit checkpoints' and exports' Ed25519 key is derived from it (app/services/
    # checkpoints.py): keep it as secret as the others, and the public key where auditors
    # can read it (GET /api/audit/checkpoints/key).
    audit_signing_key: str | None = Field(default=None, min_length=32)
    audit_checkpoint_records: int = Field(default=1000, ge=1)
    audit_checkpoint_seconds: float = Field(default=300.0, gt=0)
    bank_name: str = "Open Core Bank"
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    access_token_minutes: int = Field(default=15, ge=1, le=24 * 60)
    refresh_token_days: int = Field(default=14, ge=1, le=365)
    # How long a worker trusts its cached answer that a token's session is still open.
    session_check_seconds: float = Field(default=1.0, ge=0)
    upload_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    request_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_minutes: int = Field(default=15, ge=1)
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    watchlist_path: Path | None = None
    job_sweep_seconds: float = Field(default=3.0, gt=0)
    job_lease_seconds: int = Field(default=60, ge=1)
    sqlite_busy_timeout_ms: int = Field(default=30000, ge=0)
    # Page cache per SQLite connection (SQLite's default is 2 MiB): large books keep
    # their index pages in memory, so a transfer costs the same at 1 M entries as at 1 k.
    sqlite_cache_mib: int = Field(default=32, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    # Structured JSON request logs; unset means on in production, off elsewhere.
    log_json: bool | None = None
    # GET /metrics for Prometheus, unauthenticated (see docs/DECISIONS.md).
    metrics_enabled: bool = True
    # Set by `bank serve --workers N` (N > 1) for prometheus_client's multiprocess mode,
    # which reads the same variable itself; unset means one in-process registry.
    metrics_multiproc_dir: Path | None = Field(
        default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR"
    )
    max_transaction: Decimal = Field(default=Decimal("1000000.00"), gt=0, decimal_places=2)
    daily_limit: Decimal = Field(default=Decimal("100000.00"), gt=0, decimal_places=2)
    # Fraud detection (app/services/scoring.py, app/services/holds.py; README, Fraud).
    fraud_scoring: bool = True
    fraud_rules_path: Path | None = None
    fraud_flag_score: int = Field(default=50, ge=1, le=100)
    fraud_batch_size: int = Field(default=200, ge=1, le=5000)
    fraud_lease_seconds: int = Field(default=10, ge=1)
    fraud_sweep_seconds: float = Field(default=1.0, gt=0)
    fraud_linger_seconds: float = Field(default=0.1, ge=0, le=5)
    fraud_backtest_seconds: float = Field(default=20.0, gt=0)
    review_threshold: Decimal = Field(default=Decimal("50000.00"), gt=0, decimal_places=2)
    hold_expiry: timedelta = Field(default=timedelta(hours=72), gt=timedelta(0))
    # Loans (app/services/loans.py, app/services/accrual.py; README, Loans).
    loan_products_path: Path | None = None
    four_eyes_threshold: Decimal = Field(default=Decimal("100000.00"), gt=0, decimal_places=2)
    loan_grace_days: int = Field(default=5, ge=0, le=365)
    loan_late_fee: Decimal = Field(default=Decimal("25.00"), ge=0, decimal_places=2)
    # The reviewers' inbox (app/services/inbox.py): how long each kind of item may wait.
    sla_kyc_review: timedelta = Field(default=timedelta(hours=24), gt=timedelta(0))
    sla_loan_approval: timedelta = Field(default=timedelta(hours=24), gt=timedelta(0))
    sla_fraud_flag: timedelta = Field(default=timedelta(hours=24), gt=timedelta(0))
    sla_held_transaction: timedelta = Field(default=timedelta(hours=4), gt=timedelta(0))
    # Rate limits (app/ratelimit.py), as `limits` strings: "N/second|minute|hour|day", several
    # joined by ";". Each is far above honest use and above what the project's own load
    # tools send from one address (README, Configuration); production may lower them.
    rate_limits_enabled: bool = True
    # Unset: each worker process counts in its own memory. `async+redis://host:port`: every
    # worker and machine spends one shared budget.
    rate_limit_storage_url: str | None = None
    # Keeps apart the counters of several deployments that share one Redis.
    rate_limit_key_prefix: str = Field(default="bank", min_length=1, max_length=64)
    rate_limit_login_per_ip: str = "1800/minute"
    rate_limit_login_per_username: str = "30/minute"
    rate_limit_registration_per_ip: str = "300/minute"
    rate_limit_money_per_user: str = "6000/minute"
    rate_limit_money_per_ip: str = "5000/second"
    rate_limit_export_per_user: str = "120/minute"

    @field_validator(
        "rate_limit_login_per_ip",
        "rate_limit_login_per_username",
        "rate_limit_registration_per_ip",
        "rate_limit_money_per_user",
        "rate_limit_money_per_ip",
        "rate_limit_export_per_user",
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        """A limit that does not parse refuses the start, not the first request."""
        try:
            parse_many(value)
        except ValueError as error:
            raise ValueError(f'{value!r} is not a rate limit such as "30/minute"') from error
        return value

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _async_storage(cls, value: str | None) -> str | None:
        """The limiter is asyncio's: limits' synchronous storages would block the loop."""
        if value and not value.startswith("async+"):
            raise ValueError("use an asyncio storage URL, such as async+redis://host:6379")
        return value or None

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'bank.db'}"

    @property
    def max_transaction_minor(self) -> int:
        return int(self.max_transaction * 100)

    @property
    def daily_limit_minor(self) -> int:
        return int(self.daily_limit * 100)

    @property
    def review_threshold_minor(self) -> int:
        return int(self.review_threshold * 100)

    @property
    def four_eyes_threshold_minor(self) -> int:
        return int(self.four_eyes_threshold * 100)

    @property
    def loan_late_fee_minor(self) -> int:
        return int(self.loan_late_fee * 100)

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.env == "production"

    @property
    def metrics_dir(self) -> Path:
        """Where `bank serve` keeps the worker processes' shared metric files."""
        return self.data_dir / "metrics"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def kyc_dir(self) -> Path:
        return self.data_dir / "kyc"

    @cached_property
    def watchlist_file(self) -> Path:
        return self.watchlist_path or Path(__file__).parent / "data" / "watchlist.txt"

    def resolve_secrets(self) -> Settings:
        """Fill in missing secrets: required in production, generated once and kept in the
        data directory otherwise (so tokens survive restarts and several workers agree)."""
        names = ("jwt_secret", "pii_secret", "audit_signing_key")
        missing = [name for name in names if not getattr(self, name)]
        if not missing:
            return self
        if self.env == "production":
            names = ", ".join(f"BANK_{name.upper()}" for name in missing)
            raise ConfigurationError(f"{names} must be set when BANK_ENV=production")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "secrets.json"
        stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        if any(name not in stored for name in missing):
            for name in missing:
                stored.setdefault(name, secrets.token_urlsafe(48))
            # A concurrent worker may have written first; keep whatever it wrote, and add
            # only what is still missing (a file from an older version lacks newer names).
            if path.exists():
                current = json.loads(path.read_text())
                stored = {**stored, **current}
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(stored, handle)
            os.replace(tmp, path)
        for name in missing:
            setattr(self, name, stored[name])
        return self


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides).resolve_secrets()  # type: ignore[arg-type]
