"""Late sales correct their days, by themselves (docs/SALES_DAILY.md, "Late sales").

Real sales_daily runs with dag.test() against the session's broker and database. The days
are 2025-03-02 to 2025-03-11, far from the other modules' days, and the carts are this
module's own (no member: they count as `unregistered`).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

import pytest
from psycopg import sql

from gremio import db
from tests.dags.test_sales_daily import at, produce_sales, report, report_bytes, run_day, sale

LATE_PLATES = ["LTSL01", "LTSL02"]
L = date(2025, 3, 10)  # the day that gets late sales
OLD = L - timedelta(days=4)  # older than SALES_MAX_AGE_DAYS (3) seen from the next run's day

DAG_SETTINGS = {"SALES_DAILY_START_DATE": "2024-12-01", "SALES_MAX_AGE_DAYS": "3"}


def cleanup() -> None:
    with db.connect() as conn:
        conn.execute("delete from sales where plate = any(%s)", (LATE_PLATES,))
        for table in ("daily_master_stats", "daily_sales_totals"):
            conn.execute(
                sql.SQL("delete from {} where day between %s and %s").format(sql.Identifier(table)),
                (OLD, L + timedelta(days=1)),
            )


@pytest.fixture(scope="module")
def dag(load_dag):
    cleanup()
    yield load_dag("sales_daily")
    cleanup()


def csv_counts(day: date) -> tuple[int, int]:
    """(sales_count, units_sold) of the day's unregistered line."""
    [line] = csv.DictReader(io.StringIO(report(day, "csv").read_text(encoding="utf-8")))
    return int(line["sales_count"]), int(line["units_sold"])


def test_a_late_batch_appears_in_its_day_after_the_next_run_and_a_rerun_changes_nothing(dag):
    produce_sales([sale("LTSL01", "ana", 2, at(L, 12)), sale("LTSL02", "beto", 3, at(L, 13))])
    produce_sales([sale("LTSL01", "carla", 1, at(OLD, 12))])
    run_day(dag, OLD)
    run_day(dag, L)
    assert csv_counts(L) == (2, 5)
    assert "revision" not in json.loads(report(L, "json").read_text(encoding="utf-8"))
    assert "REVISADO" not in report(L, "txt").read_text(encoding="utf-8")
    old_files = report_bytes(OLD)

    # A cart syncs its offline batch of L, and one sale of OLD, after both reports were written.
    produce_sales([sale("LTSL01", "dora", 4, at(L, 18)), sale("LTSL02", "eva", 1, at(L, 19))])
    produce_sales([sale("LTSL02", "fito", 9, at(OLD, 15))])
    run = run_day(dag, L + timedelta(days=1))  # the next day's ordinary run

    assert csv_counts(L) == (4, 10)
    assert report(L, "csv").read_text(encoding="utf-8").splitlines()[0].startswith("day,rut,name,plate,")
    revision = json.loads(report(L, "json").read_text(encoding="utf-8"))["revision"]
    assert revision["late_sales"] == 2
    assert "REVISADO" in report(L, "txt").read_text(encoding="utf-8")
    assert "2 ventas de este día llegaron después del primer informe" in report(L, "txt").read_text(
        encoding="utf-8"
    )
    # OLD is beyond the look-back (the API refuses sales that old): left as it was.
    assert report_bytes(OLD) == old_files
    # The correction is visible as mapped tasks, one per day reported.
    mapped = {ti.map_index for ti in run.get_task_instances() if ti.task_id == "report_day.write_reports"}
    assert mapped == {0, 1}

    # The same run again, with no new sale: the same bytes, the revision note included.
    before = report_bytes(L)
    run_day(dag, L + timedelta(days=1))
    assert report_bytes(L) == before
