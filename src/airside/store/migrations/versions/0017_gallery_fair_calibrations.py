"""gallery fair calibrations: a gallery's own label-free fair calibration (regions of face
space and their impostor statistics, and the FMR table of the calibrated scores), fitted on
its enrolled subjects; one per gallery, deleted with it

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gallery_fair_calibrations",
        sa.Column("gallery_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("fair_json", sa.Text(), nullable=False),
        sa.Column("subjects", sa.Integer(), nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fitted_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["gallery_id"], ["galleries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gallery_id"),
    )


def downgrade() -> None:
    op.drop_table("gallery_fair_calibrations")
