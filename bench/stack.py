"""A throwaway broker and database for a benchmark run (the same launcher as the tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gremio import db, kafka
from gremio.settings import get_settings
from gremio.stack.testing import ThrowawayStack


@contextlib.contextmanager
def throwaway_stack(keep: bool = False) -> Iterator[ThrowawayStack]:
    """Start Kafka and PostgreSQL on free ports, point the settings at them, clean up after."""
    root = Path(tempfile.mkdtemp(prefix="gremio-bench-"))
    stack = ThrowawayStack(root)
    saved = dict(os.environ)
    os.environ.update(stack.env())
    get_settings.cache_clear()
    try:
        stack.start()
        db.migrate()
        kafka.ensure_topics()
        yield stack
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
