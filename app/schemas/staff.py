from __future__ import annotations

from typing import Literal

from pydantic import EmailStr, Field

from app.models import User
from app.passwords import PASSWORD_SCHEMA
from app.schemas.common import Body, Schema, UtcDateTime
from app.schemas.customer import USERNAME_RE


class StaffCreate(Body):
    username: str = Field(pattern=USERNAME_RE)
    email: EmailStr
    password: str = Field(min_length=1, max_length=256, json_schema_extra=PASSWORD_SCHEMA)
    role: Literal["admin", "auditor"]


class StaffOut(Schema):
    user_id: str
    username: str
    email: str
    role: str
    is_active: bool = True
    created_at: UtcDateTime

    @classmethod
    def of(cls, user: User) -> StaffOut:
        return cls(
            user_id=str(user.id),
            username=user.username,
            email=user.email,
            role=user.role,
            is_active=user.is_active,
            created_at=user.created_at,
        )
