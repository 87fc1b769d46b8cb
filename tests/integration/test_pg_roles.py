"""Least privilege in PostgreSQL (sql/060_roles.sql, `gremio db-roles`), on the real database.

Each service role is refused where it has no business, holds no power beyond its grants, and
can still do its own job: the queries its code runs pass under it. The stock, locations and
DAG tests run their services under these roles too (tests/support.py, tests/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime

import psycopg
import pytest
from psycopg import errors, sql
from pydantic import SecretStr

from gremio import db, db_roles, membership, sales_stats
from gremio.settings import DB_ROLES, get_settings
from gremio.stack.testing import AIRFLOW, ThrowawayStack

SERVICE_ROLES = tuple(DB_ROLES)  # stock, locations, airflow
OWNED_BY_OPERATORS = ("background_flags", "deadletter_replays", "schema_migrations")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def connect(role: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(get_settings().role_db_url(role), **kwargs)


@pytest.fixture(scope="module")
def conns() -> Iterator[dict[str, psycopg.Connection]]:
    opened = {role: connect(role, autocommit=True) for role in SERVICE_ROLES}
    yield opened
    for conn in opened.values():
        conn.close()


def refused(conn: psycopg.Connection, statement: str | sql.Composable, params: dict | None = None) -> None:
    with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
        conn.execute(statement, params)


# --- refused where it has no business -----------------------------------------------------------

REFUSED = {
    "stock": [
        "update members set premium = true where rut = 'x'",
        "select rut, email from members",
        "select * from member_applications",
        "delete from background_flags",
        "insert into alerts (id, kind, detail, created_at) values (gen_random_uuid(), 'jump', 'x', now())",
        "select * from sales",
        "select * from daily_master_stats",
        "select * from deadletter_replays",
        "delete from replenishment_orders",
        "update replenishment_orders set plate = 'x'",
    ],
    "locations": [
        "update cart_stock set stock_remaining = 0",
        "insert into replenishment_sales (sale_id) values (gen_random_uuid())",
        "update replenishment_orders set status = 'delivered'",
        "delete from replenishment_orders",
        "select rut from members",
        "select email from members",
        "update members set plate = 'x'",
        "select * from member_applications",
        "delete from alerts",
        "update fugitive_reports set description = 'x'",
        "select * from sales",
    ],
    "airflow": [
        "select * from cart_stock",
        "update replenishment_orders set status = 'delivered'",
        "select * from alerts",  # it adds alerts (premium_pending, report_late), never reads them
        "delete from alerts",
        "update alerts set detail = 'x'",
        "select * from fugitive_reports",
        "insert into background_flags (rut, reason) values ('1-9', 'x')",
        "delete from background_flags",
        "update members set premium = true",
        "delete from members",
        "select email from members",
        "update member_applications set email = 'x'",
        "delete from member_applications",
        "delete from sales",
        "update sales set quantity = 1",
        "delete from sales_unstamped",
        "drop table sales_default",
        "alter table sales detach partition sales_default",
        "create table sales_19990101 partition of sales for values from ('1999-01-01') to ('1999-01-02')",
        "select * from deadletter_replays",
        "select * from schema_migrations",
    ],
}


@pytest.mark.parametrize(
    ("role", "statement"), [(role, s) for role, statements in REFUSED.items() for s in statements]
)
def test_a_role_is_refused_where_it_has_no_business(conns, role, statement):
    refused(conns[role], statement)


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_no_role_creates_anything(conns, role):
    conn = conns[role]
    refused(conn, "create table public.intruder (x int)")
    refused(conn, "create function public.intruder() returns int language sql as 'select 1'")
    refused(conn, "create schema intruder")
    refused(conn, "create role intruder")


@pytest.mark.parametrize("role", ["stock", "locations"])
def test_only_the_drain_makes_temporary_tables_and_only_it_runs_client_key(conns, role):
    refused(conns[role], "create temp table scratch (x int)")
    refused(conns[role], "select client_key('Ana')")


def test_a_table_a_later_migration_creates_is_nobody_elses_until_granted(conns):
    name = f"later_{uuid.uuid4().hex[:8]}"
    with db.connect() as owner:
        owner.execute(sql.SQL("create table {} (x int)").format(sql.Identifier(name)))
        owner.commit()
    try:
        for role in SERVICE_ROLES:
            refused(conns[role], sql.SQL("select * from {}").format(sql.Identifier(name)))
    finally:
        with db.connect() as owner:
            owner.execute(sql.SQL("drop table {}").format(sql.Identifier(name)))
            owner.commit()


def test_other_roles_of_the_cluster_cannot_even_connect(stack: ThrowawayStack):
    """Airflow's metadata role lives on the same server: the gremio database is not for it."""
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(stack.database_url((AIRFLOW[0], AIRFLOW[1], get_settings().postgres_db)))


# --- no power beyond the grants -----------------------------------------------------------------


def test_no_role_is_superuser_owner_or_role_maker(stack: ThrowawayStack):
    names = list(DB_ROLES.values())
    with psycopg.connect(stack._pg.superuser_dsn() + f" dbname={get_settings().postgres_db}") as conn:
        attributes = conn.execute(
            "select rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin"
            " from pg_roles where rolname = any(%s) order by rolname",
            (names,),
        ).fetchall()
        assert attributes == [(name, False, False, False, False, False, True) for name in sorted(names)]
        member_of = conn.execute(
            "select r.rolname from pg_auth_members m join pg_roles r on r.oid = m.member where r.rolname = any(%s)",
            (names,),
        ).fetchall()
        assert member_of == []
        owns = conn.execute(
            """
            select 'relation ' || relname from pg_class where relowner::regrole::text = any(%(n)s)
            union all select 'schema ' || nspname from pg_namespace where nspowner::regrole::text = any(%(n)s)
            union all select 'database ' || datname from pg_database where datdba::regrole::text = any(%(n)s)
            union all select 'function ' || proname from pg_proc where proowner::regrole::text = any(%(n)s)
            """,
            {"n": names},
        ).fetchall()
        assert owns == []


def test_db_roles_is_idempotent_and_refreshes_passwords():
    settings = get_settings()
    assert db_roles.ensure_logins() == list(DB_ROLES.values())
    assert db_roles.ensure_logins() == list(DB_ROLES.values())
    fresh = settings.model_copy(update={"pg_locations_password": SecretStr("n" * 40)})
    try:
        db_roles.ensure_logins(fresh)
        with psycopg.connect(fresh.role_db_url("locations")) as conn:
            assert conn.execute("select current_user").fetchone() == ("gremio_locations",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect("locations")
    finally:
        db_roles.ensure_logins(settings)
    with connect("locations") as conn:
        assert conn.execute("select current_user").fetchone() == ("gremio_locations",)


def test_db_roles_refuses_a_role_given_more_by_hand(stack: ThrowawayStack):
    with psycopg.connect(stack._pg.superuser_dsn(), autocommit=True) as su:
        su.execute("alter role gremio_stock createdb")
        try:
            with pytest.raises(
                db_roles.RoleError, match=r"gremio_stock has more than its grants \(createdb\)"
            ):
                db_roles.ensure_logins()
            su.execute("alter role gremio_stock nocreatedb")
            su.execute("grant gremio to gremio_stock")
            with pytest.raises(db_roles.RoleError, match="member of gremio"):
                db_roles.ensure_logins()
        finally:
            su.execute("alter role gremio_stock nocreatedb")
            su.execute("revoke gremio from gremio_stock")
    db_roles.ensure_logins()


# --- each role can do its own job ---------------------------------------------------------------

NONE: list = []
ORDER_COLUMNS = (
    "ids", "plates", "sale_ids", "stocks", "quantities", "statuses", "created_at", "delivered_at", "delivered_by",
)  # fmt: skip
OWN_QUERIES = {
    "stock": {
        "stock_lock_carts": {"plates": NONE},
        "stock_claim_sales": {"sale_ids": NONE},
        "stock_orders_for": {"plates": NONE, "sale_ids": NONE},
        "stock_close_orders": {"ids": NONE, "delivered_at": NONE, "sale_ids": NONE},
        "stock_insert_orders": dict.fromkeys(ORDER_COLUMNS, NONE),
        "stock_update_carts": {"plates": NONE, "stocks": NONE, "sale_ids": NONE, "sold_at": NONE},
        "stock_mark_published": {"ids": NONE},
        "stock_prune_sales": {"seconds": 3600},
    },
    "locations": {
        "locations_members": {},
        "locations_members_among": {"plates": NONE},
        "locations_suppression": {"since": EPOCH},
        "locations_recent_alerts": {"since": EPOCH, "limit": 1},
        "locations_recent_reports": {"since": EPOCH, "limit": 1},
        "locations_insert_alerts": dict.fromkeys(
            ("ids", "kinds", "plates", "lats", "lons", "details", "created_at"), NONE
        ),
        "locations_insert_reports": dict.fromkeys(
            (
                "ids",
                "lats",
                "lons",
                "descriptions",
                "plates",
                "received_at",
                "nearest_plates",
                "nearest_distances",
            ),
            NONE,
        ),
    },
    # Airflow's alerts into the table (gremio/alerts.py, sql/090_alert_kinds.sql).
    "airflow": {
        "alerts_insert": dict.fromkeys(
            ("ids", "kinds", "plates", "lats", "lons", "details", "created_at"), NONE
        ),
    },
}


@pytest.mark.parametrize(
    ("role", "name"), [(role, name) for role, queries in OWN_QUERIES.items() for name in queries]
)
def test_a_service_role_runs_its_own_queries(role, name):
    with connect(role) as conn, conn.transaction(force_rollback=True):
        conn.execute(db.query(name), OWN_QUERIES[role][name])


def test_the_airflow_role_drains_decides_and_computes():
    """The drain's staging and insert, a month's decision and a day's stats, all rolled back."""
    plate = "ZZ" + uuid.uuid4().hex[:4].upper()
    rut = f"{uuid.uuid4().int % 10**8}-K"
    with connect("airflow") as conn, conn.transaction(force_rollback=True):
        # sales is partitioned by day: its key includes sold_at (sql/100_sales_partitions.sql).
        for table, key in (("sales", "id, sold_at"), ("member_applications", "id")):
            conn.execute(
                sql.SQL("create temp table drain_stage (like {} including defaults) on commit drop").format(
                    sql.Identifier(table)
                )
            )
            conn.execute(
                sql.SQL("insert into {} select * from drain_stage on conflict ({}) do nothing").format(
                    sql.Identifier(table), sql.SQL(key)
                )
            )
            conn.execute("drop table drain_stage")
        # The drain's day partitions, through the owner's function (EXECUTE, nothing more).
        conn.execute("select sales_add_partitions(array[current_date], 'America/Santiago')")
        conn.execute(
            "insert into sales_unstamped (id, sold_at) values (gen_random_uuid(), now()) on conflict do nothing"
        )
        conn.execute(
            "insert into member_applications (id, first_name, last_name, rut, email, plate, premium, received_at)"
            " values (%s, 'Ana', 'Rojas', %s, 'ana@example.cl', %s, false, '1999-01-10')",
            (uuid.uuid4(), rut, plate),
        )
        decided = membership.decide_pending(
            conn,
            premium=False,
            decided_by="test_pg_roles",
            received_from=datetime(1999, 1, 1, tzinfo=UTC),
            received_until=datetime(1999, 2, 1, tzinfo=UTC),
            listed_month=date(1999, 1, 1),
        )
        assert [d.status for d in decided] == ["approved"]
        assert membership.month_decisions(conn, date(1999, 1, 1), "UTC")
        day = date(1999, 1, 10)
        rows, totals = sales_stats.compute_day(conn, day)
        sales_stats.store_day(conn, day, rows, totals)
        assert sales_stats.load_day(conn, day)[1] == totals
        # Late sales (sql/080_late_sales.sql): the report's marks, and the days they touched.
        sales_stats.mark_reported(conn, day)
        assert sales_stats.load_revision(conn, day).first_reported_at is not None
        assert sales_stats.touched_days(conn, date(1999, 1, 12)) == []


def test_the_airflow_role_adds_its_alerts_once_each():
    """premium_pending and report_late, no plate, no position; a repeat (same id) adds nothing."""
    from gremio import alerts
    from gremio.records import Alert, now_utc

    raised = [
        Alert(id=uuid.uuid4(), kind=kind, detail=f"test_pg_roles {kind}", created_at=now_utc())
        for kind in ("premium_pending", "report_late")
    ]
    with connect("airflow") as conn, conn.transaction(force_rollback=True):
        assert alerts.insert(conn, raised) == 2
        assert alerts.insert(conn, raised) == 0
