"""Helpers for tests that read what really landed on Kafka and in PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from gremio import kafka as gk
from gremio import topics as t
from gremio.settings import get_settings

T = TypeVar("T")


_NOT_READY_YET = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


def _high_watermark(consumer: Consumer, tp: TopicPartition, timeout: float = 10.0) -> int:
    """A fresh broker may answer NOT_LEADER for a moment after creating a topic: retry that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=timeout)[1]
        except KafkaException as exc:
            if exc.args[0].code() not in _NOT_READY_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def high_watermarks(topics: Iterable[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer(get_settings().kafka_config(**{"group.id": f"probe-{uuid.uuid4()}"}))
    try:
        marks = {}
        meta = consumer.list_topics(timeout=10).topics
        for topic in topics:
            for partition in meta[topic].partitions:
                marks[(topic, partition)] = _high_watermark(consumer, TopicPartition(topic, partition))
        return marks
    finally:
        consumer.close()


def read_range(
    start: dict[tuple[str, int], int], end: dict[tuple[str, int], int], timeout: float = 30
) -> list[Message]:
    """Every record from `start` (inclusive) up to `end` (exclusive) offsets."""
    wanted = {tp: (s, end[tp]) for tp, s in start.items() if end.get(tp, s) > s}
    if not wanted:
        return []
    consumer = Consumer(
        get_settings().kafka_config(**{"group.id": f"probe-{uuid.uuid4()}", "enable.auto.commit": False})
    )
    try:
        consumer.assign([TopicPartition(tp, p, s) for (tp, p), (s, _) in wanted.items()])
        got: list[Message] = []
        remaining = sum(e - s for s, e in wanted.values())
        deadline = time.monotonic() + timeout
        while remaining > 0 and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    continue
                key = (msg.topic(), msg.partition())
                if msg.offset() < wanted[key][1]:
                    got.append(msg)
                    remaining -= 1
        if remaining > 0:
            raise AssertionError(f"{remaining} records not readable within {timeout} s")
        return got
    finally:
        consumer.close()


class TopicProbe:
    """Marks the topics' ends now; `records()` returns what was appended since."""

    def __init__(self, topics: Iterable[str] | None = None) -> None:
        self.topics = list(topics or [topic.name for topic in t.TOPICS])
        self.start = high_watermarks(self.topics)

    def records(self, topic: str | None = None) -> list[Message]:
        end = high_watermarks(self.topics)
        msgs = read_range(self.start, end)
        return [m for m in msgs if topic is None or m.topic() == topic]


def wait_for(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.2, what: str = "condition"
) -> T:
    """Poll until `predicate()` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def produce(
    topic: str,
    value: bytes,
    key: bytes | None = None,
    headers: list[tuple[str, Any]] | None = None,
    partition: int | None = None,
) -> Message:
    """Produce one record and wait for its acknowledgement."""
    prod = gk.producer()
    return gk.produce_all(prod, [(topic, key, value, headers or [], partition)])[0]
