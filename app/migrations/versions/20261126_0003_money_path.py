"""The money path, made cheaper per movement:
- outgoing_minutes: outgoing amounts per customer per minute, for the rolling daily limit
  (filled from the existing journals, so a database upgraded mid-day keeps its limits);
- entries (account_id, journal_id): history pages as one backward range read (it
  replaces (account_id, id));
- PostgreSQL: audit records are written to audit_pending and sealed into the hash chain
  by a deferred trigger at COMMIT, so the chain's lock is held while the transaction
  commits and never across a round trip to the application.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:10:00
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


    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.create_index("ix_entries_account_journal", ["account_id", "journal_id"])
        # What (account_id, id) served, (account_id, journal_id) serves: one index less
        # to write per entry.
        batch_op.drop_index("ix_entries_account")
    if op.get_bind().dialect.name == "postgresql":
        op.create_table(
            "audit_pending",
            sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("actor_id", sa.String(64)),
            sa.Column("actor_role", sa.String(16)),
            sa.Column("action", sa.String(64), nullable=False),
            sa.Column("entity_type", sa.String(32)),
            sa.Column("entity_id", sa.String(64)),
            sa.Column("outcome", sa.String(8), nullable=False),
            sa.Column("ip", sa.String(64)),
            sa.Column("request_id", sa.String(128)),
            sa.Column("details", sa.JSON(), nullable=False),
            sa.Column("middle", sa.Text(), nullable=False),
        )
        op.execute(AUDIT_SEAL)
        op.execute(
            "CREATE CONSTRAINT TRIGGER audit_pending_seal AFTER INSERT ON audit_pending"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_seal()"
        )


# Sealing, at COMMIT, in insertion order: take the chain lock (the key is
# app.services.audit.AUDIT_CHAIN_LOCK), read the tail (each statement of a plpgsql
# function takes a fresh snapshot, so after the lock), hash and append. The record's
# canonical form is the JSON array [seq, at, …, details, prev_hash]
# (app.services.audit.compute_hash); the application stores everything between seq and
# prev_hash already serialised (`middle`), so this hash is byte for byte the one the
# application verifies.
AUDIT_SEAL = """
CREATE FUNCTION audit_seal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tail_seq bigint;
    tail_hash text;
    new_seq bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(280603412820);
    SELECT a.seq, a.hash INTO tail_seq, tail_hash FROM audit_log a ORDER BY a.seq DESC LIMIT 1;
    IF tail_seq IS NULL THEN
        tail_seq := 0;
        tail_hash := repeat('0', 64);
    END IF;
    new_seq := tail_seq + 1;
    INSERT INTO audit_log (seq, at, actor_id, actor_role, action, entity_type, entity_id,
        outcome, ip, request_id, details, prev_hash, hash)
    VALUES (new_seq, NEW.at, NEW.actor_id, NEW.actor_role, NEW.action, NEW.entity_type,
        NEW.entity_id, NEW.outcome, NEW.ip, NEW.request_id, NEW.details, tail_hash,
        encode(sha256(convert_to(
            '[' || new_seq::text || ',' || NEW.middle || ',"' || tail_hash || '"]', 'UTF8')),
            'hex'));
    DELETE FROM audit_pending WHERE id = NEW.id;
    RETURN NULL;
END
$$
"""


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_pending_seal ON audit_pending")
        op.execute("DROP FUNCTION IF EXISTS audit_seal()")
        op.drop_table("audit_pending")
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.create_index("ix_entries_account", ["account_id", "id"])
        batch_op.drop_index("ix_entries_account_journal")
    op.drop_table("outgoing_minutes")
