"""DAG integrity (STYLE guideline 1): every DAG imports and states what it must."""

from __future__ import annotations

from datetime import timedelta

import pytest

EXPECTED_DAGS = {"sales_daily", "members_monthly", "members_premium"}

# What each DAG declares (DESIGN §5, docs/SALES_DAILY.md, docs/MEMBERSHIP.md): its timetable,
# its cron and zone (or the asset that triggers it), catchup and max_active_runs.
DECLARED = {
    "sales_daily": ("CronDataIntervalTimetable", "15 0 * * *", "America/Santiago", True, 1),
    "members_monthly": ("CronDataIntervalTimetable", "0 0 1 * *", "America/Santiago", True, 1),
    # On the watcher's asset events, or every MEMBERS_PREMIUM_SWEEP_MINUTES (the safety net).
    "members_premium": ("AssetOrTimeSchedule", "*/5 * * * *", "America/Santiago", False, 1),
}


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from gremio.settings import REPO_ROOT

    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_the_guilds_dags_are_there(dagbag):
    assert set(dagbag.dag_ids) >= EXPECTED_DAGS


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_dag_states_its_schedule_and_safety_settings(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert dag is not None
    assert dag.tags, "tags"
    assert dag.start_date is not None and dag.start_date.tzinfo is not None, "timezone-aware start_date"
    timetable, schedule, zone, catchup, max_active_runs = DECLARED[dag_id]
    assert type(dag.timetable).__name__ == timetable
    if timetable == "AssetOrTimeSchedule":  # the asset it waits for, or the clock
        assert "name='members_premium_applications'" in repr(dag.timetable.asset_condition)
        assert type(dag.timetable.timetable).__name__ == "CronTriggerTimetable"
        assert dag.timetable.timetable.expression == schedule
        assert str(dag.timetable.timetable.timezone) == zone
    else:
        assert dag.timetable.expression == schedule
        assert str(dag.timetable.timezone) == zone
    assert (dag.catchup, dag.max_active_runs) == (catchup, max_active_runs)
    assert dag.doc_md, "the module docstring is the DAG's doc_md"
    for task in dag.tasks:
        assert task.retries >= 2, f"{task.task_id} retries"
        assert task.retry_delay and task.retry_delay >= timedelta(seconds=5), f"{task.task_id} retry_delay"
