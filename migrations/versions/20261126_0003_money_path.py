"""The money path, made cheaper per movement:
- outgoing_minutes: outgoing amounts per customer per minute, for the rolling daily limit
  (filled from the existing journals, so a database upgraded mid-day keeps its limits);
- entries (account_id, journal_id): history pages as one backward range read;
- PostgreSQL: audit_append(), the audit chain's append in one round trip (lock, tail,
  hash, insert), so the chain lock is held for one statement and the COMMIT only.

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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(AUDIT_APPEND)


# The record's canonical form is the JSON array [seq, at, …, details, prev_hash]
# (app.services.audit.compute_hash); the caller sends everything between seq and
# prev_hash already serialised (`middle`), so the hash here is byte for byte the one the
# application computes and verifies. Each statement of a plpgsql function takes a fresh
# snapshot, so the tail is read after the lock is granted.
AUDIT_APPEND = """
CREATE FUNCTION audit_append(
    lock_key bigint, p_at timestamptz, p_actor_id text, p_actor_role text, p_action text,
    p_entity_type text, p_entity_id text, p_outcome text, p_ip text, p_request_id text,
    p_details json, middle text
) RETURNS TABLE (new_seq bigint, new_hash text) LANGUAGE plpgsql AS $$
DECLARE
    tail_seq bigint;
    tail_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT a.seq, a.hash INTO tail_seq, tail_hash FROM audit_log a ORDER BY a.seq DESC LIMIT 1;
    IF tail_seq IS NULL THEN
        tail_seq := 0;
        tail_hash := repeat('0', 64);
    END IF;
    new_seq := tail_seq + 1;
    new_hash := encode(sha256(convert_to(
        '[' || new_seq::text || ',' || middle || ',"' || tail_hash || '"]', 'UTF8')), 'hex');
    INSERT INTO audit_log (seq, at, actor_id, actor_role, action, entity_type, entity_id,
        outcome, ip, request_id, details, prev_hash, hash)
    VALUES (new_seq, p_at, p_actor_id, p_actor_role, p_action, p_entity_type, p_entity_id,
        p_outcome, p_ip, p_request_id, p_details, tail_hash, new_hash);
    RETURN NEXT;
END
$$
"""


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_append")
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_index("ix_entries_account_journal")
    op.drop_table("outgoing_minutes")
