"""Fault injection against the real broker, database, services and API (docs/RELIABILITY.md).

Each test notes what it measured in the `figures` fixture: they are written to
test-artifacts/reliability/<test>.json and summed up at the end of the pytest run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gremio.settings import REPO_ROOT
from tests.support import Services

FIGURES = REPO_ROOT / "test-artifacts" / "reliability"
_noted: dict[str, dict[str, Any]] = {}


@pytest.fixture(autouse=True)
def _services(stack):
    """Every reliability test runs against the session's real broker and database."""
    return stack


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Start real service processes (`services.stock(group)`); whatever is left is killed at the end."""
    started = Services(tmp_path)
    yield started
    started.kill_all()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """What a test measured (counts, seconds), kept for docs/RELIABILITY.md."""
    noted: dict[str, Any] = {}
    yield noted
    if noted:
        FIGURES.mkdir(parents=True, exist_ok=True)
        path = FIGURES / f"{request.node.name}.json"
        path.write_text(json.dumps(noted, indent=2, default=str) + "\n")
        _noted[request.node.name] = noted


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _noted:
        terminalreporter.section("reliability figures")
        for name, noted in _noted.items():
            terminalreporter.write_line(f"{name}: {json.dumps(noted, default=str)}")
