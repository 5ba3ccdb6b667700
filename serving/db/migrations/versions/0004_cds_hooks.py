"""CDS Hooks: cards (uuid -> rule id), feedback on them, JWT ids seen

- ``cds_cards``: every card a CDS Hooks service answered, with the rule id, category and severity it came from,
  so a feedback entry (which names only the card's uuid) counts against its rule in the override statistics.
- ``cds_feedback``: accepted / overridden outcomes from the EHR; the same entry sent twice is stored once
  (unique card + outcome + outcomeTimestamp).
- ``cds_jwt_ids``: ``(iss, jti)`` of accepted CDS client JWTs until they expire, shared by every replica, so a
  replayed token is refused wherever it arrives.

Revision ID: 0004
Revises: 0003 (alert tier settings)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cds_cards",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(length=64), nullable=False),
        sa.Column("hook_instance", sa.String(length=200), nullable=False),
        sa.Column("actor", sa.String(length=300), nullable=False),
        sa.Column("rule_id", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("indicator", sa.String(length=16), nullable=False),
        sa.Column("drugs", sa.JSON(), nullable=False),
        sa.Column("order_ids", sa.JSON(), nullable=False),
        sa.Column("suggestion_ids", sa.JSON(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
    )
    with op.batch_alter_table("cds_cards", schema=None) as batch_op:
        batch_op.create_index("ix_cds_cards_rule", ["rule_id"], unique=False)
        batch_op.create_index("ix_cds_cards_hook_instance", ["hook_instance"], unique=False)

    op.create_table(
        "cds_feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("card_uuid", sa.String(length=36), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=300), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("outcome_timestamp", sa.String(length=40), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("reason_system", sa.String(length=300), nullable=True),
        sa.Column("reason_code", sa.String(length=200), nullable=True),
        sa.Column("user_comment", sa.Text(), nullable=True),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.CheckConstraint("outcome IN ('accepted', 'overridden')", name="ck_cds_feedback_outcome"),
        sa.ForeignKeyConstraint(["card_uuid"], ["cds_cards.uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("card_uuid", "outcome", "outcome_timestamp", name="uq_cds_feedback_entry"),
    )
    with op.batch_alter_table("cds_feedback", schema=None) as batch_op:
        batch_op.create_index("ix_cds_feedback_card", ["card_uuid"], unique=False)

    op.create_table(
        "cds_jwt_ids",
        sa.Column("iss", sa.String(length=300), nullable=False),
        sa.Column("jti", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("iss", "jti"),
    )
    with op.batch_alter_table("cds_jwt_ids", schema=None) as batch_op:
        batch_op.create_index("ix_cds_jwt_ids_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("cds_jwt_ids", schema=None) as batch_op:
        batch_op.drop_index("ix_cds_jwt_ids_expires_at")
    op.drop_table("cds_jwt_ids")
    with op.batch_alter_table("cds_feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_cds_feedback_card")
    op.drop_table("cds_feedback")
    with op.batch_alter_table("cds_cards", schema=None) as batch_op:
        batch_op.drop_index("ix_cds_cards_hook_instance")
        batch_op.drop_index("ix_cds_cards_rule")
    op.drop_table("cds_cards")
