"""Keyset pagination: an opaque cursor naming the last key of the previous page."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.errors import ValidationFailed

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class Slice(Generic[T]):
    """One page of a list, and the cursor of the next page (None: this is the last)."""

    items: list[T]
    next_cursor: str | None


def read_limit(limit: int) -> int:
    """How many rows to read for a page of `limit`: one more tells whether a next exists."""
    return limit + 1


def slice_of(rows: list[T], limit: int, key: Callable[[T], int]) -> Slice[T]:
    """The page of `rows` (read with `read_limit(limit)`), its next cursor after `key` of
    its last item."""
    if len(rows) <= limit:
        return Slice(rows, None)
    return Slice(rows[:limit], encode_cursor(key(rows[limit - 1])))
