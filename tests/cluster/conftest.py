"""A three-node KRaft cluster on free loopback ports, started once for tests/cluster/.

The session's single-broker `stack` is not used here: every test talks to this cluster
(tests/cluster/support.py) with settings that point at its three bootstrap servers.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.support import Carts, Cluster
from tests.support import Figures

FIGURES = Figures("cluster")


@pytest.fixture(scope="package")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="gremio-cluster-"))
    started = Cluster(root)
    try:
        started.kafka.prepare()
        started.start()
        started.wait_whole()
    except BaseException:
        started.kill_all()
        raise
    yield started
    started.kill_all()
    if request.session.testsfailed:
        print(f"\ncluster nodes' logs kept in {root / 'logs'}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="package")
def sold() -> list[Carts]:
    """Every drill's carts: a later drill's read-back checks the earlier drills' sales too."""
    return []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """What a drill measured (counts, seconds): test-artifacts/cluster/<test>.json, and the
    "cluster figures" section at the end of the pytest run."""
    with FIGURES.record(request.node.name) as noted:
        yield noted


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    FIGURES.summary(terminalreporter)
