"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app.db import Database
from app.problems import EdgeMiddleware, install_error_handlers
from app.routers import admin, auditor, customer, public
from app.security import Security
from app.services import jobs
from app.settings import Settings, load_settings

REGISTRATION_PATH = "/api/customers/register"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = (settings or load_settings()).resolve_secrets()
    database = Database(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(jobs.sweeper_loop(database), name="job-sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await database.dispose()

    app = FastAPI(
        title=f"{settings.bank_name} API",
        version="0.1.0",
        summary="Core banking backend: customers, accounts, ledger, audit.",
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.security = Security(settings)
    install_error_handlers(app)
    for router in (
        public.router,
        customer.router,
        customer.banking,
        admin.router,
        auditor.router,
    ):
        app.include_router(router)
    # Two documents of upload_max_bytes plus room for the text fields.
    registration_limit = 2 * settings.upload_max_bytes + 64 * 1024
    app.add_middleware(
        EdgeMiddleware,
        default_limit=settings.request_max_bytes,
        limits={REGISTRATION_PATH: registration_limit},
    )
    logging.getLogger("app").setLevel(logging.INFO)
    return app
