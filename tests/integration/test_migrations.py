"""Migrations from sql/ against the real database (DESIGN §6)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from gremio import db
from gremio.settings import Settings, get_settings

TABLES = {
    "members",
    "member_applications",
    "background_flags",
    "sales",
    "replenishment_orders",
    "fugitive_reports",
    "alerts",
    "daily_master_stats",
    "schema_migrations",
}


@pytest.fixture
def fresh_database(stack):
    """An empty database on the test server, owned by the app role."""
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack._pg.superuser_dsn(), autocommit=True) as conn:
        conn.execute(f'create database "{name}" owner gremio')
    settings = Settings(database_url=get_settings().db_url.rsplit("/", 1)[0] + "/" + name)
    yield settings
    with psycopg.connect(stack._pg.superuser_dsn(), autocommit=True) as conn:
        conn.execute(f'drop database "{name}" with (force)')


def test_migrations_apply_once_then_do_nothing(fresh_database):
    first = db.migrate(fresh_database)
    assert first == [p.stem for p in db.migration_files()]
    assert db.migrate(fresh_database) == []
    assert db.applied_migrations(fresh_database) == first
    with db.connect(fresh_database) as conn:
        tables = {r[0] for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")}
    assert tables >= TABLES


def test_every_migration_file_is_itself_safe_to_run_twice(fresh_database):
    db.migrate(fresh_database)
    with db.connect(fresh_database) as conn:
        for path in db.migration_files():
            conn.execute(path.read_text())
        conn.commit()


def test_one_open_order_per_cart_is_enforced_by_the_schema():
    with db.connect() as conn:
        plate = "ZZZZ" + str(uuid.uuid4().int % 90 + 10)
        insert = (
            "insert into replenishment_orders (id, plate, sale_id, stock_at_trigger, quantity, created_at)"
            " values (%s, %s, %s, 10, 90, now())"
        )
        conn.execute(insert, (uuid.uuid4(), plate, uuid.uuid4()))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (uuid.uuid4(), plate, uuid.uuid4()))
        conn.rollback()
