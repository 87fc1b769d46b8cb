import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from gremio.settings import REPO_ROOT, get_settings


@pytest.fixture(autouse=True)
def _services(stack):
    """Every integration test runs against the session's real broker and database, and the
    tasks connect as the DAGs' own role, gremio_airflow, as on `make up` (tests/conftest.py)."""
    assert "//gremio_airflow:" in os.environ["AIRFLOW_CONN_GREMIO_DB"]
    return stack


@pytest.fixture(scope="session", autouse=True)
def _dag_test_with_deadlines() -> Iterator[None]:
    """Let dag.test() finish a run of a DAG with a deadline (sales_daily, plugins/deadlines.py).

    Airflow 3.3.2's dag.test() hands the run its DAG serialized in memory, whose `deadline`
    holds the alerts' definitions, where the scheduler's copy holds the ids of the stored
    alerts. A successful run then looks the definitions up as ids and fails. Here a definition
    stands for its stored alert (only its reference is read: to drop the run's deadlines).
    The deadlines themselves are made and dropped by Airflow, from its database, as always.
    """
    from airflow.models.deadline_alert import DeadlineAlert

    by_id = DeadlineAlert.get_by_id.__func__

    def get_by_id(cls, deadline_alert_id, *, session=None):
        if isinstance(deadline_alert_id, dict):
            definition = deadline_alert_id.get("__var", deadline_alert_id)
            return cls(
                name=definition.get("name"),
                reference=definition["reference"],
                interval=definition["interval"],
                callback_def=definition["callback"],
            )
        return by_id(cls, deadline_alert_id, **({} if session is None else {"session": session}))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DeadlineAlert, "get_by_id", classmethod(get_by_id))
        yield


@pytest.fixture(scope="module")
def load_dag(airflow_db, request) -> Iterator[Callable]:
    """Load a DAG file as the dag-processor sees it: `load_dag("sales_daily")`.

    A test module's `DAG_SETTINGS` ({"SALES_DAILY_START_DATE": "2024-12-01"}, say) are in the
    environment while its tests run, so every copy loaded, and every task run, sees them.
    Runs before a DAG's start_date have no tasks: moving a start date back is how a module
    runs hand-built days or months from the past.
    """
    from airflow.dag_processing.dagbag import DagBag

    def load(dag_id: str):
        bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / f"{dag_id}.py"))
        assert bag.import_errors == {}
        return bag.get_dag(dag_id)

    with pytest.MonkeyPatch.context() as env:
        for name, value in getattr(request.module, "DAG_SETTINGS", {}).items():
            env.setenv(name, value)
        get_settings.cache_clear()
        yield load
    get_settings.cache_clear()
    # Hand the ORM session's connection back now, not at exit when the database is gone.
    from airflow import settings as airflow_settings

    airflow_settings.Session.remove()


@pytest.fixture
def backfill_dry_run(airflow_db) -> Callable[[str, str, str], list[str]]:
    """The runs `airflow backfill create --dry-run` would make, as the real CLI prints them (UTC).

    The DAG must be in Airflow's database already (a dag.test() run puts it there, as the
    dag-processor would).
    """
    from gremio.stack import airflow as af

    def dry_run(dag_id: str, from_date: str, to_date: str) -> list[str]:
        out = subprocess.run(
            [af.airflow_bin(), "backfill", "create", "--dag-id", dag_id, "--dry-run",
             "--from-date", from_date, "--to-date", to_date],
            env=os.environ.copy(), check=True, capture_output=True, text=True, timeout=300,
        ).stdout  # fmt: skip
        planned = re.findall(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d", out.split("Runs to be attempted:")[1]
        )
        return [
            datetime.fromisoformat(p).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00:00") for p in planned
        ]

    return dry_run


@pytest.fixture
def execution_api_retries(monkeypatch):
    """Give dag.test()'s in-process Execution API client the retries a real worker has.

    A worker's task supervisor retries Execution API calls (`[workers]
    execution_api_retries`), and that is what carries a task's failure report over a
    restart of PostgreSQL, which also holds Airflow's metadata. dag.test() strips them.
    """
    import httpx
    import sqlalchemy.exc
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    original = InProcessTestSupervisor._Client.request

    def request(self, *args, **kwargs):
        deadline = time.monotonic() + 120
        while True:
            try:
                return original(self, *args, **kwargs)
            except (httpx.HTTPStatusError, httpx.RequestError, sqlalchemy.exc.DBAPIError) as exc:
                status = getattr(getattr(exc, "response", None), "status_code", 500)
                if status < 500 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    monkeypatch.setattr(InProcessTestSupervisor._Client, "request", request)
