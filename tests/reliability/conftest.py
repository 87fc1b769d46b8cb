"""Fault injection against the real broker, database, services and API (docs/RELIABILITY.md).

Each test notes what it measured in the `figures` fixture: they are written to
test-artifacts/reliability/<test>.json and summed up at the end of the pytest run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.dags.conftest import execution_api_retries, load_dag  # noqa: F401 - the DAG tests' fixtures
from tests.support import Figures

FIGURES = Figures("reliability")


@pytest.fixture(autouse=True)
def _services(stack):
    """Every reliability test runs against the session's real broker and database."""
    return stack


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """What a test measured (counts, seconds), kept for docs/RELIABILITY.md."""
    with FIGURES.record(request.node.name) as noted:
        yield noted


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    FIGURES.summary(terminalreporter)
