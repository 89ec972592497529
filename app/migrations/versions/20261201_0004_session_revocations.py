"""Revoked sessions, read as a feed: every worker asks once a second which refresh-token
families were revoked since it last asked (an access token dies with its session), so
refresh_tokens.revoked_at is indexed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 13:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch_op:
        batch_op.create_index("ix_refresh_tokens_revoked_at", ["revoked_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch_op:
        batch_op.drop_index("ix_refresh_tokens_revoked_at")
