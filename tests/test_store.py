"""The schema comes from Alembic migrations, and they match the models exactly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from airside.store.db import Database, alembic_config, upgrade
from airside.store.tables import Base


def test_migrations_create_every_table(store_url: str) -> None:
    db = Database(store_url)
    tables = set(inspect(db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrations_match_the_models(store_url: str) -> None:
    db = Database(store_url)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_opening_twice_is_harmless(store_url: str) -> None:
    Database(store_url).dispose()
    Database(store_url).dispose()


def test_every_migration_goes_down_and_up_again(store_url: str) -> None:
    db = Database(store_url)
    cfg = alembic_config(db.engine)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    upgrade(db.engine)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    db.dispose()
