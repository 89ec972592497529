"""RFC 9457 problem+json for every error, request ids, and the ASGI edge of the app."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.context import Caller, caller_var, client_ip_var, request_id_var
from app.errors import BankError, PayloadTooLarge

if TYPE_CHECKING:
    from app.observability import RequestObserver

log = logging.getLogger("app.request")

PROBLEM_JSON = "application/problem+json"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# What the edge refuses before routing (README, Limits); bodies are bounded per path.
MAX_PATH_BYTES = 2048
MAX_QUERY_BYTES = 8192
MAX_HEADERS_BYTES = 16 * 1024  # every header line together, as sent: "name: value\r\n"
MAX_HEADER_BYTES = 8 * 1024  # one header's name and value

# On every response. nosniff: a browser never runs a download or an error body as a
# script or a page; no-referrer: URLs, which name accounts and dates, are not passed on.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
# On every /api/ response: personal and account data is kept by no cache, shared or not.
NO_STORE = (b"cache-control", b"no-store")
# Production only: a development server on plain http://localhost must stay reachable.
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def problem_body(
    status: int,
    code: str,
    title: str | None = None,
    detail: str | None = None,
    errors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail or title or HTTPStatus(status).phrase,
        "code": code,
        "request_id": request_id_var.get(),
    }
    if errors:
        body["errors"] = errors
    return body


def problem_response(
    status: int,
    code: str,
    title: str | None = None,
    detail: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        orjson.dumps(problem_body(status, code, title, detail, errors)),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or (str(loc[-1]) if loc else "body")


def _validation_message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "Invalid value"))
    return message.removeprefix("Value error, ")


async def _bank_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BankError)
    return problem_response(exc.status, exc.code, exc.title, exc.detail, exc.errors(), exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return problem_response(400, "malformed_request", "Malformed JSON body")
        errors.append(
            {
                "field": _field_name(tuple(error.get("loc", ()))),
                "message": _validation_message(error),
            }
        )
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return problem_response(
        422, "validation_error", "Validation failed", f"Invalid fields: {fields}", errors
    )


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    400: "malformed_request",
    401: "not_authenticated",
    403: "forbidden",
}


class AllowedMethods:
    """Which methods the app serves at a path, for the `Allow` header of a 405: Starlette
    names only the first route that matched the path, one of several when GET and POST
    of one path are separate routes."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self.routes = [
            (route.path_regex, route.methods)
            for route in routes
            if isinstance(route, Route) and route.methods
        ]

    def at(self, path: str) -> str:
        methods: set[str] = set()
        for pattern, served in self.routes:
            if pattern.match(path):
                methods |= served
        return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(
        exc.status_code,
        HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_"),
    )
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = "No such resource."
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        allowed: AllowedMethods = request.app.state.allowed_methods
        headers = {**(headers or {}), "Allow": allowed.at(request.scope["path"])}
    return problem_response(
        exc.status_code, code, HTTPStatus(exc.status_code).phrase, detail, headers=headers
    )


def _oversized(scope: Scope) -> Response | None:
    """The 414 or 431 problem for a request line or header block above the edge's
    limits, else None. A few length checks: no header is decoded unless refused."""
    path = scope.get("raw_path") or scope["path"].encode("utf-8")
    if len(path) > MAX_PATH_BYTES:
        return _too_long(f"The path exceeds {MAX_PATH_BYTES} bytes.")
    if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
        return _too_long(f"The query string exceeds {MAX_QUERY_BYTES} bytes.")
    total = 0
    for name, value in scope["headers"]:
        size = len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            header = name[:64].decode("latin-1")
            return _headers_too_large(f"The header {header!r} exceeds {MAX_HEADER_BYTES} bytes.")
        total += size + 4
    if total > MAX_HEADERS_BYTES:
        return _headers_too_large(f"The request headers exceed {MAX_HEADERS_BYTES} bytes.")
    return None


def _too_long(detail: str) -> Response:
    return problem_response(414, "uri_too_long", HTTPStatus(414).phrase, detail)


def _headers_too_large(detail: str) -> Response:
    return problem_response(431, "request_header_fields_too_large", HTTPStatus(431).phrase, detail)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BankError, _bank_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


class EdgeMiddleware:
    """Outermost layer of the app (inside uvicorn):
    - gives every request an id (the client's X-Request-ID if sane) and echoes it;
    - adds the security headers to every response, errors included (no-store on /api/);
    - makes the trailing slash optional on every path, without a redirect;
    - refuses an over-long path or query string (414) and oversized headers (431);
    - bounds the request body while it streams (413), per path;
    - turns any unexpected exception into a logged 500 problem, with no trace in the body;
    - reports every request, with its final status, to the observer (metrics, request log).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_limit: int,
        limits: dict[str, int] | None = None,
        strict_transport: bool = False,
        observer: RequestObserver | None = None,
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = limits or {}
        self.added = [*SECURITY_HEADERS, *((HSTS,) if strict_transport else ())]
        self.added_to_api = [*self.added, NO_STORE]
        self.observer = observer
        self.note_caller = observer is not None and observer.log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = perf_counter()
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = dict(scope)
            scope["path"] = path.rstrip("/") or "/"
            if scope.get("raw_path"):
                scope["raw_path"] = scope["raw_path"].rstrip(b"/") or b"/"
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        request_token = request_id_var.set(request_id)
        client = scope.get("client")
        ip_token = client_ip_var.set(client[0] if client else None)
        caller_token = caller_var.set(Caller()) if self.note_caller else None
        limit = self.limits.get(scope["path"], self.default_limit)
        started = False
        too_large: PayloadTooLarge | None = None
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        api = scope["path"][:5] in ("/api/", "/api")
        added = self.added_to_api if api else self.added
        status = 0
        response_headers: list[tuple[bytes, bytes]] = []
        answered = 0.0

        async def send_with_id(message: Message) -> None:
            nonlocal started, status, response_headers, answered
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                sent = message.get("headers", [])
                if api:  # no-store replaces whatever caching the endpoint allowed
                    sent = [h for h in sent if h[0].lower() != b"cache-control"]
                response_headers = message["headers"] = [*sent, id_header, *added]
            elif not message.get("more_body", False):
                # The answer is complete; background tasks that run after it are not
                # part of the request's latency.
                answered = perf_counter()
            await send(message)

        async def send_app(message: Message) -> None:
            # Once the body overflowed, whatever the app answers (FastAPI turns a failed
            # body read into a 400) is replaced by the 413 problem.
            if too_large is None:
                await send_with_id(message)
            elif message["type"] == "http.response.start" and not started:
                await problem_response(413, too_large.code, too_large.title, too_large.detail)(
                    scope, receive, send_with_id
                )

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = PayloadTooLarge(f"The request body exceeds {limit} bytes.")
                    raise too_large
            return message

        received = 0
        try:
            if (refusal := _oversized(scope)) is not None:
                await refusal(scope, receive, send_with_id)
                return
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                too_large = PayloadTooLarge(f"The request body exceeds {limit} bytes.")
                await send_app({"type": "http.response.start", "status": 413, "headers": []})
                return
            await self.app(scope, limited_receive, send_app)
        except PayloadTooLarge:
            if not started:
                await send_app({"type": "http.response.start", "status": 413, "headers": []})
        except Exception:
            log.exception("unhandled error (request_id=%s)", request_id)
            if not started:
                await problem_response(
                    500,
                    "internal_error",
                    "Internal server error",
                    "An unexpected error occurred; quote the request id.",
                )(scope, receive, send_with_id)
        finally:
            if self.observer is not None:
                try:
                    self.observer.request_done(
                        scope, status, (answered or perf_counter()) - began, response_headers
                    )
                except Exception:
                    log.exception("could not record the request (request_id=%s)", request_id)
            if caller_token is not None:
                caller_var.reset(caller_token)
            request_id_var.reset(request_token)
            client_ip_var.reset(ip_token)
