"""Stand-ins for the API's producer, for tests and benchmarks: never imported by a request.

`NullProducer` acknowledges every record at once and keeps none, so `create_app(producer=
NullProducer())` measures the framework's own cost (bench/api.py) and lets unit tests drive
the whole request path (validation, problems, ids, OpenAPI) without a broker.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from gremio import topics as t


class _Acknowledged:
    __slots__ = ("_partition", "_topic")

    def __init__(self, topic: str, partition: int) -> None:
        self._topic = topic
        self._partition = partition

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return 0


def _metadata() -> SimpleNamespace:
    """What list_topics would say of a broker holding exactly the declared topics."""
    return SimpleNamespace(
        brokers={0: None},
        topics={
            topic.name: SimpleNamespace(partitions=dict.fromkeys(range(topic.partitions)), error=None)
            for topic in t.TOPICS
        },
    )


class NullProducer:
    """Acknowledges every record at once and keeps none: the framework's own cost, no broker."""

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, **kwargs: Any
    ) -> None:
        callback = kwargs.get("on_delivery")
        if callback is not None:
            callback(None, _Acknowledged(topic, max(0, kwargs.get("partition", 0))))

    def poll(self, timeout: float = 0) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def list_topics(self, topic: str | None = None, timeout: float = 0) -> SimpleNamespace:
        return _metadata()
