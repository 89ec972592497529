"""Unauthenticated and self-service endpoints: health, login/tokens, registration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Response, UploadFile
from fastapi.security import OAuth2PasswordRequestForm

from app.deps import CurrentUser, DatabaseDep, DbSession, SecurityDep, SettingsDep
from app.ratelimit import LOGIN_LIMIT, REGISTRATION_LIMIT
from app.routing import StrictFormRoute, audited
from app.schemas.auth import MeOut, PasswordChangeIn, RefreshIn, TokenOut
from app.schemas.common import HealthOut, problem_responses
from app.schemas.customer import RegistrationForm, RegistrationOut
from app.services import auth, customers, jobs
from app.services.documents import Upload

# Strict query strings everywhere; the registration form is read strictly too.
router = APIRouter(route_class=StrictFormRoute)


@router.get("/health/live", response_model=HealthOut, tags=["health"], summary="The process is up")
async def live() -> dict[str, str]:
    """Liveness probe: answers 200 while the process runs; it never touches the database. No
    login."""
    return {"status": "ok"}


@router.get(
    "/health/ready",
    tags=["health"],
    summary="The database is reachable",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "Not ready: the database does not answer"}},
)
async def ready(database: DatabaseDep, response: Response) -> dict[str, str]:
    """Readiness probe: 200 when the database answers a query, 503 when it does not (take the
    instance out of rotation). No login."""
    if not await database.is_reachable():
        response.status_code = 503
        return {"status": "unavailable"}
    return {"status": "ok"}


@router.post(
    "/api/auth/token",
    openapi_extra=audited("auth.login"),
    response_model=TokenOut,
    tags=["auth"],
    summary="Log in with username (or email) and password",
    responses=problem_responses(401, 422, 423, 429),
    dependencies=[LOGIN_LIMIT],
)
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], db: DbSession, security: SecurityDep
) -> auth.TokenPair:
    """Log in with a username (or email) and password, sent form-encoded (OAuth2 password flow,
    so Swagger UI's **Authorize** works). Answers an access token (Bearer, short-lived)
    and a refresh token. Anyone may call it. A wrong username or password is 401
    `invalid_credentials` (the same answer either way); after `BANK_LOGIN_MAX_FAILURES`
    failures the username is locked for a while: 423 `account_locked`."""
    return await auth.login(db, security, username=form.username, password=form.password)


@router.post(
    "/api/auth/refresh",
    openapi_extra=audited("auth.refresh", "auth.refresh_reuse"),
    response_model=TokenOut,
    tags=["auth"],
    summary="Exchange a refresh token for a new pair (rotation)",
    responses=problem_responses(401, 422),
)
async def refresh(body: RefreshIn, db: DbSession, security: SecurityDep) -> auth.TokenPair:
    """Exchange a refresh token for a new access and refresh token. The old refresh token is
    spent; presenting a spent one again ends the whole session (401 `token_reused`). No
    access token needed."""
    return await auth.refresh(db, security, refresh_token=body.refresh_token)


@router.post(
    "/api/auth/logout",
    openapi_extra=audited("auth.logout"),
    status_code=204,
    tags=["auth"],
    summary="Revoke the session (refresh-token family)",
    responses=problem_responses(401, 422),
)
async def logout(
    body: RefreshIn, principal: CurrentUser, db: DbSession, security: SecurityDep
) -> Response:
    """End the session the refresh token belongs to; its refresh tokens stop working. Any
    logged-in user."""
    await auth.logout(db, security, principal=principal, refresh_token=body.refresh_token)
    return Response(status_code=204)


@router.post(
    "/api/auth/password",
    openapi_extra=audited("auth.password_change"),
    status_code=204,
    tags=["auth"],
    summary="Change password; every other session ends",
    responses=problem_responses(401, 422),
)
async def change_password(
    body: PasswordChangeIn, principal: CurrentUser, db: DbSession, security: SecurityDep
) -> Response:
    """Change the caller's password; every other session of the user ends. Any logged-in user.
    A wrong current password is 422 `invalid_current_password`; a new password outside
    the policy is 422 `weak_password`."""
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
    """The caller as the token names them: user id, username, role and, for customers, the
    customer id. Any logged-in user."""
    return MeOut(
        user_id=str(principal.user_id),
        username=principal.username,
        role=principal.role,
        customer_id=str(principal.customer_id) if principal.customer_id is not None else None,
    )


@router.post(
    "/api/customers/register",
    openapi_extra=audited("customer.register"),
    status_code=201,
    response_model=RegistrationOut,
    tags=["customers"],
    summary="Register as a customer (multipart, two documents)",
    responses=problem_responses(409, 413, 415, 422, 429),
    dependencies=[REGISTRATION_LIMIT],
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
    """Register as a customer: a multipart form with the profile fields and two documents
    (`id_document`, `address_proof`: PDF, PNG or JPEG, checked by content, at most
    `BANK_UPLOAD_MAX_BYTES` each). The customer starts as `Pending KYC Approval`; the
    KYC check runs in the background right after the answer and moves them to `Active`
    or `Under Review`. No login. A taken username or email is 409 (`username_taken`,
    `email_taken`); a document too large is 413, of another type 415."""
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
