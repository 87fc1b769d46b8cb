"""DAG integrity (STYLE guideline 1): every DAG imports and states what it must."""

from __future__ import annotations

from datetime import timedelta

import pytest

EXPECTED_DAGS = {"sales_daily", "members_monthly", "members_premium"}


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
    assert dag.max_active_runs is not None
    assert dag.doc_md, "the module docstring is the DAG's doc_md"
    for task in dag.tasks:
        assert task.retries >= 2, f"{task.task_id} retries"
        assert task.retry_delay and task.retry_delay >= timedelta(seconds=5), f"{task.task_id} retry_delay"
