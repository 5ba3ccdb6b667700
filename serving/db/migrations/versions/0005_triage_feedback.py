"""triage feedback: answers kept for outcome matching, outcomes, shadow challenger scores (issue 15)

- ``triage_records``: one row per ``POST /v1/triage`` answer (request id, model version, text sha256, the
  prediction; the text itself only with the deployment's setting AND the request's consent).
- ``triage_outcomes``: the center the patient was actually seen in and an optional clinician urgency, one per
  request id (idempotent).
- ``shadow_scores``: the challenger's top center and confidence beside the champion's, per shadow-scored request.

Revision ID: 0005
Revises: 0004 (CDS Hooks)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_URGENCY = "('emergency', 'urgent', 'routine', 'self_care')"


def upgrade() -> None:
    op.create_table(
        "triage_records",
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("taxonomy_version", sa.String(length=50), nullable=True),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("text_chars", sa.Integer(), nullable=False),
        sa.Column("latin_share", sa.Float(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("consent", sa.Boolean(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("predicted_center", sa.String(length=64), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("answered_center", sa.String(length=64), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("abstained", sa.Boolean(), nullable=False),
        sa.Column("red_flags", sa.Integer(), nullable=False),
        sa.Column("sketch", sa.JSON(), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("request_id"),
    )
    with op.batch_alter_table("triage_records", schema=None) as batch_op:
        batch_op.create_index("ix_triage_records_created_at", ["created_at"], unique=False)

    op.create_table(
        "triage_outcomes",
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("actual_center", sa.String(length=64), nullable=False),
        sa.Column("clinician_urgency", sa.String(length=16), nullable=True),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.CheckConstraint(f"clinician_urgency IS NULL OR clinician_urgency IN {_URGENCY}",
                           name="ck_triage_outcomes_urgency"),
        sa.ForeignKeyConstraint(["request_id"], ["triage_records.request_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("request_id"),
    )
    with op.batch_alter_table("triage_outcomes", schema=None) as batch_op:
        batch_op.create_index("ix_triage_outcomes_recorded_at", ["recorded_at"], unique=False)

    op.create_table(
        "shadow_scores",
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("champion_version", sa.String(length=100), nullable=False),
        sa.Column("challenger_version", sa.String(length=100), nullable=False),
        sa.Column("champion_center", sa.String(length=64), nullable=False),
        sa.Column("challenger_center", sa.String(length=64), nullable=False),
        sa.Column("champion_confidence", sa.Float(), nullable=False),
        sa.Column("challenger_confidence", sa.Float(), nullable=False),
        sa.Column("champion_abstained", sa.Boolean(), nullable=False),
        sa.Column("challenger_abstained", sa.Boolean(), nullable=False),
        sa.Column("agree", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["triage_records.request_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("request_id"),
    )
    with op.batch_alter_table("shadow_scores", schema=None) as batch_op:
        batch_op.create_index("ix_shadow_scores_versions", ["challenger_version", "champion_version"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("shadow_scores", schema=None) as batch_op:
        batch_op.drop_index("ix_shadow_scores_versions")
    op.drop_table("shadow_scores")
    with op.batch_alter_table("triage_outcomes", schema=None) as batch_op:
        batch_op.drop_index("ix_triage_outcomes_recorded_at")
    op.drop_table("triage_outcomes")
    with op.batch_alter_table("triage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_triage_records_created_at")
    op.drop_table("triage_records")
