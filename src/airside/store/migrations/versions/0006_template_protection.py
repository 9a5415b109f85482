"""template protection: key id per template, sealed transform seed per gallery

Revision ID: 0006
Revises: 0005

Existing rows keep ``key_id`` NULL and are read as plain float32, so an old database
opens unchanged; ``airside keys rotate`` encrypts them and ``airside gallery rekey``
gives a gallery its transform.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.add_column(sa.Column("key_id", sa.String(40), nullable=True))
    with op.batch_alter_table("galleries") as batch:
        batch.add_column(sa.Column("transform_seed", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("transform_key_id", sa.String(40), nullable=True))


def downgrade() -> None:
    # Downgrading would leave encrypted vectors that older code reads as float32: refuse
    # unless nothing is protected.
    conn = op.get_bind()
    protected = conn.execute(
        sa.text(
            "SELECT (SELECT count(*) FROM templates WHERE key_id IS NOT NULL)"
            " + (SELECT count(*) FROM galleries WHERE transform_seed IS NOT NULL)"
        )
    ).scalar()
    if protected:
        raise RuntimeError(
            "cannot downgrade below 0006: templates are encrypted or transformed; "
            "re-enrol into an unprotected installation instead"
        )
    with op.batch_alter_table("galleries") as batch:
        batch.drop_column("transform_key_id")
        batch.drop_column("transform_seed")
    with op.batch_alter_table("templates") as batch:
        batch.drop_column("key_id")
