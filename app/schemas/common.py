from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
)

T = TypeVar("T")


def iso_utc(value: datetime) -> str:
    """An instant as the API writes it: RFC 3339, UTC, with a Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UtcDateTime = Annotated[datetime, PlainSerializer(iso_utc, return_type=str)]


ISO_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date(value: object) -> object:
    """Only YYYY-MM-DD: pydantic alone would also read `0` or `1700000000` as a date."""
    if isinstance(value, date) or (isinstance(value, str) and ISO_DATE_RE.fullmatch(value)):
        return value
    raise ValueError("must be a date as YYYY-MM-DD")


IsoDate = Annotated[date, BeforeValidator(_iso_date)]

# An instant: a date, a time and an offset (Z or ±HH:MM), as API.md §1 writes times.
ISO_INSTANT_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|z|[+-][0-9]{2}:?[0-9]{2})"
)


def _iso_instant(value: object) -> object:
    """Only ISO 8601 with an offset: pydantic alone would also read `0.5` or `1700000000`
    as Unix seconds."""
    if isinstance(value, datetime) or (isinstance(value, str) and ISO_INSTANT_RE.fullmatch(value)):
        return value
    raise ValueError("must be an instant as ISO 8601 with its offset, such as 2026-12-01T10:00:00Z")


IsoInstant = Annotated[AwareDatetime, BeforeValidator(_iso_instant)]


def day_start(value: date | None, *, next_day: bool = False) -> datetime | None:
    """A `YYYY-MM-DD` query filter as the UTC instant its day starts (or the next day
    starts, for an inclusive `to`)."""
    if value is None:
        return None
    if next_day and value == date.max:  # the next day does not exist: the end of time
        return datetime.max.replace(tzinfo=UTC)
    start = datetime.combine(value, time.min, tzinfo=UTC)
    return start + timedelta(days=1) if next_day else start


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class Body(BaseModel):
    """A request body: a field it does not know is refused (422 naming it), never ignored,
    so a typo such as `ammount` or a read-only field such as `full_name` is heard."""

    model_config = ConfigDict(extra="forbid")


# Characters no name, address or description needs, refused wherever they appear (422):
# control characters (NUL among them; PostgreSQL cannot even store it), and the bidi
# embedding, override and isolate controls that make text read other than it is stored
# ("invoice" shown for "eciovni"). Letters with combining marks, any script, emoji and the
# plain left-to-right / right-to-left marks are stored as sent.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _plain_text(value: str) -> str:
    for char in value:
        if char in BIDI_CONTROLS:
            raise ValueError(f"must not contain the bidi control U+{ord(char):04X}")
        if unicodedata.category(char) in ("Cc", "Cs") and char not in "\t":
            raise ValueError(f"must not contain the control character U+{ord(char):04X}")
    return value


PlainText = Annotated[str, AfterValidator(_plain_text)]


class Page(Schema, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]


class Problem(BaseModel):
    """RFC 9457 problem details (media type application/problem+json)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable snake_case machine code.")
    request_id: str | None = None
    errors: list[dict[str, str]] | None = Field(
        default=None, description="One item per bad field: {field, message}."
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the problem+json error responses an endpoint can give."""
    described = {
        400: "Malformed request",
        401: "Missing, invalid or expired token",
        403: "Not allowed",
        404: "Not found (or not yours)",
        409: "State conflict",
        413: "Upload too large",
        415: "Unsupported upload type",
        422: "Validation or business-rule failure",
        423: "Locked (login lockout)",
        429: "Rate limited",
    }
    return {
        status: {
            "model": Problem,
            "description": described.get(status, "Error"),
            "content": {"application/problem+json": {}},
        }
        for status in statuses
    }
