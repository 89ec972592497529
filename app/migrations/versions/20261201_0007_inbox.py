"""The reviewers' inbox: who holds each item waiting for a person (a fraud flag keeps its
own `assigned_to`); and the audit chain's signed checkpoints.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 18:11:03.621628
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('inbox_claims',
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('entity_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('assigned_to', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['assigned_to'], ['users.id'], name=op.f('fk_inbox_claims_assigned_to_users')),
    sa.PrimaryKeyConstraint('kind', 'entity_id', name=op.f('pk_inbox_claims'))
    )

    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table('inbox_claims')
