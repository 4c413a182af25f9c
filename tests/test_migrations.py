"""The migrations create exactly the schema of `meterline.store.tables`."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from conftest import fresh_database_url
from meterline.store.db import Database
from meterline.store.migrate import upgrade
from meterline.store.tables import metadata


def test_migrated_schema_matches_the_tables(db_kind, tmp_path):
    url, drop = fresh_database_url(db_kind, tmp_path)
    db = Database(url)
    try:
        upgrade(db.engine)
        upgrade(db.engine)  # a second run changes nothing
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], diff
    finally:
        db.dispose()
        drop()
