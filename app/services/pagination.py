"""Keyset pagination: an opaque cursor naming the last key of the previous page."""

from __future__ import annotations

import base64

from app.errors import ValidationFailed


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(f"k:{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, key = raw.split(":", 1)
        if prefix != "k":
            raise ValueError(cursor)
        return int(key)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("The cursor is not valid.", field="cursor") from exc
