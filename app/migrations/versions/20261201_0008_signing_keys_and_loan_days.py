"""Every key that has signed an audit checkpoint, with its public half, so checkpoints
signed before a key rotation still verify; and the days a loan's history happened on
(the day each installment was settled, the day and principal of each repayment), so
the compliance report shows loans as they stood at a period's end.

Rows from before: a repayment's day is the day it was posted and its principal is read
from its allocation; a settled installment is taken as settled on its due date.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:50:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRINCIPAL_PARTS = ("principal_due", "future_principal")


def upgrade() -> None:
    op.create_table(
        "audit_signing_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_audit_signing_keys")),
    )
    with op.batch_alter_table("loan_installments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("settled_on", sa.Date(), nullable=True))
    with op.batch_alter_table("loan_repayments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paid_on", sa.Date(), nullable=True))
        batch_op.add_column(
            sa.Column("principal", sa.BigInteger(), nullable=False, server_default="0")
        )

    installments = sa.table(
        "loan_installments",
        sa.column("settled", sa.Boolean()),
        sa.column("due_date", sa.Date()),
        sa.column("settled_on", sa.Date()),
    )
    op.execute(
        installments.update()
        .where(installments.c.settled.is_(True))
        .values(settled_on=installments.c.due_date)
    )
    repayments = sa.table(
        "loan_repayments",
        sa.column("id", sa.BigInteger()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("allocation", sa.JSON()),
        sa.column("paid_on", sa.Date()),
        sa.column("principal", sa.BigInteger()),
    )
    bind = op.get_bind()
    for row in bind.execute(
        sa.select(repayments.c.id, repayments.c.created_at, repayments.c.allocation)
    ).all():
        principal = sum(  # amounts are two-place strings
            int(Decimal(p["amount"]) * 100)
            for p in row.allocation or []
            if p["part"] in PRINCIPAL_PARTS
        )
        created = row.created_at  # a datetime, or (SQLite) its UTC text
        day = (
            created.astimezone(UTC).date()
            if isinstance(created, datetime) and created.tzinfo is not None
            else date.fromisoformat(str(created)[:10])
        )
        bind.execute(
            repayments.update()
            .where(repayments.c.id == row.id)
            .values(paid_on=day, principal=principal)
        )
    with op.batch_alter_table("loan_repayments", schema=None) as batch_op:
        batch_op.alter_column("paid_on", existing_type=sa.Date(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("loan_repayments", schema=None) as batch_op:
        batch_op.drop_column("principal")
        batch_op.drop_column("paid_on")
    with op.batch_alter_table("loan_installments", schema=None) as batch_op:
        batch_op.drop_column("settled_on")
    op.drop_table("audit_signing_keys")
