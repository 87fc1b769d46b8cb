"""Report bytes do not depend on the database's default collation (issue 15, part 6).

The compose image's PostgreSQL is initialised in `en_US.utf8`; the local cluster has the C
locale. Two fresh databases on the test server stand for them: one whose default collation
is ICU's `en-US` (this machine has no libc en_US locale; ICU orders the same way), one in C.
The same sales go into both, and the day's stats and the report files' bytes must agree,
with frequent clients tied on purchases and units ordered by client in code-point order.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from gremio import db, sales_stats
from gremio.sales_daily_report import render_csv, render_json
from gremio.settings import Settings, get_settings

DAY = date(2019, 3, 14)
SCL = ZoneInfo("America/Santiago")
MASTER = ("11111111-1", "Ana", "Collado", "COLL11")
# Tied: every client buys twice, 3 units each time. Folded (client_key) they are
# "_ana" < "bruno" < "zoe" < "ábel" < "ñandú" in code points; en-US puts á with a, ñ with n.
CLIENTS = ["zoe", "Ábel", "bruno", "_ana", "Ñandú"]
CODE_POINT_ORDER = sorted(c.lower() for c in CLIENTS)
COLLATIONS = {
    "c": "template template0 locale 'C'",
    "en_us": "template template0 locale 'C.utf8' locale_provider icu icu_locale 'en-US'",
}


@pytest.fixture
def databases(stack):
    """One fresh, migrated database per default collation, owned by the app role."""
    suffix = uuid.uuid4().hex[:8]
    names = {key: f"collation_{key}_{suffix}" for key in COLLATIONS}
    base = get_settings().db_url.rsplit("/", 1)[0]
    with psycopg.connect(stack._pg.superuser_dsn(), autocommit=True) as conn:
        for key, name in names.items():
            conn.execute(
                sql.SQL("create database {} owner gremio ").format(sql.Identifier(name))
                + sql.SQL(COLLATIONS[key])
            )
    found = {key: Settings(database_url=f"{base}/{name}") for key, name in names.items()}
    try:
        for settings in found.values():
            db.migrate(settings)
        yield found
    finally:
        with psycopg.connect(stack._pg.superuser_dsn(), autocommit=True) as conn:
            for name in names.values():
                conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def seed(settings: Settings) -> None:
    rut, first, last, plate = MASTER
    sold = datetime.combine(DAY, datetime.min.time(), SCL) + timedelta(hours=10)
    with db.connect(settings) as conn:
        conn.execute(
            "insert into members (rut, first_name, last_name, email, plate, approved_at)"
            " values (%s, %s, %s, 'ana@example.cl', %s, '2019-01-01')",
            (rut, first, last, plate),
        )
        for i, client in enumerate(CLIENTS):
            for n in range(2):
                conn.execute(
                    "insert into sales (id, plate, client, quantity, sold_at, stock_remaining, lat, lon,"
                    " received_at) values (%s, %s, %s, 3, %s, 50, -33.45, -70.66, %s)",
                    (uuid.uuid4(), plate, client, sold + timedelta(minutes=10 * i + n), sold),
                )


def test_the_two_databases_really_collate_differently(databases):
    """Without `collate "C"` the order would differ: the test below would mean something."""
    orders = {}
    for key, settings in databases.items():
        with db.connect(settings) as conn:
            row = conn.execute(
                "select array_agg(c order by c) from unnest(%s::text[]) as c", (CODE_POINT_ORDER,)
            ).fetchone()
            orders[key] = row[0]
    assert orders["c"] == CODE_POINT_ORDER
    assert orders["en_us"] != CODE_POINT_ORDER


def test_frequent_clients_and_report_bytes_are_the_same_under_both_collations(databases):
    settings = get_settings()
    results = {}
    for key, target in databases.items():
        seed(target)
        with db.connect(target) as conn:
            rows, totals = sales_stats.compute_day(conn, DAY, settings)
        results[key] = (rows, render_csv(rows), render_json(DAY, rows, totals, settings.guild_timezone))
    (rows, csv_c, json_c), (_, csv_en, json_en) = results["c"], results["en_us"]
    [master] = rows
    expected = CODE_POINT_ORDER[: settings.frequent_clients_max]
    assert [c.client for c in master.frequent_clients] == expected
    assert csv_c == csv_en
    assert json_c == json_en
