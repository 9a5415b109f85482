"""seals (HMAC) on principal and API key rows

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("principals") as b:
        b.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
    with op.batch_alter_table("api_keys") as b:
        b.add_column(sa.Column("mac", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as b:
        b.drop_column("mac")
    with op.batch_alter_table("principals") as b:
        b.drop_column("mac")
