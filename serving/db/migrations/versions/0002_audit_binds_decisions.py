"""audit binds decisions; TRUNCATE refused; check idempotency keys; revoked page sessions

- ``reviews.decision_audit_hash``: the hash of the ``review.decision`` audit entry written in the same
  transaction as the decision, so ``python -m serving.audit verify`` can tell a review row whose decision
  fields were changed afterwards (or set without an entry) from one the chain vouches for.
- PostgreSQL: a statement trigger refuses TRUNCATE on ``audit_log`` and ``audit_chain_head`` (row triggers
  do not fire for TRUNCATE, so 0001's append-only trigger did not stop it).  SQLite has no TRUNCATE.
- ``check_idempotency_keys``: the first answer to ``POST /v1/prescriptions/check`` with an Idempotency-Key.
- ``revoked_sessions``: /review session ids ended by a sign-out (the cookie is refused afterwards).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decision_audit_hash", sa.String(length=64), nullable=True))

    op.create_table(
        "check_idempotency_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "revoked_sessions",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sid"),
    )
    with op.batch_alter_table("revoked_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_revoked_sessions_expires_at", ["expires_at"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION rxt_audit_log_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only: TRUNCATE refused', TG_TABLE_NAME;
            END;
            $$
            """
        )
        for table in ("audit_log", "audit_chain_head"):
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION rxt_audit_log_no_truncate()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_log", "audit_chain_head"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS rxt_audit_log_no_truncate()")
    with op.batch_alter_table("revoked_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_revoked_sessions_expires_at")
    op.drop_table("revoked_sessions")
    op.drop_table("check_idempotency_keys")
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_column("decision_audit_hash")
