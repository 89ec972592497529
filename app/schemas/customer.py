from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import BaseModel, EmailStr, Field, ValidationInfo, field_validator

from app.models import Customer, KycDocument, User
from app.passwords import PASSWORD_SCHEMA, password_problem
from app.schemas.common import Body, IsoDate, PlainText, Schema, UtcDateTime

USERNAME_RE = r"^[a-z0-9_.-]{3,32}$"
E164_RE = r"^\+[1-9][0-9]{6,14}$"
NATIONAL_ID_RE = r"^[A-Za-z0-9]{4,32}$"
MIN_AGE = 18


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


class RegistrationForm(BaseModel):
    """The text fields of the registration form (the two files are separate parts)."""

    username: Annotated[
        str,
        Field(
            # What is accepted: stored trimmed and in lower case.
            pattern=r"^[ \t]*[A-Za-z0-9_.-]{3,32}[ \t]*$",
            description="3–32 chars of a-z 0-9 _ . - (stored in lower case)",
        ),
    ]
    email: EmailStr
    password: Annotated[
        str,
        Field(
            description="At least 10 characters; not the username, the email or a common password.",
            json_schema_extra=PASSWORD_SCHEMA,
        ),
    ]
    full_name: Annotated[PlainText, Field(min_length=2, max_length=100)]
    date_of_birth: Annotated[IsoDate, Field(description="YYYY-MM-DD; the customer must be 18+.")]
    phone: Annotated[str, Field(pattern=E164_RE, description="E.164, e.g. +14155550123")]
    address: Annotated[PlainText, Field(min_length=5, max_length=200)]
    national_id: Annotated[
        str, Field(pattern=NATIONAL_ID_RE, description="4–32 letters and digits; shown masked.")
    ]

    @field_validator("username", mode="before")
    @classmethod
    def _username(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip(" \t").lower()
            if not re.fullmatch(USERNAME_RE, value):
                raise ValueError("must be 3–32 characters of a-z, 0-9, '_', '.', '-'")
        return value

    @field_validator("email", mode="after")
    @classmethod
    def _email(cls, value: str) -> str:
        return value.lower()

    @field_validator("full_name", "address", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        return " ".join(value.split()) if isinstance(value, str) else value

    @field_validator("password")
    @classmethod
    def _password(cls, value: str, info: ValidationInfo) -> str:
        problem = password_problem(
            value, username=info.data.get("username", ""), email=info.data.get("email", "")
        )
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("date_of_birth")
    @classmethod
    def _adult(cls, value: date) -> date:
        today = datetime.now(UTC).date()
        if value > today:
            raise ValueError("must be in the past")
        if age_on(value, today) < MIN_AGE:
            raise ValueError(f"the customer must be at least {MIN_AGE} years old")
        return value


class RegistrationOut(Schema):
    customer_id: str
    username: str
    email: str
    status: str
    message: str


class DocumentOut(Schema):
    document_id: str
    kind: str
    content_type: str
    size: int
    sha256: str
    uploaded_at: UtcDateTime

    @classmethod
    def of(cls, document: KycDocument) -> DocumentOut:
        return cls(
            document_id=str(document.id),
            kind=document.kind,
            content_type=document.content_type,
            size=document.size,
            sha256=document.sha256,
            uploaded_at=document.uploaded_at,
        )


class KycOut(Schema):
    status: str
    reasons: list[str]
    checked_at: UtcDateTime | None
    documents: list[DocumentOut]


class CustomerOut(Schema):
    customer_id: str
    username: str
    email: str
    full_name: str
    date_of_birth: date
    phone: str
    address: str
    national_id: str = Field(description="Masked: only the last four characters are shown.")
    status: str
    kyc: KycOut
    created_at: UtcDateTime

    @classmethod
    def of(cls, customer: Customer, user: User, documents: list[KycDocument]) -> CustomerOut:
        return cls(
            customer_id=str(customer.id),
            username=user.username,
            email=user.email,
            full_name=customer.full_name,
            date_of_birth=customer.date_of_birth,
            phone=customer.phone,
            address=customer.address,
            national_id=customer.masked_national_id,
            status=customer.status,
            kyc=KycOut(
                status=customer.kyc_status,
                reasons=list(customer.kyc_reasons or []),
                checked_at=customer.kyc_checked_at,
                documents=[DocumentOut.of(d) for d in documents],
            ),
            created_at=customer.created_at,
        )


class CustomerUpdate(Body):
    email: EmailStr | None = None
    phone: Annotated[str | None, Field(pattern=E164_RE)] = None
    address: Annotated[PlainText | None, Field(min_length=5, max_length=200)] = None

    @field_validator("email", mode="after")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return value.lower() if value else value
