"""event client keys: a camera worker on another machine names each event it sends, so that
an event sent again (its answer was lost, or it waited in the worker's buffer) is recorded
once, and a later correction (track ended, identity retracted) can name an event the
server has not numbered yet. Unique per camera; NULL (every locally recorded event) repeats.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Adding a nullable column and an index needs no copy of the table on SQLite (batch mode
    # "auto" alters it in place), so the events' AUTOINCREMENT and PostgreSQL's triggers stay.
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("client_key", sa.String(length=64), nullable=True))
        batch.create_index("ux_events_camera_client_key", ["camera", "client_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ux_events_camera_client_key")
        batch.drop_column("client_key")
