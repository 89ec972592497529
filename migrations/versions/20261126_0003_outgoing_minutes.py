"""Outgoing movements per customer per minute, for the rolling daily limit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:10:00

Filled from the existing journals, so a database upgraded mid-day keeps its limits.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MINUTE = {
    "sqlite": "CAST(strftime('%s', created_at) AS INTEGER) / 60",
    "postgresql": "CAST(floor(extract(epoch FROM created_at) / 60) AS BIGINT)",
}


def upgrade() -> None:
    op.create_table(
        "outgoing_minutes",
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("minute", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_outgoing_minutes_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("customer_id", "minute", name=op.f("pk_outgoing_minutes")),
    )
    minute = MINUTE[op.get_bind().dialect.name]
    op.execute(
        f"INSERT INTO outgoing_minutes (customer_id, minute, amount)"  # noqa: S608
        f" SELECT customer_id, {minute}, SUM(amount) FROM journals"
        " WHERE customer_id IS NOT NULL AND kind IN ('withdrawal', 'transfer')"
        " AND status <> 'rejected'"
        f" GROUP BY customer_id, {minute}"
    )


def downgrade() -> None:
    op.drop_table("outgoing_minutes")
