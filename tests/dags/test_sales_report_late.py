"""sales_daily's deadline (plugins/deadlines.py), through Airflow's own machinery.

The real `airflow scheduler` finds the missed deadline and queues its callback, and the real
`airflow triggerer` runs it, as on `make up`. The DAGs are paused while they run, so the
scheduler starts no run of its own: the runs here are made by the test (one as the scheduler
makes its scheduled runs, one with dag.test()). The report_late alert must reach the Kafka
topic `alerts`, the `alerts` table, and the location service's /v1/live.

Its real scheduler and dag-processor store sales_daily's serialized DAG again, which a later
dag.test() of sales_daily in the same session trips over (Airflow 3.3.2: "Multiple rows returned
... DagRun.serialized_dag"): the file is named to run after test_sales_daily and test_sales_late.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gremio import db
from gremio import topics as t
from gremio.records import now_utc
from gremio.settings import get_settings
from gremio.stack.testing import stop_group
from tests.support import TopicProbe, wait_for

SCL = ZoneInfo("America/Santiago")
OLD_DAY = date(2025, 3, 10)  # far from the days the other DAG tests use
# Runs before the start date have no tasks (tests/dags/conftest.py).
DAG_SETTINGS = {"SALES_DAILY_START_DATE": "2025-03-01"}


def late_alert_id(day: date) -> uuid.UUID:
    from deadlines import REPORT_LATE_NAMESPACE

    return uuid.uuid5(REPORT_LATE_NAMESPACE, day.isoformat())


def alert_rows(alert_id: uuid.UUID) -> list[tuple]:
    with db.connect() as conn:
        return conn.execute(
            "select kind, plate, lat, lon, detail from alerts where id = %s", (alert_id,)
        ).fetchall()


def sync_dags() -> None:
    """The DAG files into Airflow's database, as the dag-processor puts them."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert bag.import_errors == {}
        sync_bag_to_db(bag, bundle.name, bundle.version)


@pytest.fixture
def deadline_settings(monkeypatch) -> Iterator:
    """Set SALES_REPORT_DEADLINE / SALES_REPORT_GRACE_MINUTES for the DAG parsed next."""

    def use(at: time, grace_minutes: float) -> None:
        monkeypatch.setenv("SALES_REPORT_DEADLINE", at.isoformat(timespec="seconds"))
        monkeypatch.setenv("SALES_REPORT_GRACE_MINUTES", str(grace_minutes))
        # Written at once, not only once the last copy is 30 s old, as the dag-processor would.
        monkeypatch.setenv("AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL", "0")
        get_settings.cache_clear()
        sync_dags()  # the DAG's new deadline is the one new runs get

    yield use
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def airflow_components(load_dag, tmp_path_factory) -> Iterator[Path]:
    """`airflow scheduler` and `airflow triggerer` against the test database, every DAG paused."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    from gremio.stack import airflow as af
    from gremio.stack.system import free_port

    load_dag("sales_daily")
    sync_dags()
    with create_session() as session:
        paused = dict(session.execute(select(DagModel.dag_id, DagModel.is_paused)).all())
        session.execute(update(DagModel).values(is_paused=True))
    folder = tmp_path_factory.mktemp("airflow-components")
    env = {
        **os.environ,
        # Their log servers on free ports: the defaults may be a running stack's.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    started = []
    try:
        for component in ("scheduler", "triggerer"):
            log = (folder / f"{component}.log").open("wb")
            command = [af.airflow_bin(), component]
            process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            started.append((process, log))
        yield folder
    finally:
        for process, log in started:
            stop_group(process)
            log.close()
        with create_session() as session:
            for dag_id, was_paused in paused.items():
                session.execute(
                    update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=was_paused)
                )


def deadlines_of(run_id: str) -> list[tuple[datetime, bool, str | None]]:
    """The run's Deadline rows in Airflow: (deadline_time, missed, callback state)."""
    from airflow.models import DagRun, Deadline
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(Deadline).join(DagRun).where(DagRun.dag_id == "sales_daily", DagRun.run_id == run_id)
        ).all()
        return [(d.deadline_time, d.missed, d.callback.state) for d in rows]


@pytest.fixture
def no_report_for(request) -> Iterator:
    """Move a day's report files aside for the test (another module may have written them)."""
    moved: list[tuple[Path, Path]] = []

    def clear(day: date, folder: Path) -> None:
        daily = get_settings().reports_dir / "daily"
        for path in daily.glob(f"{day.isoformat()}.*"):
            aside = folder / path.name
            shutil.move(path, aside)
            moved.append((aside, path))

    yield clear
    for aside, path in moved:
        shutil.move(aside, path)


def scheduled_run(day: date):
    """The run the scheduler makes for `day` at 00:15 of the next day (DAG paused: never started)."""
    from airflow.models import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.timetables.base import DataInterval
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    start = datetime.combine(day, time(0, 15), SCL)
    end = datetime.combine(day + timedelta(days=1), time(0, 15), SCL)
    with create_session() as session:
        for old in session.scalars(
            select(DagRun).where(DagRun.dag_id == "sales_daily", DagRun.logical_date == start)
        ):
            session.delete(old)
        session.flush()
        dag = SerializedDagModel.get_dag("sales_daily", session=session)
        run = dag.create_dagrun(
            run_id=DagRun.generate_run_id(run_type=DagRunType.SCHEDULED, logical_date=start, run_after=end),
            logical_date=start,
            data_interval=DataInterval(start, end),
            run_after=end,
            run_type=DagRunType.SCHEDULED,
            triggered_by=DagRunTriggeredByType.TIMETABLE,
            state=DagRunState.QUEUED,
            session=session,
        )
        return run.run_id


def test_a_report_not_written_by_the_deadline_raises_report_late_everywhere(
    airflow_components, deadline_settings, no_report_for, services, tmp_path
):
    """Yesterday's report is due in 25 s, and its run never gets going (its DAG is paused)."""
    from rich.console import Console

    from consumers.locations.board import render

    due = (now_utc() + timedelta(seconds=25)).astimezone(SCL).replace(microsecond=0)
    day = due.date() - timedelta(days=1)
    deadline_settings(due.time(), grace_minutes=0)
    no_report_for(day, tmp_path)
    alert_id = late_alert_id(day)
    with db.connect() as conn:
        conn.execute("delete from alerts where id = %s", (alert_id,))
        conn.commit()
    live = services.locations(f"deadline-{uuid.uuid4().hex[:8]}")
    probe = TopicProbe([t.ALERTS.name])

    run_id = scheduled_run(day)
    [(deadline, missed, _)] = deadlines_of(run_id)
    assert deadline == due and not missed, "the deadline is the day's hour, in the guild's zone"

    def on_topic() -> list[dict]:
        import json

        return [
            json.loads(m.value())
            for m in probe.records(t.ALERTS.name)
            if m.key() == f"report_late/{day}".encode()
        ]

    logs = airflow_components
    [record] = wait_for(on_topic, timeout=180, interval=1, what=f"report_late on `alerts` (logs: {logs})")
    assert record["id"] == str(alert_id) and record["kind"] == "report_late"
    assert record["plate"] is None and record["lat"] is None and record["lon"] is None
    assert f"the sales report for {day}" in record["detail"] and f"{due:%H:%M}" in record["detail"]
    assert alert_rows(alert_id) == [("report_late", None, None, None, record["detail"])]
    # Raised through Airflow: the scheduler marked the deadline missed, the triggerer ran the callback.
    wait_for(lambda: deadlines_of(run_id)[0][1:] == (True, "success"), timeout=60, what="callback success")

    shown = wait_for(
        lambda: [a for a in (live.live() or {"alerts": []})["alerts"] if a["id"] == str(alert_id)],
        timeout=60,
        what="report_late on the location service's /v1/live",
    )
    assert shown[0]["kind"] == "report_late" and shown[0]["plate"] is None
    console = Console(record=True, width=160)
    console.print(render(live.live(), SCL))  # `gremio watch`'s board
    assert "report_late" in console.export_text()


# Airflow 3.3.2 relates a run to its DAG's serialized rows by dag_id alone, so once a DAG has two
# versions (the real scheduler above stored the DAG again, with this test's deadline) flushing a
# run warns that several rows match. Airflow lives with the warning on every deployment whose
# DAGs ever changed; this suite turns warnings into errors, so here it is let through.
SERIALIZED_DAG_ROWS = (
    "ignore:Multiple rows returned with uselist=False for lazily-loaded attribute "
    "'DagRun.serialized_dag':sqlalchemy.exc.SAWarning"
)


@pytest.mark.filterwarnings(SERIALIZED_DAG_ROWS)
def test_a_catch_up_day_written_in_its_grace_raises_nothing(airflow_components, deadline_settings, load_dag):
    """A fresh stack's catch-up: the day's hour is long past, so the run gets its grace."""
    from airflow.utils.state import DagRunState

    # A grace the run fits in even on a loaded machine (a run finishing past it would be late).
    grace = timedelta(minutes=1.5)
    deadline_settings(time(6, 0), grace_minutes=grace.total_seconds() / 60)
    alert_id = late_alert_id(OLD_DAY)
    probe = TopicProbe([t.ALERTS.name])
    created = now_utc()
    run = load_dag("sales_daily").test(
        logical_date=datetime.combine(OLD_DAY + timedelta(days=1), time(0, 16), SCL)
    )
    assert run.state == DagRunState.SUCCESS
    assert (get_settings().reports_dir / "daily" / f"{OLD_DAY}.csv").exists()
    # Its deadline is the grace after the run was made, not 06:00 of a day long gone.
    deadlines = deadlines_of(run.run_id)
    assert all(created <= d <= now_utc() + grace for d, _, _ in deadlines), deadlines
    # Past the deadline, with the scheduler and triggerer running: nothing was raised (Airflow
    # dropped the deadline, or its callback ran and found the files written in time).
    wait_for(lambda: now_utc() > created + grace + timedelta(seconds=20), timeout=200, interval=1)
    wait_for(
        lambda: all(missed and state == "success" for _, missed, state in deadlines_of(run.run_id)),
        timeout=90,
        what=f"the catch-up deadline handled (logs: {airflow_components})",
    )
    assert [m for m in probe.records(t.ALERTS.name) if m.key() == f"report_late/{OLD_DAY}".encode()] == []
    assert alert_rows(alert_id) == []
