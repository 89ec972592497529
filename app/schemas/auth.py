from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.passwords import PASSWORD_SCHEMA
from app.schemas.common import Body, Schema


class TokenOut(Schema):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    role: str


class RefreshIn(Body):
    refresh_token: str = Field(min_length=1, max_length=512)


class PasswordChangeIn(Body):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256, json_schema_extra=PASSWORD_SCHEMA)


class MeOut(Schema):
    user_id: str
    username: str
    role: str
    customer_id: str | None
