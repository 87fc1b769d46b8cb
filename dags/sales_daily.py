"""
# sales_daily: the guild's day in sales, per master sopaipillero

Runs every day at **00:15 America/Santiago** and reports the day that just ended (the
run's data interval starts at 00:15 of that day). Four steps:

1. **drain_sales** takes every sale on the Kafka topic `sales`, up to where the topic stood
   when the task started, into the PostgreSQL table `sales` (idempotent by sale id; Kafka
   offsets are committed only after the database commit; undecodable records, and sales
   PostgreSQL refuses, go to `deadletter` and the run carries on).
2. **compute_stats** works out, for every master (the approved member owning the cart's
   plate, or `unregistered`), the sales, units sold, distinct clients, units per client and
   frequent clients of the day, and stores them in `daily_master_stats`.
3. **Checks before publishing** (`check_master_numbers`, `check_nothing_negative`,
   `check_day_totals`: the common-sql provider's table and column checks through
   `gremio_db`): each master's sales and units equal the raw sums over `sales` for that
   master and day, every master has a name, nothing is negative, and the masters add up to
   the day's totals. A failed check fails the run at once, naming the check and the master
   (by cart), and the report files are left as they were.
4. **write_reports** writes `reports/daily/D.txt` (for people), `D.csv`, `D.json` and a
   `D.png` chart, once every check has passed. A re-run of a day rewrites the same bytes.

**Backfill** a range of days from the UI (*Trigger* → *Backfill*, the dates of the days to
report) or with `airflow backfill create --dag-id sales_daily --from-date 2026-11-01
--to-date 2026-11-07T23:59` (runs are at 00:15, so give the last day a time). **Re-make
one day** by clearing its run, or by triggering the DAG with the config
`{"day": "2026-11-28"}`. Details: docs/SALES_DAILY.md.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task
from dag_defaults import REPORT_DEFAULT_ARGS
from kafka_drain import KafkaDrainOperator
from report_checks import ReportColumnCheckOperator, ReportTableCheckOperator

from gremio.db import query
from gremio.settings import get_settings

SETTINGS = get_settings()
TIMEZONE = SETTINGS.guild_timezone


def guild_day(data_interval_start, params) -> dict[str, str]:
    """The run's report day and its bounds in the guild's zone (a template macro for the checks)."""
    from gremio import guild_time

    day = guild_time.report_day(data_interval_start, TIMEZONE, (params or {}).get("day"))
    start, end = guild_time.day_bounds(day, TIMEZONE)
    return {"day": day.isoformat(), "day_start": start.isoformat(), "day_end": end.isoformat()}


# The checks' query parameters: rendered per run, passed to the driver (never into the SQL text).
DAY_PARAMETERS = {
    key: f"{{{{ guild_day(data_interval_start, params)['{key}'] }}}}"
    for key in ("day", "day_start", "day_end")
}
DAY = "sales_daily {{ guild_day(data_interval_start, params)['day'] }}"


@dag(
    dag_id="sales_daily",
    schedule=CronDataIntervalTimetable("15 0 * * *", timezone=TIMEZONE),
    start_date=datetime.combine(SETTINGS.sales_daily_start_date, time(0, 15), ZoneInfo(TIMEZONE)),
    catchup=True,
    max_active_runs=1,
    default_args=REPORT_DEFAULT_ARGS,
    tags=["gremio", "sales", "reports"],
    doc_md=__doc__,
    user_defined_macros={"guild_day": guild_day},
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day to report",
            description="Leave empty for the run's own day (the day before it ran).",
        )
    },
)
def sales_daily():
    drain = KafkaDrainOperator(
        task_id="drain_sales",
        topic="sales",
        table="sales",
        record="gremio.records.Sale",
        group_id="airflow-sales-daily",
        # Two drains of one group at once would each re-read the other's records.
        max_active_tis_per_dag=1,
    )

    @task
    def compute_stats(data_interval_start=None, params=None) -> str:
        """Every master's numbers for the day, stored in daily_master_stats."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from gremio import guild_time, sales_stats

        day = guild_time.report_day(data_interval_start, TIMEZONE, (params or {}).get("day"))
        with PostgresHook(postgres_conn_id="gremio_db").get_conn() as conn:
            rows, totals = sales_stats.compute_day(conn, day)
            sales_stats.store_day(conn, day, rows, totals)
        return day.isoformat()

    @task
    def write_reports(day: str) -> list[str]:
        """The day's report files from what compute_stats stored, each written to a temporary name and renamed."""
        from datetime import date

        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from gremio import sales_daily_report, sales_stats

        when = date.fromisoformat(day)
        with PostgresHook(postgres_conn_id="gremio_db").get_conn() as conn:
            rows, totals = sales_stats.load_day(conn, when)
        paths = sales_daily_report.write_daily(when, rows, totals)
        return [str(p) for p in paths]

    # Checks before publishing: what compute_stats stored, against the raw sales and itself.
    masters = ReportTableCheckOperator(
        task_id="check_master_numbers",
        conn_id="gremio_db",
        table=f"({query('sales_daily_check_masters')}) as masters_day",
        checks={
            "units_sold_match_sales": {"check_statement": "units_sold = units_sold_in_sales"},
            "sales_count_matches_sales": {"check_statement": "sales_count = sales_count_in_sales"},
            "master_has_name": {"check_statement": "has_name"},
        },
        parameters=DAY_PARAMETERS,
        subject="master",
        what=DAY,
    )
    negatives = ReportColumnCheckOperator(
        task_id="check_nothing_negative",
        conn_id="gremio_db",
        table=f"({query('sales_daily_check_stored')}) as stored_day",
        column_mapping={
            column: {"min": {"geq_to": 0}}
            for column in ("sales_count", "units_sold", "clients", "avg_units_per_client")
        },
        parameters=DAY_PARAMETERS,
        subject="master",
        what=DAY,
    )
    totals = ReportTableCheckOperator(
        task_id="check_day_totals",
        conn_id="gremio_db",
        table=f"({query('sales_daily_check_totals')}) as day_totals",
        checks={
            "masters_add_up_to_sales_count": {"check_statement": "sales_count = masters_sales_count"},
            "masters_add_up_to_units_sold": {"check_statement": "units_sold = masters_units_sold"},
            # A client who bought from two masters is one client of the day.
            "clients_within_masters": {"check_statement": "clients <= masters_clients"},
            "totals_not_negative": {
                "check_statement": "sales_count >= 0 and units_sold >= 0 and clients >= 0"
            },
        },
        parameters=DAY_PARAMETERS,
        subject="master",
        what=DAY,
    )

    stats = compute_stats()
    drain >> stats
    checks = [masters, negatives, totals]
    stats >> checks
    checks >> write_reports(stats)


sales_daily()
