"""gallery index: which kind of index answers a gallery's searches (NULL: the installation's
setting), and the journal of removed templates every index replays (erasure, withdrawal,
purge) instead of being rebuilt

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("galleries") as batch:
        batch.add_column(sa.Column("index_kind", sa.String(length=16), nullable=True))
    op.create_table(
        "template_removals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gallery_id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["gallery_id"], ["galleries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_template_removals_gallery_revision",
        "template_removals",
        ["gallery_id", "revision"],
    )


def downgrade() -> None:
    op.drop_index("ix_template_removals_gallery_revision", table_name="template_removals")
    op.drop_table("template_removals")
    with op.batch_alter_table("galleries") as batch:
        batch.drop_column("index_kind")
