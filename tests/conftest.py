"""Session fixtures: a throwaway Kafka broker and PostgreSQL on free ports.

The environment is pointed at them before anything reads the settings or imports Airflow,
which reads its configuration once at import. The servers themselves start on first use,
so `pytest tests/unit` needs neither. A server that cannot start fails the tests that
need it; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gremio.settings import get_settings
from gremio.stack import airflow as af
from gremio.stack.testing import ThrowawayStack

ROOT = Path(tempfile.mkdtemp(prefix="gremio-test-"))
STACK = ThrowawayStack(ROOT)
os.environ.update(STACK.env())
os.environ.update(af.environment(STACK.settings(), ROOT / "airflow"))
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
get_settings.cache_clear()


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[ThrowawayStack]:
    """The running broker and database, with topics and migrations in place."""
    from gremio import db, db_roles, kafka

    try:
        STACK.start()
        db.migrate()
        db_roles.ensure_logins()  # as `make up`: the services connect as their own roles
        kafka.ensure_topics()
    except BaseException:
        STACK.stop()
        raise
    yield STACK
    # The API's process-wide producer would keep calling a stopped broker until exit.
    delivery = sys.modules.get("ingest_api.delivery")
    if delivery is not None:
        delivery.close_process_delivery(timeout=5)
    revocations = sys.modules.get("ingest_api.revocations")  # and its reader of cart_revocations
    if revocations is not None:
        revocations.close_process_revocations()
    STACK.stop()
    if request.session.testsfailed:
        print(f"\ntest services' logs kept in {ROOT / 'logs'}", file=sys.stderr)
    else:
        shutil.rmtree(ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db(stack: ThrowawayStack) -> Path:
    """Airflow's metadata database migrated on the test PostgreSQL; returns AIRFLOW_HOME."""
    subprocess.run(
        [af.airflow_bin(), "db", "migrate"], env=os.environ.copy(), check=True, stdout=subprocess.DEVNULL
    )
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture
def settings():
    return get_settings()


@pytest.fixture
def services(tmp_path: Path):
    """Real service processes for one test (`services.stock(group)`); any left running are killed."""
    from tests.support import Services

    started = Services(tmp_path)
    yield started
    started.kill_all()
