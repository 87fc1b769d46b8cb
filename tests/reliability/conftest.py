"""Fault injection against the real broker, database, services and API (docs/RELIABILITY.md).

Each test notes what it measured in the `figures` fixture: they are written to
test-artifacts/reliability/<test>.json and summed up at the end of the pytest run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from gremio.settings import REPO_ROOT
from tests.dags.conftest import execution_api_retries, load_dag  # noqa: F401 - the DAG tests' fixtures

FIGURES = REPO_ROOT / "test-artifacts" / "reliability"
_noted: dict[str, dict[str, Any]] = {}


@pytest.fixture(autouse=True)
def _services(stack):
    """Every reliability test runs against the session's real broker and database."""
    return stack


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """What a test measured (counts, seconds), kept for docs/RELIABILITY.md."""
    noted: dict[str, Any] = {}
    yield noted
    if noted:
        FIGURES.mkdir(parents=True, exist_ok=True)
        path = FIGURES / (re.sub(r"[^\w.\[\]-]+", "_", request.node.name) + ".json")
        path.write_text(json.dumps(noted, indent=2, default=str) + "\n")
        _noted[request.node.name] = noted


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _noted:
        terminalreporter.section("reliability figures")
        for name, noted in _noted.items():
            terminalreporter.write_line(f"{name}: {json.dumps(noted, default=str)}")
