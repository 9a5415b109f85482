"""events: identity matches, watchlist hits and system events, with sealed crops

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=20), nullable=False),
        sa.Column("camera", sa.String(length=200), nullable=False),
        sa.Column("track", sa.Integer(), nullable=True),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("subject_ref", sa.String(length=200), nullable=True),
        sa.Column("gallery", sa.String(length=200), nullable=True),
        sa.Column("purpose", sa.String(length=200), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("zone", sa.String(length=200), nullable=True),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("review_case", sa.Integer(), nullable=True),
        sa.Column("evidence", sa.LargeBinary(), nullable=True),
        sa.Column("evidence_key_id", sa.String(length=40), nullable=True),
        sa.Column("evidence_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_events_camera_started_at", "events", ["camera", "started_at"])
    op.create_index("ix_events_started_at", "events", ["started_at"])
    op.create_index("ix_events_subject_id", "events", ["subject_id"])
    op.create_index("ix_events_type", "events", ["type"])
    op.create_index("ix_events_evidence_until", "events", ["evidence_until"])


def downgrade() -> None:
    op.drop_index("ix_events_evidence_until", table_name="events")
    op.drop_index("ix_events_type", table_name="events")
    op.drop_index("ix_events_subject_id", table_name="events")
    op.drop_index("ix_events_started_at", table_name="events")
    op.drop_index("ix_events_camera_started_at", table_name="events")
    op.drop_table("events")
