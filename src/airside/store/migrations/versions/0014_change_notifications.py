"""change notifications (PostgreSQL): a gallery whose templates or transform changed, or a
new event, is announced with NOTIFY at commit, so every process's index and event streams
follow at once instead of at their next poll (store/notifications.py). SQLite: nothing (one
machine; the revision check and the poll suffice).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Triggers, not application code: a change made by any writer (another version, a
# maintenance script) is announced too. NOTIFY is delivered only when the transaction
# commits, and never for one that rolls back.
_FUNCTIONS = """
CREATE OR REPLACE FUNCTION airside_notify_gallery() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('airside_galleries', OLD.id::text);
    RETURN OLD;
  END IF;
  PERFORM pg_notify('airside_galleries', NEW.id::text);
  RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION airside_notify_event() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('airside_events', NEW.id::text);
  RETURN NEW;
END $$ LANGUAGE plpgsql;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTIONS)
    op.execute(
        "CREATE TRIGGER airside_gallery_changed"
        " AFTER UPDATE OF revision, transform_seed, transform_key_id OR DELETE ON galleries"
        " FOR EACH ROW EXECUTE FUNCTION airside_notify_gallery()"
    )
    op.execute(
        "CREATE TRIGGER airside_event_recorded AFTER INSERT ON events"
        " FOR EACH ROW EXECUTE FUNCTION airside_notify_event()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS airside_event_recorded ON events")
    op.execute("DROP TRIGGER IF EXISTS airside_gallery_changed ON galleries")
    op.execute("DROP FUNCTION IF EXISTS airside_notify_event()")
    op.execute("DROP FUNCTION IF EXISTS airside_notify_gallery()")
