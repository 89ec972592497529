"""Unauthenticated and self-service endpoints: health, login/tokens, registration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Response, UploadFile
from fastapi.security import OAuth2PasswordRequestForm

from app.deps import CurrentUser, DatabaseDep, DbSession, SecurityDep, SettingsDep
from app.schemas.auth import MeOut, PasswordChangeIn, RefreshIn, TokenOut
from app.schemas.common import problem_responses
from app.schemas.customer import RegistrationForm, RegistrationOut
from app.services import auth, customers, jobs
from app.services.documents import Upload

router = APIRouter()


@router.get("/health/live", tags=["health"], summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    tags=["health"],
    summary="The database is reachable",
    responses={503: {"description": "Not ready"}},
)
async def ready(database: DatabaseDep, response: Response) -> dict[str, str]:
    if not await database.is_reachable():
        response.status_code = 503
        return {"status": "unavailable"}
    return {"status": "ok"}


@router.post(
    "/api/auth/token",
    response_model=TokenOut,
    tags=["auth"],
    summary="Log in with username (or email) and password",
    responses=problem_responses(401, 422, 423),
)
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], db: DbSession, security: SecurityDep
) -> auth.TokenPair:
    return await auth.login(db, security, username=form.username, password=form.password)


@router.post(
    "/api/auth/refresh",
    response_model=TokenOut,
    tags=["auth"],
    summary="Exchange a refresh token for a new pair (rotation)",
    responses=problem_responses(401, 422),
)
async def refresh(body: RefreshIn, db: DbSession, security: SecurityDep) -> auth.TokenPair:
    return await auth.refresh(db, security, refresh_token=body.refresh_token)


@router.post(
    "/api/auth/logout",
    status_code=204,
    tags=["auth"],
    summary="Revoke the session (refresh-token family)",
    responses=problem_responses(401, 422),
)
async def logout(body: RefreshIn, principal: CurrentUser, db: DbSession) -> Response:
    await auth.logout(db, principal=principal, refresh_token=body.refresh_token)
    return Response(status_code=204)


@router.post(
    "/api/auth/password",
    status_code=204,
    tags=["auth"],
    summary="Change password; every other session ends",
    responses=problem_responses(401, 422),
)
async def change_password(
    body: PasswordChangeIn, principal: CurrentUser, db: DbSession, security: SecurityDep
) -> Response:
    await auth.change_password(
        db,
        security,
        principal=principal,
        current_password=body.current_password,
        new_password=body.new_password,
    )
    return Response(status_code=204)


@router.get(
    "/api/auth/me",
    response_model=MeOut,
    tags=["auth"],
    summary="Who am I",
    responses=problem_responses(401),
)
async def me(principal: CurrentUser) -> MeOut:
    return MeOut(
        user_id=str(principal.user_id),
        username=principal.username,
        role=principal.role,
        customer_id=str(principal.customer_id) if principal.customer_id is not None else None,
    )


@router.post(
    "/api/customers/register",
    status_code=201,
    response_model=RegistrationOut,
    tags=["customers"],
    summary="Register as a customer (multipart, two documents)",
    responses=problem_responses(409, 413, 415, 422),
)
async def register(
    form: Annotated[RegistrationForm, Form()],
    id_document: Annotated[UploadFile, File(description="PDF, PNG or JPEG, at most 5 MB")],
    address_proof: Annotated[UploadFile, File(description="PDF, PNG or JPEG, at most 5 MB")],
    db: DbSession,
    security: SecurityDep,
    settings: SettingsDep,
    database: DatabaseDep,
    tasks: BackgroundTasks,
) -> RegistrationOut:
    uploads = [
        Upload("id_document", id_document.file, id_document.size),
        Upload("address_proof", address_proof.file, address_proof.size),
    ]
    result = await customers.register(db, security, settings, form=form, uploads=uploads)
    tasks.add_task(jobs.run_job, database, result.job_id)
    return RegistrationOut(
        customer_id=str(result.customer.id),
        username=result.user.username,
        email=result.user.email,
        status=result.customer.status,
        message="Registration successful. KYC verification in progress.",
    )
