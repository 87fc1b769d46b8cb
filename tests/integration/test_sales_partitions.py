"""`sales` partitioned by the guild's day (sql/100_sales_partitions.sql, gremio/sales_partitions.py).

The migration converts a table that has rows; the drain makes its days' partitions and still
stores each sale once (a redelivery, and a retried request without sold_at); a day's stats,
checks and late-sales count read only their window's partitions (EXPLAIN); the partitions'
bounds are the guild's days, 23 and 25 hours long too.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gremio import db, guild_time, sales_stats
from gremio import topics as t
from gremio.records import Sale
from gremio.settings import Settings, get_settings
from tests.support import make_topic

TZ = "America/Santiago"
D1 = date(2026, 10, 7)  # no other test's day
PLATE = "PRTZ11"
COLUMNS = "id, plate, client, quantity, sold_at, stock_remaining, lat, lon, received_at"
INSERT = (
    "insert into sales (id, plate, client, quantity, sold_at, stock_remaining, lat, lon, received_at)"
    " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def partition(day: date) -> str:
    return f"sales_{day:%Y%m%d}"


def sale(at: datetime, received: datetime | None = None, **changes: Any) -> Sale:
    fields = {
        "id": uuid.uuid4(),
        "plate": PLATE,
        "client": "cliente",
        "quantity": 2,
        "sold_at": at,
        "stock_remaining": 50,
        "lat": -33.45,
        "lon": -70.66,
        "received_at": received or at + timedelta(seconds=1),
    }
    return Sale(**{**fields, **changes})


def relations(plan: Any) -> set[str]:
    """Every table an EXPLAIN (FORMAT JSON) plan reads."""
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            found.add(plan["Relation Name"])
        for value in plan.values():
            found |= relations(value)
    elif isinstance(plan, list):
        for item in plan:
            found |= relations(item)
    return found


def explain(conn: psycopg.Connection, name: str, params: dict) -> set[str]:
    (plan,) = conn.execute("explain (format json) " + db.query(name), params).fetchone()
    return {r for r in relations(plan) if r.startswith("sales")}


# --- the migration --------------------------------------------------------------------------------


@pytest.fixture
def fresh_database(stack):
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack._pg.superuser_dsn(), autocommit=True) as conn:
        conn.execute(f'create database "{name}" owner gremio')
    yield Settings(database_url=get_settings().db_url.rsplit("/", 1)[0] + "/" + name)
    with psycopg.connect(stack._pg.superuser_dsn(), autocommit=True) as conn:
        conn.execute(f'drop database "{name}" with (force)')


def test_the_migration_converts_a_sales_table_with_rows(fresh_database, tmp_path: Path):
    before = tmp_path / "before"
    before.mkdir()
    for path in db.migration_files():
        if path.stem < "100":
            shutil.copy(path, before / path.name)
    db.migrate(fresh_database, directory=before)
    noon = datetime(2026, 10, 7, 15, 0, tzinfo=UTC)  # 12:00 in Santiago
    late_evening = datetime(2026, 10, 8, 2, 30, tzinfo=UTC)  # 23:30 on the 7th in Santiago
    rows = [
        sale(noon - timedelta(days=1)),
        sale(noon),
        sale(late_evening),
        sale(noon + timedelta(hours=1), received=noon + timedelta(hours=1)),  # sold_at filled in
        sale(datetime(2001, 1, 1, tzinfo=UTC)),  # older than any day partition made: the default's
    ]
    with db.connect(fresh_database) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                INSERT,
                [tuple(getattr(s, c) for c in COLUMNS.split(", ")) for s in rows],
            )
        conn.commit()
        stored_before = conn.execute("select * from sales order by id").fetchall()

    applied = db.migrate(fresh_database)
    assert applied[0] == "100_sales_partitions", applied  # then any later migration (110_monitor, ...)

    with db.connect(fresh_database) as conn:
        assert conn.execute("select relkind from pg_class where relname = 'sales'").fetchone() == ("p",)
        assert conn.execute("select * from sales order by id").fetchall() == stored_before
        where = dict(conn.execute("select id, tableoid::regclass::text from sales").fetchall())
        assert [where[s.id] for s in rows] == [
            partition(date(2026, 10, 6)), partition(D1), partition(D1), partition(D1), "sales_default"
        ]  # fmt: skip
        indexes = {r[0] for r in conn.execute("select indexname from pg_indexes where tablename = 'sales'")}
        assert indexes == {"sales_pkey", "sales_sold_at", "sales_plate_sold_at", "sales_drained_at"}
        assert conn.execute(
            "select pg_get_constraintdef(oid) from pg_constraint where conname = 'sales_pkey'"
        ).fetchone() == ("PRIMARY KEY (id, sold_at)",)
        assert conn.execute(
            "select column_default from information_schema.columns"
            " where table_name = 'sales' and column_name = 'drained_at'"
        ).fetchone() == ("now()",)
        assert conn.execute("select id from sales_unstamped").fetchall() == [(rows[3].id,)]
        assert conn.execute(
            "select has_table_privilege('gremio_airflow', 'sales', 'select, insert'),"
            " has_table_privilege('gremio_airflow', 'sales', 'delete'),"
            " has_function_privilege('gremio_airflow', 'sales_add_partitions(date[], text)', 'execute'),"
            " has_table_privilege('gremio_stock', 'sales', 'select')"
        ).fetchone() == (True, False, True, False)
        assert conn.execute("select to_regclass('sales_unpartitioned')").fetchone() == (None,)
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute(INSERT, (uuid.uuid4(), "X", "x", 0, noon, 1, 0, 0, noon))
        # Safe to run twice, and sql/001 and sql/080 stay no-ops on the partitioned table.
        for path in db.migration_files():
            conn.execute(path.read_text(encoding="utf-8"))
        conn.commit()
        assert conn.execute("select * from sales order by id").fetchall() == stored_before


# --- the partitions' bounds -----------------------------------------------------------------------


def test_a_partition_holds_exactly_its_guild_day_23_and_25_hours_long_too():
    year = date.today().year
    odd = [
        day
        for day in (date(year, 1, 1) + timedelta(days=i) for i in range(365))
        if (lambda b: b[1].astimezone(UTC) - b[0].astimezone(UTC))(guild_time.day_bounds(day, TZ))
        != timedelta(hours=24)
    ]
    assert len(odd) == 2, odd  # Chile's two changes
    with db.connect() as conn, conn.transaction(force_rollback=True):
        for day in odd:
            conn.execute(
                "select sales_add_partitions(%s, %s)",
                ([day - timedelta(days=1), day, day + timedelta(days=1)], TZ),
            )
            start, end = (b.astimezone(UTC) for b in guild_time.day_bounds(day, TZ))  # instants
            tick = timedelta(microseconds=1)
            probes = [start - tick, start, end - tick, end]
            for at in probes:
                conn.execute(INSERT, (uuid.uuid4(), "PRTZ99", "x", 1, at, 1, 0, 0, at + timedelta(seconds=1)))
            where = dict(
                conn.execute(
                    "select sold_at, tableoid::regclass::text from sales where sold_at = any(%s)", (probes,)
                ).fetchall()
            )
            assert [where[at] for at in probes] == [
                partition(day - timedelta(days=1)), partition(day), partition(day), partition(day + timedelta(days=1))
            ]  # fmt: skip


def test_the_function_makes_nothing_but_sane_day_partitions():
    with db.connect() as conn, conn.transaction(force_rollback=True):
        far = date.today() + timedelta(days=30)
        assert conn.execute(
            "select sales_add_partitions(%s, %s)", ([far, date(1990, 1, 1)], TZ)
        ).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InvalidParameterValue), conn.transaction():
            conn.execute("select sales_add_partitions(array[current_date], 'Mars/Olympus')")
        with pytest.raises(psycopg.errors.InvalidParameterValue), conn.transaction():
            conn.execute(
                "select sales_add_partitions(array(select current_date - i from generate_series(0, 400) i), %s)",
                (TZ,),
            )


# --- the drain: its days' partitions, each sale once -----------------------------------------------


def drain_into_sales(topic: str, **kwargs: Any) -> dict:
    """The sales_daily DAG's drain task, as configured there, on a topic of this test's own."""
    from airflow.dag_processing.dagbag import DagBag
    from kafka_drain import KafkaDrainOperator

    from gremio.settings import REPO_ROOT

    task = (
        DagBag(dag_folder=str(REPO_ROOT / "dags" / "sales_daily.py"))
        .dags["sales_daily"]
        .get_task("drain_sales")
    )
    op = KafkaDrainOperator(
        task_id="drain",
        topic=topic,
        table=task.table,
        record=task.record,
        group_id=f"group-{uuid.uuid4().hex[:8]}",
        conflict_columns=task.conflict_columns,
        prepare=task.prepare,
        stall_timeout=60.0,
        **kwargs,
    )
    return op.execute(context={})


@pytest.fixture
def own_sales(stack):
    yield
    with db.connect() as conn:
        conn.execute("delete from sales where plate = %s", (PLATE,))
        conn.execute("delete from sales_unstamped where sold_at >= '2026-10-01' and sold_at < '2026-10-20'")


def test_the_drain_makes_its_days_partitions_and_stores_each_sale_once(stack, own_sales):
    from gremio import kafka as gk

    noon = datetime(2026, 10, 7, 15, 0, tzinfo=UTC)
    stamped = [sale(noon + timedelta(minutes=i)) for i in range(5)]
    stamped.append(sale(datetime(2026, 10, 9, 2, 30, tzinfo=UTC)))  # 23:30 on the 8th in Santiago
    unstamped = sale(noon + timedelta(hours=2), received=noon + timedelta(hours=2))
    # The same request retried a minute later: same id, and the server filled sold_at anew.
    retried = unstamped.model_copy(update={"sold_at": unstamped.sold_at + timedelta(minutes=1),
                                           "received_at": unstamped.received_at + timedelta(minutes=1)})  # fmt: skip
    records = [*stamped, unstamped, stamped[0], retried, unstamped, stamped[5], retried]
    topic = make_topic(f"partitions-{uuid.uuid4().hex[:8]}", 1)
    gk.produce_all(
        gk.producer(), [(topic, PLATE.encode(), r.to_bytes(), [("type", b"Sale")], None) for r in records]
    )
    assert t.SALES.name != topic

    result = drain_into_sales(topic, rows_per_transaction=4)

    assert (result["read"], result["inserted"], result["deadlettered"]) == (len(records), 7, 0)
    with db.connect() as conn:
        stored = conn.execute(
            "select id, sold_at, tableoid::regclass::text from sales where plate = %s", (PLATE,)
        ).fetchall()
    assert sorted(stored) == sorted(
        [(s.id, s.sold_at, partition(D1)) for s in stamped[:5]]
        + [(stamped[5].id, stamped[5].sold_at, partition(date(2026, 10, 8)))]
        + [(unstamped.id, unstamped.sold_at, partition(D1))]
    )
    # Read again from the start by another group: every record is already stored.
    again = drain_into_sales(topic, rows_per_transaction=100)
    assert (again["read"], again["inserted"]) == (len(records), 0)


# --- a day's reads: only its window's partitions ----------------------------------------------------


def test_a_days_stats_checks_and_late_count_read_only_their_windows_partitions(stack):
    settings = get_settings()
    start, end = guild_time.day_bounds(D1, TZ)
    window = settings.frequent_client_window_days
    with psycopg.connect(settings.role_db_url("airflow")) as conn:
        sales_stats.compute_day(conn, D1, settings)  # makes the window's partitions if missing
        conn.commit()
        # A partition outside the window, on both sides: they must not be read.
        with conn.transaction():
            conn.execute(
                "select sales_add_partitions(%s, %s)",
                ([D1 + timedelta(days=1), D1 - timedelta(days=window)], TZ),
            )
        day_params = {"day": D1, "day_start": start, "day_end": end}
        stats = explain(
            conn,
            "sales_daily_stats",
            {
                **day_params,
                "window_start": guild_time.window_start(D1, window, TZ),
                "min_purchases": 2,
                "max_frequent": 3,
            },
        )
        assert stats == {partition(D1 - timedelta(days=i)) for i in range(window)}
        assert explain(conn, "sales_daily_check_masters", day_params) == {partition(D1)}
        assert explain(
            conn, "sales_daily_totals_upsert", {**day_params, "sales_count": 0, "units_sold": 0, "clients": 0}
        ) == {partition(D1)}
        conn.rollback()
