from __future__ import annotations

from typing import Literal

from pydantic import EmailStr, Field

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
    created_at: UtcDateTime
