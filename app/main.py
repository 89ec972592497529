"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from app import observability
from app.db import Database
from app.problems import PROBLEM_JSON, AllowedMethods, EdgeMiddleware, install_error_handlers
from app.ratelimit import RateLimits
from app.routers import admin, auditor, customer, public
from app.schemas.common import Problem
from app.security import Security
from app.services import jobs
from app.services.checkpoints import checkpoint_loop
from app.services.loan_products import load_products
from app.services.rules import load_rules
from app.services.scoring import Scorer
from app.settings import Settings, load_settings

REGISTRATION_PATH = "/api/customers/register"
OPENAPI_TAGS = [
    {"name": "health", "description": "Liveness and readiness probes."},
    {"name": "auth", "description": "Tokens, password change, who am I (API.md §2)."},
    {"name": "customers", "description": "Registration with KYC, and customer profiles."},
    {"name": "accounts", "description": "Opening, reading, closing; statements."},
    {"name": "transactions", "description": "Deposits, withdrawals, transfers and history."},
    {
        "name": "loans",
        "description": "Loan products and quotes, applications, schedules and repayments.",
    },
    {"name": "admin", "description": "Staff users; freezing, unfreezing and closing accounts."},
    {
        "name": "fraud",
        "description": "Fraud review: flags, held transactions, block and allow lists, backtests.",
    },
    {"name": "audit", "description": "The hash-chained audit trail; chain and ledger checks."},
]
METRICS_PATH = "/metrics"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
API_DESCRIPTION = """\
A core banking backend: customers with KYC, savings and checking accounts, a double-entry
ledger, deposits, withdrawals and transfers, statements, and a hash-chained audit trail.

- **Log in** with `POST /api/auth/token` (or **Authorize** above) and send the access token
  as `Authorization: Bearer <token>`. Roles: `customer`, `admin`, `auditor` (read-only).
- **Money** is a string with two decimals (`"1250.00"`), never a JSON number.
- **Retries**: send an `Idempotency-Key` header on money movements; the same key and body
  answer the first result again, with `Idempotent-Replayed: true`.
- **Errors** are RFC 9457 `application/problem+json` with a stable `code`; validation
  failures list one `errors` item per field. Another customer's object is a 404.
- **Lists** are pages: `limit` and the `next_cursor` of the previous page as `cursor`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = (settings or load_settings()).resolve_secrets()
    rules = load_rules(settings.fraud_rules_path)  # a bad rule file refuses to start
    loan_products = load_products(settings.loan_products_path)  # so does a bad products file
    database = Database(settings, background_checkpoints=True)
    scorer = Scorer(database, rules)
    observability.configure_logging(settings)
    metrics = observability.build_metrics(settings, database)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(jobs.sweeper_loop(database), name="job-sweeper")
        signer = asyncio.create_task(checkpoint_loop(database), name="audit-checkpoints")
        tasks = [sweeper, signer]
        if settings.fraud_scoring:  # it scores what is queued at once, then as movements come
            tasks.append(asyncio.create_task(scorer.run(), name="fraud-scorer"))
            await scorer.wake()
        # What start-up built (modules, routes, models: ~160k objects) lives as long as
        # the process: keep it out of the collector's full passes, which otherwise
        # stopped every request in flight for ~85 ms now and then.
        gc.collect()
        gc.freeze()
        try:
            async with observability.running(metrics), database.checkpoints():
                yield
        finally:
            gc.unfreeze()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await database.dispose()

    # Swagger UI and ReDoc from the files fastapi-offline ships: they work with no network.
    app = FastAPIOffline(
        title=f"{settings.bank_name} API",
        version="0.1.0",
        summary="Core banking backend: customers, accounts, ledger, audit.",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
        openapi_tags=OPENAPI_TAGS,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.rules = rules
    app.state.loan_products = loan_products
    app.state.scorer = scorer
    app.state.security = Security(settings)
    app.state.rate_limits = RateLimits(settings)
    install_error_handlers(app)
    app.openapi = lambda: _openapi_with_flat_forms(app)  # type: ignore[method-assign]
    # Routes are matched in order, at ~3 us per route passed (FastAPI 0.16x): the money
    # path and accounts come first, then customers, auth, admin and audit. The docs keep
    # their own order (OPENAPI_TAGS).
    routers = (
        customer.banking,
        customer.router,
        public.router,
        admin.router,
        admin.fraud_router,
        admin.loan_router,
        auditor.router,
    )
    for router in routers:
        app.include_router(router)
    app.state.allowed_methods = AllowedMethods(
        [*app.router.routes, *(route for router in routers for route in router.routes)]
    )
    if metrics is not None:
        # Unauthenticated, for Prometheus; BANK_METRICS_ENABLED=false removes it.
        app.add_api_route(
            METRICS_PATH,
            observability.metrics_endpoint(metrics),
            methods=["GET"],
            include_in_schema=False,
        )
    # Two documents of upload_max_bytes plus room for the text fields.
    registration_limit = 2 * settings.upload_max_bytes + 64 * 1024
    limits = {REGISTRATION_PATH: registration_limit}
    app.add_middleware(
        EdgeMiddleware,
        default_limit=settings.request_max_bytes,
        limits=limits,
        strict_transport=settings.env == "production",
        observer=observability.request_observer(
            settings, metrics, static_paths=[*observability.literal_paths(app.routes), *limits]
        ),
    )
    return app


def _openapi_with_flat_forms(app: FastAPI) -> dict[str, Any]:
    """FastAPI describes a form model plus file parts as `allOf: [model]` + the files.
    Swagger UI and Postman render a multipart form best from plain `properties`, so the
    referenced model's fields are merged in (same content, simpler shape). Errors are
    declared as what they are sent as: application/problem+json with the Problem schema
    (FastAPI files a response `model` under application/json, and adds its own 422).
    Each operation's description ends with the errors it declares, so the two cannot
    disagree."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        tags=app.openapi_tags,
        routes=app.routes,
    )
    components = schema.get("components", {}).get("schemas", {})
    for body in components.values():
        parts = body.pop("allOf", None)
        if not parts:
            continue
        for part in parts:
            model = components[part["$ref"].rsplit("/", 1)[-1]]
            body["properties"] = {**model.get("properties", {}), **body.get("properties", {})}
            body["required"] = [*model.get("required", []), *body.get("required", [])]
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if "requestBody" in operation:  # a body that is not JSON, or not a form
                operation["responses"].setdefault("400", {"description": "Malformed request"})
            for status, response in operation.get("responses", {}).items():
                if status.startswith("4"):
                    response["content"] = {PROBLEM_JSON: {"schema": PROBLEM_REF}}
            operation["description"] = _with_errors(operation)
    # FastAPI's own 422 model is never sent: validation errors are problems too.
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components.setdefault("Problem", Problem.model_json_schema())
    app.openapi_schema = schema
    return schema


def _with_errors(operation: dict[str, Any]) -> str:
    errors = [
        f"- `{status}` {response['description']}"
        for status, response in sorted(operation.get("responses", {}).items())
        if status.startswith(("4", "5"))
    ]
    text = operation.get("description", "")
    return f"{text}\n\n**Errors**\n\n" + "\n".join(errors) if errors else text
