"""The HTTP edge's own helpers: JSON request bodies parsed without floats (numbers
become Decimal, the non-standard NaN/Infinity literals are refused as malformed JSON),
files sent as downloads, and ids in paths."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Path, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.convertors import Convertor, register_url_convertor

from app.forms import scan_multipart
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


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters an endpoint and its dependencies declare."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


class StrictQueryRoute(APIRoute):
    """A route that refuses query parameters it does not declare (422 naming each), so a
    misspelt filter (`?acount_number=`) is heard instead of silently widening a list."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        declared = frozenset(_query_names(self.dependant))

        async def route_handler(request: Request) -> Response:
            if request.scope.get("query_string"):
                unknown = [name for name in request.query_params if name not in declared]
                if unknown:
                    raise RequestValidationError(
                        [
                            {
                                "type": "extra_forbidden",
                                "loc": ("query", name),
                                "msg": "Unknown query parameter",
                                "input": request.query_params[name],
                            }
                            for name in dict.fromkeys(unknown)
                        ]
                    )
            return await handler(request)

        return route_handler


def _form_names(dependant: Dependant) -> set[str]:
    """The form parts an endpoint and its dependencies declare (a form model's fields)."""
    names: set[str] = set()
    for param in dependant.body_params:
        model = param.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names |= {info.alias or name for name, info in model.model_fields.items()}
        else:
            names.add(param.alias)
    for dependency in dependant.dependencies:
        names |= _form_names(dependency)
    return names


class StrictFormRoute(StrictQueryRoute):
    """A strict route whose multipart form is read strictly too (app.forms): a part it
    does not declare, or a text part that is not UTF-8, is 422 naming the part."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        declared = frozenset(_form_names(self.dependant))

        async def route_handler(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                # The body is kept: the form parser reads it again from memory.
                scan = scan_multipart(await request.body(), content_type)
                if scan is not None:
                    errors = [
                        _part_error(name, "Unknown form field")
                        for name in dict.fromkeys(scan.names)
                        if name not in declared
                    ] + [_part_error(name, "must be UTF-8 text") for name in scan.not_utf8]
                    if errors:
                        raise RequestValidationError(errors)
            return await handler(request)

        return route_handler


def _part_error(name: str, message: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": ("form", name), "msg": message, "input": None}


class DecimalRoute(StrictQueryRoute):
    """A strict route whose JSON body is parsed with Decimal for numbers."""

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


def audited(*actions: str) -> dict[str, Any]:
    """An endpoint's OpenAPI extension naming the audit actions it records (a test holds
    every state-changing endpoint to having some, and each to being recorded in app/)."""
    return {"x-audit-actions": list(actions)}


def not_audited(reason: str) -> dict[str, Any]:
    """A POST that changes nothing (a calculation): no audit record, and why."""
    return {"x-audit-actions": [], "x-not-audited": reason}
