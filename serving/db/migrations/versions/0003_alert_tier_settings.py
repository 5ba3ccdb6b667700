"""alert tier settings (issue 17): which tiers queue, per finding category and severity

One row (id = 1) holding the pharmacist lead's queue settings as JSON, its version (optimistic locking), who
changed it when, and the id of the ``policy.alert_tiers`` audit entry written in the same transaction.  No row
means the shipped ``default`` preset.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_tier_settings",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_alert_tier_settings_single_row"),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("alert_tier_settings")
