"""per-subject key for audit digests (crypto-shredded on erasure)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(sa.Column("audit_salt", sa.String(64), nullable=True))
    conn = op.get_bind()
    ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM subjects"))]
    for sid in ids:
        conn.execute(
            sa.text("UPDATE subjects SET audit_salt = :s WHERE id = :i"),
            {"s": secrets.token_hex(16), "i": sid},
        )
    with op.batch_alter_table("subjects") as batch:
        batch.alter_column("audit_salt", existing_type=sa.String(64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("subjects") as batch:
        batch.drop_column("audit_salt")
