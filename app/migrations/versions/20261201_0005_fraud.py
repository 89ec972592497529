"""Fraud detection: the scoring queue (written with each movement, deleted with its
score), scores with their features and rule-set version, flags and their open keys per
customer and rule, held transactions, block and allow lists, and the scorer's own
aggregates (first payments to a payee, outgoing movements per account and day).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 14:39:04.122506
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "fraud_rule_sets",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_fraud_rule_sets")),
    )
    op.create_table(
        "fraud_lists",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("list_kind", sa.String(length=8), nullable=False),
        sa.Column("target_type", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_fraud_lists_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_lists")),
    )
    with op.batch_alter_table("fraud_lists", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fraud_lists_target", ["list_kind", "target_type", "target"], unique=False
        )

    op.create_table(
        "fraud_buckets",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("minute", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "minute", name=op.f("pk_fraud_buckets")),
    )
    op.create_table(
        "fraud_account_days",
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_fraud_account_days_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "day", name=op.f("pk_fraud_account_days")),
    )
    op.create_table(
        "fraud_payees",
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("first_journal_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_fraud_payees_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_fraud_payees_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("customer_id", "account_id", name=op.f("pk_fraud_payees")),
    )
    op.create_table(
        "fraud_flags",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("journal_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("rules_version", sa.String(length=64), nullable=False),
        sa.Column("rule_codes", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("transaction_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column(
            "assigned_to", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "resolved_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_fraud_flags_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["assigned_to"], ["users.id"], name=op.f("fk_fraud_flags_assigned_to_users")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_fraud_flags_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["journal_id"], ["journals.id"], name=op.f("fk_fraud_flags_journal_id_journals")
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by"], ["users.id"], name=op.f("fk_fraud_flags_resolved_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_flags")),
    )
    with op.batch_alter_table("fraud_flags", schema=None) as batch_op:
        batch_op.create_index("ix_fraud_flags_account", ["account_id", "status"], unique=False)
        batch_op.create_index("ix_fraud_flags_customer", ["customer_id", "id"], unique=False)
        batch_op.create_index("ix_fraud_flags_queue", ["status", "score", "id"], unique=False)

    op.create_table(
        "fraud_scores",
        sa.Column("journal_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("rules_version", sa.String(length=64), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("flag_id", sa.BigInteger(), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["journal_id"], ["journals.id"], name=op.f("fk_fraud_scores_journal_id_journals")
        ),
        sa.PrimaryKeyConstraint("journal_id", name=op.f("pk_fraud_scores")),
    )
    op.create_table(
        "holds",
        sa.Column("journal_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=32), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_holds_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_holds_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["journal_id"], ["journals.id"], name=op.f("fk_holds_journal_id_journals")
        ),
        sa.PrimaryKeyConstraint("journal_id", name=op.f("pk_holds")),
    )
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.create_index("ix_holds_account", ["account_id", "journal_id"], unique=False)
        batch_op.create_index("ix_holds_status", ["status", "journal_id"], unique=False)

    op.create_table(
        "score_queue",
        sa.Column("journal_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["journal_id"], ["journals.id"], name=op.f("fk_score_queue_journal_id_journals")
        ),
        sa.PrimaryKeyConstraint("journal_id", name=op.f("pk_score_queue")),
    )
    op.create_table(
        "fraud_flag_keys",
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("rule_code", sa.String(length=32), nullable=False),
        sa.Column("flag_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_fraud_flag_keys_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["flag_id"], ["fraud_flags.id"], name=op.f("fk_fraud_flag_keys_flag_id_fraud_flags")
        ),
        sa.PrimaryKeyConstraint("customer_id", "rule_code", name=op.f("pk_fraud_flag_keys")),
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("blocked_until")
    op.drop_table("fraud_flag_keys")
    op.drop_table("score_queue")
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_index("ix_holds_status")
        batch_op.drop_index("ix_holds_account")

    op.drop_table("holds")
    op.drop_table("fraud_scores")
    with op.batch_alter_table("fraud_flags", schema=None) as batch_op:
        batch_op.drop_index("ix_fraud_flags_queue")
        batch_op.drop_index("ix_fraud_flags_customer")
        batch_op.drop_index("ix_fraud_flags_account")

    op.drop_table("fraud_flags")
    op.drop_table("fraud_payees")
    op.drop_table("fraud_account_days")
    op.drop_table("fraud_buckets")
    with op.batch_alter_table("fraud_lists", schema=None) as batch_op:
        batch_op.drop_index("ix_fraud_lists_target")

    op.drop_table("fraud_lists")
    op.drop_table("fraud_rule_sets")
