"""
# members_monthly: the month's regular applications decided, and its list of new members

Runs **@monthly at 00:00 America/Santiago** on the 1st and decides the month that just ended
(the run's data interval is that month). Three steps:

1. **drain_regular_applications** takes the regular applications (Kafka topic `members`,
   partition 0), up to where the partition stood when the task started, into the table
   `member_applications` (idempotent by application id; offsets committed after the
   database commit; undecodable records go to `deadletter`).
2. **decide_month** decides the month's pending regular applications in the order they were
   received: approved unless the RUT is already a member, the plate belongs to another
   member, the RUT is flagged in `background_flags` (antecedentes), or an earlier pending
   application has the same RUT. Approved applications become `members`. Nothing already
   decided is decided again. Earlier months' regular applications still pending (ones that
   reached the topic after their own month's run had drained it) are decided too, first,
   in the same received order: none is left pending for good. Such a late decision is on
   this month's list, the month that decided it, and not on the month it was received.
3. **write_reports** writes `reports/members/YYYY-MM.txt` (for the guild's staff) and `.csv`:
   the new members, premium ones marked (the fast-track's approvals of the month, see
   `members_premium`), and the rejected applications with their reasons. A re-run rewrites
   the same bytes, once **check_list** has passed: every decided application of the month
   is on the list exactly once and every rejection has a reason (the common-sql provider's
   table check through `gremio_db`). A failed check fails the run at once, naming the check
   and the application (by id), and the files are left as they were.

**A past month**: trigger the DAG with the config `{"month": "2026-11"}`, or clear that
month's run. Details: docs/MEMBERSHIP.md.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task
from dag_defaults import REPORT_DEFAULT_ARGS
from kafka_drain import KafkaDrainOperator
from report_checks import ReportTableCheckOperator

from gremio.db import query
from gremio.settings import get_settings

SETTINGS = get_settings()
TIMEZONE = SETTINGS.guild_timezone


def run_month(data_interval_start, params, dag_run=None):
    """The first day of the month a run lists (its `month` parameter, or its interval's)."""
    from gremio import guild_time

    run_after = getattr(dag_run, "run_after", None)
    return guild_time.report_month(data_interval_start, TIMEZONE, (params or {}).get("month"), run_after)


def guild_month(data_interval_start, params, dag_run=None) -> dict[str, str]:
    """The run's month and its bounds in the guild's zone (a template macro for the checks)."""
    from gremio import guild_time

    month = run_month(data_interval_start, params, dag_run)
    start, end = guild_time.month_bounds(month, TIMEZONE)
    return {
        "month": f"{month:%Y-%m}",
        "first_day": month.isoformat(),
        "month_start": start.isoformat(),
        "month_end": end.isoformat(),
    }


# The check's query parameters: rendered per run, passed to the driver (never into the SQL text).
MONTH_PARAMETERS = {
    param: f"{{{{ guild_month(data_interval_start, params, dag_run)['{key}'] }}}}"
    for param, key in (("month", "first_day"), ("month_start", "month_start"), ("month_end", "month_end"))
}
# The month's list, as write_reports reads it, inside the check's relation.
LIST_CHECK = query("members_monthly_check").replace("/* members_report */", query("members_report"))


@dag(
    dag_id="members_monthly",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone=TIMEZONE),
    start_date=datetime.combine(SETTINGS.members_monthly_start_date, time(0), ZoneInfo(TIMEZONE)),
    catchup=True,
    max_active_runs=1,
    default_args=REPORT_DEFAULT_ARGS,
    tags=["gremio", "members", "reports"],
    doc_md=__doc__,
    user_defined_macros={"guild_month": guild_month},
    params={
        "month": Param(
            None,
            type=["null", "string"],
            pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
            title="Month to decide and report",
            description="YYYY-MM. Leave empty for the run's own month (the one before it ran).",
        )
    },
)
def members_monthly():
    drain = KafkaDrainOperator(
        task_id="drain_regular_applications",
        topic="members",
        table="member_applications",
        record="gremio.records.MemberApplication",
        group_id="airflow-members-monthly",
        partitions=[0],
        message_columns={"kafka_partition": "partition", "kafka_offset": "offset"},
        max_active_tis_per_dag=1,
    )

    @task
    def decide_month(data_interval_start=None, params=None, dag_run=None) -> str:
        """Decide the month's (and earlier months') pending regular applications; returns the month, YYYY-MM."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from gremio import guild_time, membership

        month = run_month(data_interval_start, params, dag_run)
        _, end = guild_time.month_bounds(month, TIMEZONE)
        with PostgresHook(postgres_conn_id="gremio_db").get_conn() as conn:
            # Everything pending received before the month ended: a late arrival of an earlier
            # month (drained after that month's run) is decided now rather than never.
            membership.decide_pending(
                conn,
                premium=False,
                received_until=end,
                decided_by=f"members_monthly/{dag_run.run_id}",
                listed_month=month,
            )
        return f"{month:%Y-%m}"

    @task
    def write_reports(month: str) -> list[str]:
        """The month's list from what is recorded, each file written to a temporary name and renamed."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from gremio import guild_time, membership, membership_report

        when = guild_time.parse_month(month)
        with PostgresHook(postgres_conn_id="gremio_db").get_conn() as conn:
            rows = membership.month_decisions(conn, when, TIMEZONE)
        return [str(p) for p in membership_report.write_monthly(when, rows)]

    # Checks before publishing: the list as write_reports would read it, against the decisions.
    check = ReportTableCheckOperator(
        task_id="check_list",
        conn_id="gremio_db",
        table=f"({LIST_CHECK}) as month_list",
        checks={
            "listed_once": {"check_statement": "times_listed = 1"},
            "decided_in_the_month": {"check_statement": "decided_in_month"},
            "rejection_has_reason": {"check_statement": "has_reason"},
        },
        parameters=MONTH_PARAMETERS,
        subject="application",
        what="members_monthly {{ guild_month(data_interval_start, params, dag_run)['month'] }}",
    )

    decided = decide_month()
    drain >> decided
    decided >> check >> write_reports(decided)


members_monthly()
