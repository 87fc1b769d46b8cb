"""PostgreSQL restarts in the middle of the daily drain, after part of it is committed.

20,000 sales of one day (a day no other test uses) go on `sales`. The sales_daily DAG runs
for real (dag.test(), the drain in chunks of 2,000). One sale is held back: a connection
inserts its id without committing, so the drain's INSERT ... ON CONFLICT waits on it once it
reaches that chunk, after several chunks and their offsets are committed. Then PostgreSQL
(which also holds Airflow's metadata) is restarted under it. The drain task fails, Airflow
retries it, and the retry resumes from the committed offsets: every sale is in `sales`
exactly once, the group's offsets stand at the marks, and the day's report counts them all.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import Sale
from gremio.settings import get_settings
from tests.reliability.oracle import ids_in_table
from tests.support import commit_at_end, committed, new_plate, task_tries, wait_for, waits_on_lock

# The DAG told to start before the day (tests/dags/conftest.py, load_dag).
DAG_SETTINGS = {"SALES_DAILY_START_DATE": "2024-12-01"}
SCL = ZoneInfo("America/Santiago")
DAY = date(2025, 2, 12)
SALES = 20_000
CHUNK = 2_000
GROUP = "airflow-sales-daily"  # the DAG's own consumer group


@pytest.fixture(scope="module")
def dag(load_dag):
    return load_dag("sales_daily")


def test_postgres_restarted_mid_drain_the_retry_loads_every_sale_once(
    dag, stack, execution_api_retries, figures
):
    from airflow.utils.state import DagRunState

    commit_at_end(GROUP, [t.SALES.name])  # the days before are drained
    plates = [new_plate() for _ in range(20)]  # no member owns them: master "unregistered"
    start = datetime(DAY.year, DAY.month, DAY.day, 8, tzinfo=SCL)
    sales = [
        Sale(
            id=uuid.uuid4(), plate=plates[i % 20], client=f"cliente {i % 300}", quantity=1 + i % 3,
            sold_at=start + timedelta(seconds=i), stock_remaining=50, lat=-33.44, lon=-70.65,
            received_at=start + timedelta(seconds=i),
        )
        for i in range(SALES)
    ]  # fmt: skip
    acked = gk.produce_all(
        gk.producer(),
        [(t.SALES.name, s.plate.encode(), s.to_bytes(), [("type", b"Sale")], None) for s in sales],
        timeout=120,
    )
    marks = committed(GROUP)
    # Held back: the last sale of the fullest partition, so the chunks before it commit first.
    fullest = max({m.partition() for m in acked}, key=lambda p: sum(m.partition() == p for m in acked))
    held = max((m for m in acked if m.partition() == fullest), key=lambda m: m.offset())
    held_sale = Sale.from_bytes(held.value())

    task = dag.get_task("drain_sales")
    # transient_timeout 0: the drain gives a lost connection straight back to Airflow, whose
    # retry is what this test proves (the in-task retry has its own, test_drain_restart.py).
    saved = (
        task.rows_per_transaction,
        task.retry_delay,
        task.retry_exponential_backoff,
        task.transient_timeout,
    )
    task.rows_per_transaction, task.retry_delay, task.retry_exponential_backoff, task.transient_timeout = (
        CHUNK,
        timedelta(seconds=1),
        0,
        0,
    )
    blocker = db.connect(autocommit=False)
    blocker.execute(
        "insert into sales (id, plate, client, quantity, sold_at, stock_remaining, lat, lon, received_at)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (held_sale.id, held_sale.plate, held_sale.client, held_sale.quantity, held_sale.sold_at,
         held_sale.stock_remaining, held_sale.lat, held_sale.lon, held_sale.received_at),
    )  # fmt: skip
    fault: dict[str, float] = {}

    def restart_postgres_mid_drain() -> None:
        try:
            wait_for(
                lambda: waits_on_lock("drain sales"), timeout=180, what="the drain to reach the held sale"
            )
            fault["committed_before"] = sum(committed(GROUP).values()) - sum(marks.values())
            began = time.monotonic()
            stack.stop_postgres()
            stack.start_postgres()
            fault["restart_seconds"] = time.monotonic() - began
        finally:
            stack.start_postgres()

    restarter = threading.Thread(target=restart_postgres_mid_drain, daemon=True)
    restarter.start()
    began = time.monotonic()
    try:
        # A manual run's interval is the last complete one: 00:16 the next day reports DAY.
        run = dag.test(logical_date=datetime(DAY.year, DAY.month, DAY.day + 1, 0, 16, tzinfo=SCL))
    finally:
        restarter.join(240)
        blocker.close()
        stack.start_postgres()
        (
            task.rows_per_transaction,
            task.retry_delay,
            task.retry_exponential_backoff,
            task.transient_timeout,
        ) = saved
    took = time.monotonic() - began

    assert run.state == DagRunState.SUCCESS
    assert "restart_seconds" in fault, "PostgreSQL was restarted during the drain"
    assert fault["committed_before"] >= CHUNK, "part of the drain was committed before the restart"
    assert task_tries("sales_daily", run.run_id, "drain_sales") == [(1, "failed"), (2, "success")]

    stored = ids_in_table("sales", [s.id for s in sales])
    assert len(stored) == SALES and set(stored.values()) == {1}
    ends = {(m.topic(), m.partition()): 0 for m in acked}
    for m in acked:
        ends[(m.topic(), m.partition())] = max(ends[(m.topic(), m.partition())], m.offset() + 1)
    now_at = committed(GROUP)
    assert all(now_at[tp] >= end for tp, end in ends.items())
    csv = (get_settings().reports_dir / "daily" / f"{DAY.isoformat()}.csv").read_text(encoding="utf-8")
    [row] = [line for line in csv.splitlines() if ",unregistered," in line]
    assert row.split(",")[4:6] == [str(SALES), str(sum(s.quantity for s in sales))]
    figures.update(
        sales=SALES,
        chunk=CHUNK,
        committed_before_the_restart=fault["committed_before"],
        postgres_restart_seconds=round(fault["restart_seconds"], 1),
        tries=task_tries("sales_daily", run.run_id, "drain_sales"),
        in_postgresql=len(stored),
        duplicates=0,
        run_seconds=round(took, 1),
    )
