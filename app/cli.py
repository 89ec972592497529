"""The `bank` command: serve, migrate, create staff, demo data, verify the books."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from app.settings import Settings, load_settings

cli = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Open-source core banking backend."
)

# The migration scripts ship inside the package, so an installed wheel migrates from any
# folder; the top-level alembic.ini points at the same scripts for `alembic revision`.
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def migrate_database(settings: Settings) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = settings.db_url
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


@cli.command()
def migrate() -> None:
    """Apply pending database migrations (alembic upgrade head)."""
    settings = load_settings()
    migrate_database(settings)
    typer.echo("database is up to date")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development)")] = False,
) -> None:
    """Apply pending migrations once, then serve the API with uvicorn."""
    import uvicorn

    from app.services.loan_products import ProductsError, load_products
    from app.services.rules import RulesError, load_rules

    settings = load_settings()  # creates the development secrets before workers start
    try:
        load_rules(settings.fraud_rules_path)  # each worker loads them again; fail here first
        load_products(settings.loan_products_path)
    except (RulesError, ProductsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    migrate_database(settings)
    _share_metrics_between_workers(settings, workers if not reload else 1)
    log_options: dict[str, Any] = {}
    if settings.json_logs:
        from app.observability import server_log_config

        log_options["log_config"] = server_log_config()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        access_log=False,  # the app writes its own request log (BANK_LOG_JSON)
        proxy_headers=False,
        **log_options,
    )


def _share_metrics_between_workers(settings: Settings, workers: int) -> None:
    """Several worker processes keep their metrics in files that /metrics adds up
    (prometheus_client's multiprocess mode, switched on by this variable, which the
    workers inherit). The directory starts empty: files of an earlier run would be
    counted again. One worker keeps its metrics in memory."""
    os.environ.pop(MULTIPROC_ENV, None)
    if workers == 1 or not settings.metrics_enabled:
        return
    shutil.rmtree(settings.metrics_dir, ignore_errors=True)
    settings.metrics_dir.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(settings.metrics_dir)


async def _with_session(fn):  # type: ignore[no-untyped-def]
    from app.db import Database
    from app.security import Security

    settings = load_settings()
    database = Database(settings)
    try:
        async with database.session() as db:
            return await fn(db, Security(settings), settings, database)
    finally:
        await database.dispose()


@cli.command("create-user")
def create_user(
    username: Annotated[str, typer.Option()],
    email: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    role: Annotated[str, typer.Option(help="admin or auditor")] = "admin",
) -> None:
    """Create a staff user (admin or auditor)."""
    from app.errors import BankError
    from app.models import Role
    from app.services import staff
    from app.services.audit import SYSTEM

    if role not in ("admin", "auditor"):
        raise typer.BadParameter("role must be admin or auditor", param_hint="--role")

    async def run(db, security, _settings, _database):  # type: ignore[no-untyped-def]
        return await staff.create_staff(
            db,
            security,
            username=username,
            email=email,
            password=password,
            role=Role(role),
            actor=SYSTEM,
        )

    try:
        user = asyncio.run(_with_session(run))
    except BankError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"created {user.role} {user.username} (user id {user.id})")


DEMO_STAFF = (
    ("admin", "admin@demo.bank", "demo-admin-pass-1", "admin"),
    ("auditor", "auditor@demo.bank", "demo-auditor-pass-1", "auditor"),
)
DEMO_CUSTOMER = {
    "username": "demo",
    "email": "demo@demo.bank",
    "password": "demo-customer-pass-1",
    "full_name": "Dana Demo",
    "date_of_birth": "1990-04-01",
    "phone": "+14155550123",
    "address": "1 Market Street, San Francisco",
    "national_id": "DEMO123456",
}
TINY_PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
    b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01"
    b"\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)


@cli.command()
def demo() -> None:
    """Create demo staff and a demo customer with a checking account (skipping any that
    exist) and print them."""
    from sqlalchemy import select

    from app.db import end_reads
    from app.models import Account, Customer, Role, User
    from app.schemas.customer import RegistrationForm
    from app.security import Principal
    from app.services import accounts, customers, jobs, staff
    from app.services.audit import SYSTEM
    from app.services.documents import Upload

    async def demo_account(db, settings) -> str:  # type: ignore[no-untyped-def]
        """The demo customer's first account, opened if there is none: the tour in the
        README transfers to it."""
        user = await db.scalar(select(User).where(User.username == DEMO_CUSTOMER["username"]))
        customer = await db.scalar(select(Customer).where(Customer.user_id == user.id))
        number = await db.scalar(
            select(Account.number)
            .where(Account.customer_id == customer.id)
            .order_by(Account.id)
            .limit(1)
        )
        await end_reads(db)
        if number is None:
            principal = Principal(user.id, user.role, customer.id, user.username)
            account = await accounts.open_account(
                db, principal=principal, type="checking", currency=settings.currency
            )
            number = account.number
        return number

    async def run(db, security, settings, database):  # type: ignore[no-untyped-def]
        existing = set((await db.scalars(select(User.username))).all())
        await end_reads(db)
        for username, email, password, role in DEMO_STAFF:
            if username not in existing:
                await staff.create_staff(
                    db,
                    security,
                    username=username,
                    email=email,
                    password=password,
                    role=Role(role),
                    actor=SYSTEM,
                )
        if DEMO_CUSTOMER["username"] not in existing:
            form = RegistrationForm.model_validate(DEMO_CUSTOMER)
            uploads = [
                Upload(kind, io.BytesIO(TINY_PNG), len(TINY_PNG))
                for kind in ("id_document", "address_proof")
            ]
            result = await customers.register(db, security, settings, form=form, uploads=uploads)
            await jobs.run_job(database, result.job_id)
        return await demo_account(db, settings)

    settings = load_settings()
    if settings.env == "production":
        typer.echo("error: demo users are for development; BANK_ENV is production", err=True)
        raise typer.Exit(1)
    migrate_database(settings)
    number = asyncio.run(_with_session(run))
    typer.echo("Demo users (development only):")
    for username, _email, password, role in DEMO_STAFF:
        typer.echo(f"  {role:9} {username:8} password: {password}")
    typer.echo(f"  customer  {DEMO_CUSTOMER['username']:8} password: {DEMO_CUSTOMER['password']}")
    typer.echo(f"  the demo customer's checking account: {number} (transfer to it in the tour)")


@cli.command()
def verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="Checkpoints kept elsewhere (JSON: GET /api/audit/checkpoints)"),
    ] = None,
    export: Annotated[
        Path | None, typer.Option(help="An export (GET /api/audit/export) to check offline")
    ] = None,
    signature: Annotated[
        str | None, typer.Option(help="The export's Audit-Signature header (base64)")
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            help="A signing public key, PEM; repeat for keys used before a rotation"
            " (default: this server's own, and for --checkpoints every key it has signed with)"
        ),
    ] = None,
) -> None:
    """Recompute the audit hash chain and the ledger; with --checkpoints, check the chain
    against checkpoints kept elsewhere; with --export and --signature, check an export
    offline (nothing else). Exit non-zero on any mismatch."""
    import json

    from app.services import audit, reconciliation
    from app.services import checkpoints as signed

    given = signed.key_ring([p.read_text() for p in public_key]) if public_key else None

    if export is not None:
        if signature is None:
            typer.echo("error: --export needs --signature", err=True)
            raise typer.Exit(2)
        ring = given or signed.key_ring([signed.Signer.of(load_settings()).public_pem])
        with export.open("rb") as file, signed.mapped(file) as body:  # a year: not loaded
            report = signed.verify_export(ring, body, signature.strip())
        typer.echo(f"export: {report.records} records, {'valid' if report.valid else 'INVALID'}")
        for problem in report.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(0 if report.valid else 1)

    kept: list[Any] = []
    if checkpoints is not None:
        data = json.loads(checkpoints.read_text())
        kept = data["items"] if isinstance(data, dict) else data

    async def run(db, _security, settings, _database):  # type: ignore[no-untyped-def]
        chain = await audit.verify_chain(db)
        books = await reconciliation.verify_ledger(db)
        against = None
        if kept:
            ring = given
            if ring is None:
                known = await signed.known_keys(db, signed.Signer.of(settings))
                ring = signed.key_ring([k["public_key"] for k in known])
            against = await signed.verify_against(db, ring, kept)
        return chain, books, against

    chain, books, against = asyncio.run(_with_session(run))
    typer.echo(
        f"audit chain: {chain.entries_checked} records checked, "
        f"{'valid' if chain.valid else f'INVALID at seq {chain.first_invalid_seq}'}"
    )
    typer.echo(
        f"ledger: {books.journals_checked} journals, {books.accounts_checked} accounts, "
        f"{'balanced' if books.balanced else 'NOT BALANCED'}"
    )
    for mismatch in books.mismatches:
        typer.echo(f"  mismatch: {mismatch}", err=True)
    if against is not None:
        typer.echo(
            f"checkpoints: {against.checkpoints_checked} checked, "
            f"{'all hold' if against.valid else 'BROKEN'}"
        )
        for problem in against.problems:
            typer.echo(f"  {problem}", err=True)
    if not chain.valid or not books.balanced or (against is not None and not against.valid):
        raise typer.Exit(1)


audit_cli = typer.Typer(help="The audit trail: signed checkpoints.", no_args_is_help=True)
cli.add_typer(audit_cli, name="audit")


@audit_cli.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the chain's head now (a running server does it every 1,000 records or 5 min)."""
    from app.services import checkpoints as signed

    async def run(db, _security, settings, _database):  # type: ignore[no-untyped-def]
        return await signed.make_checkpoint(db, signed.Signer.of(settings), force=True)

    made = asyncio.run(_with_session(run))
    if made is None:
        typer.echo("nothing to sign: the head is signed already (or the log is empty)")
    else:
        typer.echo(f"signed checkpoint at seq {made.seq} ({made.hash[:16]}…)")


fraud_cli = typer.Typer(help="Fraud detection: score the queue, backtest a rule change.")
cli.add_typer(fraud_cli, name="fraud")


@fraud_cli.command("backtest")
def fraud_backtest(
    rules: Annotated[Path, typer.Option(help="The candidate rule set (TOML)")],
    from_: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD")],
    to: Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD (inclusive)")],
) -> None:
    """What a candidate rule set would have flagged over a period, against the current
    rules and the flags already resolved (read-only). Prints JSON."""
    import json
    from datetime import date

    from app.errors import BankError
    from app.services import fraud
    from app.services.audit import SYSTEM
    from app.services.rules import RulesError, load_rules

    async def run(_db, _security, settings, database):  # type: ignore[no-untyped-def]
        return await fraud.backtest(
            database,
            actor=SYSTEM,
            current=load_rules(settings.fraud_rules_path),
            candidate_text=rules.read_text(encoding="utf-8"),
            since=date.fromisoformat(from_),
            until=date.fromisoformat(to),
        )

    try:
        report = asyncio.run(_with_session(run))
    except (BankError, RulesError, ValueError, OSError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(report, indent=2))


@fraud_cli.command("score")
def fraud_score() -> None:
    """Score every queued movement now (a running server does this by itself)."""
    from app.services.rules import load_rules
    from app.services.scoring import drain_all

    async def run(_db, _security, settings, database):  # type: ignore[no-untyped-def]
        return await drain_all(database, load_rules(settings.fraud_rules_path))

    typer.echo(f"scored {asyncio.run(_with_session(run))} movements")


loans_cli = typer.Typer(help="Loans: the daily accrual.", no_args_is_help=True)
cli.add_typer(loans_cli, name="loans")


@loans_cli.command("accrue")
def loans_accrue() -> None:
    """Catch every active loan up to today: daily interest, due dates, late fees (a running
    server's jobs do this every midnight; running it twice a day posts nothing twice)."""
    from app.services.accrual import accrue_all

    async def run(_db, _security, _settings, database):  # type: ignore[no-untyped-def]
        return await accrue_all(database)

    done = asyncio.run(_with_session(run))
    posted = sum(1 for d in done if d.posted)
    typer.echo(f"{len(done)} active loans caught up; {posted} with postings")


jobs_cli = typer.Typer(help="Background jobs.", no_args_is_help=True)
cli.add_typer(jobs_cli, name="jobs")


@jobs_cli.command("retry")
def jobs_retry(
    kind: Annotated[
        str | None, typer.Option(help="Only jobs of this kind (kyc.check, hold.expire, …)")
    ] = None,
) -> None:
    """Queue every job that gave up after its attempts (`failed`) again, due now: after the
    outage that failed them is over. A running server runs them within seconds."""
    from app.services.jobs import retry_failed

    async def run(_db, _security, _settings, database):  # type: ignore[no-untyped-def]
        return await retry_failed(database, kind)

    typer.echo(f"{asyncio.run(_with_session(run))} failed jobs queued again")


def main() -> None:
    cli()
