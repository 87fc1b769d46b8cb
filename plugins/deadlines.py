"""sales_daily's deadline: a day's report not written by SALES_REPORT_DEADLINE raises `report_late`.

Airflow's Deadline Alerts (3.3) do the watching. When a sales_daily run is created, the
scheduler asks `GuildReportDeadline` for the run's deadline and stores it; a run that
succeeds before it has its deadline removed; otherwise, once it has passed, the scheduler
queues the callback, and the **triggerer** runs `report_late` (an AsyncCallback).

**When the report is due.** The run for day D (data interval from D 00:15) is due at
SALES_REPORT_DEADLINE (06:00) of D+1 in the guild's zone, whatever the clocks did that night.
A run created after that hour, such as the catch-up runs of a fresh `make up`, or the run
of a scheduler that was down at 00:15, is due SALES_REPORT_GRACE_MINUTES (60) after it was
created instead: that is noise on first start avoided, yet a catch-up day that fails for
real is still reported late. Backfills get no deadline: whoever started one follows it on
its Backfill page.

**The callback** logs the missed deadline and raises one `report_late` alert, unless the
day's report files were written by the deadline anyway (by a run triggered by hand, say).
The alert's id is uuid5 of the day, so a repeat is the same record; it goes into the
`alerts` table (the live map and `gremio watch` show it) and onto the Kafka topic `alerts`,
acknowledged before the table commits (gremio/alerts.py).

The plugin registers the custom deadline reference, which Airflow finds by its class path
(`deadlines.GuildReportDeadline`) in the scheduler, the dag-processor and the api-server.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time as time_module
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import AsyncCallback, DeadlineAlert
from airflow.sdk.definitions.deadline import BaseDeadlineReference

if TYPE_CHECKING:
    from gremio.records import Alert
    from gremio.settings import Settings

log = logging.getLogger(__name__)

# uuid5 namespace of the `report_late` alerts: a day's alert id is always the same.
REPORT_LATE_NAMESPACE = uuid.UUID("3f0b7a52-9d1e-5c48-b6e3-21a4c7d9e805")
REPORT_FILES = ("csv", "json", "txt")
RAISE_ATTEMPTS = 12  # about five minutes of PostgreSQL or broker trouble


# --- when a day's report is due (pure) ---------------------------------------------------------


def due_at(day: date, at: time, timezone: str) -> datetime:
    """`at` on the morning after `day`, in the guild's zone."""
    return datetime.combine(day + timedelta(days=1), at, ZoneInfo(timezone))


def report_deadline_for(day: date, created: datetime, at: time, timezone: str, grace: timedelta) -> datetime:
    """The run's deadline: the day's hour, or `grace` after a run created later than that."""
    return max(due_at(day, at, timezone), created + grace)


@dataclass(eq=False)  # equality and hash: BaseDeadlineReference's, by the serialized form
class GuildReportDeadline(BaseDeadlineReference):
    """The deadline of a sales_daily run: see the module's docstring."""

    at: str = "06:00"
    timezone: str = "America/Santiago"
    grace_seconds: float = 3600.0

    required_kwargs = {"dag_id", "run_id"}  # noqa: RUF012 - Airflow's own class attribute

    def serialize_reference(self) -> dict[str, Any]:
        return {
            **super().serialize_reference(),
            "at": self.at,
            "timezone": self.timezone,
            "grace_seconds": self.grace_seconds,
        }

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> GuildReportDeadline:
        return cls(
            at=reference_data["at"],
            timezone=reference_data["timezone"],
            grace_seconds=float(reference_data["grace_seconds"]),
        )

    def _evaluate_with(self, *, session: Any, dag_id: str, run_id: str, **kwargs: Any) -> datetime | None:
        """Evaluated by the scheduler when the run is created (None: no deadline)."""
        from airflow._shared.timezones import timezone as airflow_tz
        from airflow.models import DagRun
        from airflow.utils.types import DagRunType
        from sqlalchemy import select

        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None or run.run_type == DagRunType.BACKFILL_JOB:
            return None
        day = run_day(run.data_interval_start, run.conf, self.timezone, run.run_after)
        if day is None:
            return None
        return report_deadline_for(
            day,
            airflow_tz.utcnow(),
            time.fromisoformat(self.at),
            self.timezone,
            timedelta(seconds=self.grace_seconds),
        )


def run_day(
    data_interval_start: datetime | str | None,
    conf: dict | None,
    timezone: str,
    run_after: datetime | str | None = None,
) -> date | None:
    """The day a run reports (its `day` config, its data interval's start, or for a run with
    neither, the last day complete at its run_after), as the DAG sees it."""
    from gremio import guild_time

    override = (conf or {}).get("day")
    if isinstance(data_interval_start, str):
        data_interval_start = datetime.fromisoformat(data_interval_start)
    if isinstance(run_after, str):
        run_after = datetime.fromisoformat(run_after)
    if not override and data_interval_start is None and run_after is None:
        return None
    return guild_time.report_day(data_interval_start, timezone, override, run_after)


def report_deadline(settings: Settings) -> DeadlineAlert:
    """The `deadline=` of sales_daily's @dag."""
    at = settings.sales_report_deadline.isoformat()
    return DeadlineAlert(
        name="report_late",
        reference=GuildReportDeadline(
            at=at,
            timezone=settings.guild_timezone,
            grace_seconds=settings.sales_report_grace_minutes * 60,
        ),
        interval=timedelta(0),
        callback=AsyncCallback(report_late, kwargs={"timezone": settings.guild_timezone}),
    )


# --- the callback (runs in the triggerer) --------------------------------------------------------


def report_late_alert(day: date, deadline: datetime, timezone: str, now: datetime) -> Alert:
    """The day's `report_late` alert: the same id for the same day, no plate, no position."""
    from gremio.records import Alert

    local = deadline.astimezone(ZoneInfo(timezone))
    return Alert(
        id=uuid.uuid5(REPORT_LATE_NAMESPACE, day.isoformat()),
        kind="report_late",
        detail=f"the sales report for {day.isoformat()} was not written by {local:%Y-%m-%d %H:%M} ({timezone})",
        created_at=now,
    )


def written_by(day: date, deadline: datetime, settings: Settings) -> bool:
    """The day's report files all exist and were written before `deadline`."""
    from gremio.sales_daily_report import daily_dir

    folder = daily_dir(settings.reports_dir)
    paths = [folder / f"{day.isoformat()}.{ext}" for ext in REPORT_FILES]
    return all(p.exists() and p.stat().st_mtime <= deadline.timestamp() for p in paths)


def raise_report_late(day: date, deadline: datetime, timezone: str, run_id: str) -> Alert | None:
    """Log the missed deadline and raise its alert (the table, then the topic); the alert, if new."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from kafka_drain import _producer

    from gremio import alerts, failures
    from gremio.failures import Failure
    from gremio.records import now_utc
    from gremio.settings import get_settings

    if written_by(day, deadline, get_settings()):
        log.info("sales_daily %s missed its deadline, but the report for %s was written in time", run_id, day)
        return None
    alert = report_late_alert(day, deadline, timezone, now_utc())
    log.warning("report_late: %s (run %s)", alert.detail, run_id)
    prod = _producer("kafka_default")
    # Airflow runs a deadline's callback once: a broker or PostgreSQL restart is waited out here.
    for attempt in itertools.count(1):
        try:
            with PostgresHook(postgres_conn_id="gremio_db").get_conn() as conn:
                new = alerts.raise_once(conn, prod, alert, key=f"report_late/{day.isoformat()}")
            break
        except Exception as exc:
            if failures.classify(exc) is not Failure.TRANSIENT or attempt >= RAISE_ATTEMPTS:
                raise
            log.warning("report_late for %s not raised yet (%s), trying again", day, failures.reason(exc))
            time_module.sleep(min(30.0, 2.0**attempt))
    if not new:
        log.info("report_late for %s was raised before (alert %s)", day, alert.id)
    return alert


async def report_late(timezone: str, context: dict[str, Any] | None = None) -> str | None:
    """The deadline alert's callback: Airflow gives the run and the deadline in `context`."""
    context = context or {}
    run = context.get("dag_run") or {}
    deadline = (context.get("deadline") or {}).get("deadline_time")
    if isinstance(deadline, str):
        deadline = datetime.fromisoformat(deadline)
    run_id = run.get("dag_run_id") or run.get("run_id") or "?"
    day = run_day(run.get("data_interval_start"), run.get("conf"), timezone, run.get("run_after"))
    if day is None or deadline is None:
        log.error("sales_daily %s missed its deadline, but its day is unknown: %s", run_id, context)
        return None
    # Blocking clients (psycopg, confluent-kafka): off the triggerer's event loop.
    alert = await asyncio.to_thread(raise_report_late, day, deadline, timezone, run_id)
    return None if alert is None else str(alert.id)


class GremioDeadlinesPlugin(AirflowPlugin):
    """Registers sales_daily's deadline reference with Airflow."""

    name = "gremio_deadlines"
    deadline_references = [GuildReportDeadline]  # noqa: RUF012 - AirflowPlugin's attribute
