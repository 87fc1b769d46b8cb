"""PostgreSQL helpers: connections, SQL files from `sql/`, and the migration runner."""

from __future__ import annotations

import logging
import time
from functools import cache
from pathlib import Path

import psycopg

from gremio.settings import REPO_ROOT, Settings, get_settings

log = logging.getLogger(__name__)

SQL_DIR = REPO_ROOT / "sql"
MIGRATIONS_DIR = SQL_DIR  # numbered files: NNN_name.sql
_MIGRATION_LOCK = 0x67_72_65_6D_69_6F  # "gremio": one migrator at a time


def connect(settings: Settings | None = None, **kwargs) -> psycopg.Connection:
    settings = settings or get_settings()
    return psycopg.connect(settings.db_url, **kwargs)


def wait_for_db(settings: Settings | None = None, timeout: float = 60.0) -> None:
    """Until the settings' database answers `select 1`, or TimeoutError."""
    wait_for_dsn((settings or get_settings()).db_url, timeout)


def wait_for_dsn(dsn: str, timeout: float = 60.0) -> None:
    """Until PostgreSQL at `dsn` answers `select 1` (retried every 0.3 s), or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                conn.execute("select 1")
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL did not answer within {timeout:.0f} s: {exc}") from exc
            time.sleep(0.3)


@cache
def query(name: str) -> str:
    """The text of a named query file, `sql/queries/<name>.sql`."""
    return (SQL_DIR / "queries" / f"{name}.sql").read_text(encoding="utf-8")


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(p for p in directory.glob("[0-9][0-9][0-9]_*.sql"))


def migrate(settings: Settings | None = None, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded in `schema_migrations`; return their names."""
    applied: list[str] = []
    with connect(settings, autocommit=False) as conn:
        conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        # The guild's days, for migrations that need them (sql/100_sales_partitions.sql).
        tz = (settings or get_settings()).guild_timezone
        conn.execute("select set_config('gremio.guild_timezone', %s, true)", (tz,))
        conn.execute(
            """
            create table if not exists schema_migrations (
                version text primary key,
                applied_at timestamptz not null default now()
            )
            """
        )
        done = {row[0] for row in conn.execute("select version from schema_migrations")}
        for path in migration_files(directory):
            if path.stem in done:
                continue
            log.info("applying migration %s", path.name)
            conn.execute(path.read_text(encoding="utf-8"))
            conn.execute("insert into schema_migrations (version) values (%s)", (path.stem,))
            applied.append(path.stem)
        conn.commit()
    return applied


def applied_migrations(settings: Settings | None = None) -> list[str]:
    with connect(settings) as conn:
        return [r[0] for r in conn.execute("select version from schema_migrations order by version")]
