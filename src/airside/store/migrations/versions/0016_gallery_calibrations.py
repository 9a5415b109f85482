"""gallery calibrations: a gallery's own FMR -> threshold table, fitted label-free on the
impostor pairs of its enrolled subjects (thresholds fitted where the system runs); one per
gallery, deleted with it

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gallery_calibrations",
        sa.Column("gallery_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("table_json", sa.Text(), nullable=False),
        sa.Column("subjects", sa.Integer(), nullable=False),
        sa.Column("templates", sa.Integer(), nullable=False),
        sa.Column("impostor_pairs", sa.Integer(), nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fitted_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["gallery_id"], ["galleries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gallery_id"),
    )


def downgrade() -> None:
    op.drop_table("gallery_calibrations")
