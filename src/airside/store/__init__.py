"""Persistence: SQLAlchemy models, migrations and sessions."""
