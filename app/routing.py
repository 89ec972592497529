"""The HTTP edge's own helpers: JSON request bodies parsed without floats (numbers
become Decimal, the non-standard NaN/Infinity literals are refused as malformed JSON),
files sent as downloads, and ids in paths."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Path, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, register_url_convertor

from app.schemas.ledger import ACCOUNT_NUMBER_HELP, ACCOUNT_NUMBER_SCHEMA
from app.services.exports import Download


class DigitsConvertor(Convertor[str]):
    """`{name:digits}` in a path: ids made of digits, kept as the string the client sent,
    so that `/api/customers/register` or `/api/transactions/deposit` never reach the
    `{id}` route of the same folder (and a 405 names only the methods really served)."""

    regex = "[0-9]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("digits", DigitsConvertor())
DIGITS = r"^[0-9]+$"
AccountNumberPath = Annotated[
    str, Path(description=ACCOUNT_NUMBER_HELP, json_schema_extra=ACCOUNT_NUMBER_SCHEMA)
]
AccountNumberQuery = Annotated[
    str | None, Query(description=ACCOUNT_NUMBER_HELP, json_schema_extra=ACCOUNT_NUMBER_SCHEMA)
]


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


class DecimalJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)
        return self._json


class DecimalRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(DecimalJSONRequest(request.scope, request.receive))

        return route_handler


def download(file: Download) -> Response:
    """A file as an attachment (its name chosen by the service, never by the client)."""
    return Response(
        file.content,
        media_type=file.media_type,
        headers={"Content-Disposition": f'attachment; filename="{file.filename}"'},
    )
