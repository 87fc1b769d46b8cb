"""Topic bootstrap against the real broker (DESIGN §2)."""

from __future__ import annotations

import uuid

from gremio import kafka as gk
from gremio import topics as t
from tests.support import high_watermarks, read_range


def test_bootstrap_creates_every_declared_topic_with_its_partitions():
    gk.ensure_topics()
    counts = gk.partition_counts()
    # Exactly as declared (and the declaration is the design's: tests/unit/test_topics.py).
    declared = {topic.name: topic.partitions for topic in t.TOPICS}
    assert {name: counts.get(name) for name in declared} == declared


def test_bootstrap_is_idempotent():
    before = gk.partition_counts()
    done = gk.ensure_topics()
    assert set(done.values()) == {"ok"}
    assert gk.partition_counts() == before


def test_bootstrap_grows_a_raised_partition_count_and_never_shrinks():
    name = f"grow-{uuid.uuid4().hex[:8]}"
    assert gk.ensure_topics([t.Topic(name, 2, "k", "v", "by key")]) == {name: "created"}
    assert gk.ensure_topics([t.Topic(name, 3, "k", "v", "by key")]) == {name: "grown to 3"}
    assert gk.partition_counts()[name] == 3
    assert gk.ensure_topics([t.Topic(name, 1, "k", "v", "by key")]) == {name: "ok"}
    assert gk.partition_counts()[name] == 3


def test_a_record_on_every_topic_and_partition_is_read_back():
    topics = [topic.name for topic in t.TOPICS]
    start = high_watermarks(topics)
    sent = []
    records = []
    for topic, partition in start:
        value = f"{topic}/{partition}/{uuid.uuid4()}".encode()
        records.append((topic, b"probe", value, [("type", b"Probe")], partition))
        sent.append((topic, partition, value))
    gk.produce_all(gk.producer(), records)
    got = read_range(start, high_watermarks(topics))
    assert sorted((m.topic(), m.partition(), m.value()) for m in got) == sorted(sent)
    assert all(gk.header(m, "type") == "Probe" for m in got)
