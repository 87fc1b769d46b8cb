"""
# sales_daily: the guild's day in sales, per master sopaipillero

Runs every day at **00:15 America/Santiago** and reports the day that just ended (the
run's data interval starts at 00:15 of that day), and again any recent day that late
sales changed. The steps:

1. **drain_sales** takes every sale on the Kafka topic `sales`, up to where the topic stood
   when the task started, into the PostgreSQL table `sales` (idempotent by sale id; Kafka
   offsets are committed only after the database commit; undecodable records, and sales
   PostgreSQL refuses, go to `deadletter` and the run carries on). Each stored sale gets
   its `drained_at`.
2. **touched_days** lists the days this run reports: its own day, after the past days
   (back to the run's day minus `SALES_MAX_AGE_DAYS`, the oldest sale the API accepts) that
   received sales since they were last reported: **late sales** (a cart that synced its
   offline batch after the day's report).
3. **report_day**, a task group mapped over those days (one map index per day, named by the
   day in the UI), for each day:
   * **compute_stats** works out, for every master (the approved member owning the cart's
     plate, or `unregistered`), the sales, units sold, distinct clients, units per client
     and frequent clients of the day, and stores them in `daily_master_stats`, with how many
     of the day's sales arrived after its first report;
   * **checks before publishing** (`check_master_numbers`, `check_nothing_negative`,
     `check_day_totals`: the common-sql provider's table and column checks through
     `gremio_db`): each master's sales and units equal the raw sums over `sales` for that
     master and day, every master has a name, nothing is negative, and the masters add up
     to the day's totals. A failed check fails that day (and the run), naming the day, the
     check and the master (by cart), and that day's report files are left as they were;
   * **write_reports** writes `reports/daily/D.txt` (for people), `D.csv`, `D.json` and a
     `D.png` chart, once every check of the day has passed. A day late sales revised says
     so in its `.txt` and `.json`. A re-run of a day without new sales rewrites the same
     bytes.

**Backfill** a range of days from the UI (*Trigger* → *Backfill*, the dates of the days to
report) or with `airflow backfill create --dag-id sales_daily --from-date 2026-11-01
--to-date 2026-11-07T23:59` (runs are at 00:15, so give the last day a time). **Re-make
one day** by clearing its run, or by triggering the DAG with the config
`{"day": "2026-11-28"}` (that day, and the days before it late sales touched). Nobody
needs to re-run a day for late sales: the next run does it. Details: docs/SALES_DAILY.md.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task, task_group
from dag_defaults import REPORT_DEFAULT_ARGS
from deadlines import report_deadline
from kafka_drain import KafkaDrainOperator
from report_checks import ReportColumnCheckOperator, ReportTableCheckOperator

from gremio import sales_partitions
from gremio.db import query
from gremio.guild_time import DAILY_RUN_TIME
from gremio.settings import get_settings

SETTINGS = get_settings()
TIMEZONE = SETTINGS.guild_timezone


def day_parameters(day: str) -> dict[str, str]:
    """A day and its bounds in the guild's zone: the checks' query parameters (passed to the
    driver, never into the SQL text), and `what` for their errors."""
    from datetime import date

    from gremio import guild_time

    start, end = guild_time.day_bounds(date.fromisoformat(day), TIMEZONE)
    return {
        "day": day,
        "day_start": start.isoformat(),
        "day_end": end.isoformat(),
        "what": f"sales_daily {day}",
    }


def guild_day(data_interval_start, params, dag_run=None) -> dict[str, str]:
    """The run's own report day and its bounds in the guild's zone (also a template macro)."""
    from gremio import guild_time

    run_after = getattr(dag_run, "run_after", None)
    day = guild_time.report_day(data_interval_start, TIMEZONE, (params or {}).get("day"), run_after)
    return day_parameters(day.isoformat())


@dag(
    dag_id="sales_daily",
    # The run for a day starts at 00:15 of it and ends at 00:15 of the next, in the guild's zone.
    schedule=CronDataIntervalTimetable(
        f"{DAILY_RUN_TIME.minute} {DAILY_RUN_TIME.hour} * * *", timezone=TIMEZONE
    ),
    start_date=datetime.combine(SETTINGS.sales_daily_start_date, DAILY_RUN_TIME, ZoneInfo(TIMEZONE)),
    catchup=True,
    max_active_runs=1,
    default_args=REPORT_DEFAULT_ARGS,
    # Not written by SALES_REPORT_DEADLINE: a `report_late` alert (plugins/deadlines.py).
    deadline=report_deadline(SETTINGS),
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
        # Partitioned by day (sql/100_sales_partitions.sql): the key includes sold_at, and
        # each chunk first makes its days' partitions (gremio/sales_partitions.py).
        **sales_partitions.DRAIN_OPTIONS,
        # Two drains of one group at once would each re-read the other's records.
        max_active_tis_per_dag=1,
    )

    @task
    def touched_days(data_interval_start=None, params=None, dag_run=None) -> list[str]:
        """The days this run reports: the past days late sales touched (oldest first), then its own."""
        import logging
        from datetime import date

        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from gremio import sales_stats

        own = guild_day(data_interval_start, params, dag_run)["day"]
        with PostgresHook(postgres_conn_id="gremio_db").get_conn() as conn:
            late = sales_stats.touched_days(conn, date.fromisoformat(own))
        if late:
            logging.getLogger(__name__).info(
                "late sales touched %s: reported again", ", ".join(d.isoformat() for d in late)
            )
        return [*(d.isoformat() for d in late), own]

    # One mapped group per day: compute -> checks -> write, each day on its own (a failed check
    # fails that day's write only). The UI shows each mapped task once per day, named by it.
    @task_group(group_id="report_day")
    def report_day(day: str) -> None:
        @task(multiple_outputs=True, map_index_template="{{ report_day }}")
        def compute_stats(day: str) -> dict[str, str]:
            """Every master's numbers for the day, stored in daily_master_stats."""
            from datetime import date

            from airflow.providers.postgres.hooks.postgres import PostgresHook
            from airflow.sdk import get_current_context

            get_current_context()["report_day"] = day  # the map index's name in the UI

            from gremio import sales_stats

            when = date.fromisoformat(day)
            with PostgresHook(postgres_conn_id="gremio_db").get_conn() as conn:
                rows, totals = sales_stats.compute_day(conn, when)
                sales_stats.store_day(conn, when, rows, totals)
            return day_parameters(day)

        @task(map_index_template="{{ report_day }}")
        def write_reports(day: str) -> list[str]:
            """The day's report files from what compute_stats stored, each written to a temporary name and renamed."""
            from datetime import date

            from airflow.providers.postgres.hooks.postgres import PostgresHook
            from airflow.sdk import get_current_context

            get_current_context()["report_day"] = day  # the map index's name in the UI

            from gremio import sales_daily_report, sales_stats

            when = date.fromisoformat(day)
            with PostgresHook(postgres_conn_id="gremio_db").get_conn() as conn:
                rows, totals = sales_stats.load_day(conn, when)
                revision = sales_stats.load_revision(conn, when)
                paths = sales_daily_report.write_daily(when, rows, totals, revision=revision)
                # Only now are these numbers the day's report (late sales after them revise it).
                sales_stats.mark_reported(conn, when)
            return [str(p) for p in paths]

        stats = compute_stats(day=day)
        # Checks before publishing: what compute_stats stored, against the raw sales and itself.
        named = {
            "parameters": stats,
            "what": stats["what"],
            "subject": "master",
            "map_index_template": "{{ task.parameters['day'] }}",
        }
        masters = ReportTableCheckOperator(
            task_id="check_master_numbers",
            conn_id="gremio_db",
            table=f"({query('sales_daily_check_masters')}) as masters_day",
            checks={
                "units_sold_match_sales": {"check_statement": "units_sold = units_sold_in_sales"},
                "sales_count_matches_sales": {"check_statement": "sales_count = sales_count_in_sales"},
                "master_has_name": {"check_statement": "has_name"},
            },
            **named,
        )
        negatives = ReportColumnCheckOperator(
            task_id="check_nothing_negative",
            conn_id="gremio_db",
            table=f"({query('sales_daily_check_stored')}) as stored_day",
            column_mapping={
                column: {"min": {"geq_to": 0}}
                for column in ("sales_count", "units_sold", "clients", "avg_units_per_client")
            },
            **named,
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
            **named,
        )
        checks = [masters, negatives, totals]
        checks >> write_reports(day=stats["day"])

    days = touched_days()
    drain >> days
    report_day.expand(day=days)


sales_daily()
