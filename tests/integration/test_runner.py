"""The shared run loop against the real broker: batches, dead letters, commits, stop."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition

from gremio import kafka as gk
from gremio import records as r
from gremio import topics as t
from gremio.runner import BaseService, Envelope, Runner
from gremio.settings import get_settings
from tests.support import TopicProbe, wait_for


def _sale(plate: str = "BBCL12", stock: int = 50) -> r.Sale:
    now = datetime.now(UTC)
    return r.Sale(
        id=uuid.uuid4(), plate=plate, client="ana", quantity=2, sold_at=now,
        stock_remaining=stock, lat=-33.44, lon=-70.65, received_at=now,
    )  # fmt: skip


class Recorder(BaseService):
    topics = (t.SALES.name,)
    accepts = {"Sale": r.Sale}

    def __init__(self, batch_size: int = 5, batch_timeout: float = 1.0) -> None:
        self.group_id = f"test-runner-{uuid.uuid4()}"
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.batches: list[list[Envelope]] = []

    def process(self, batch: list[Envelope]) -> None:
        self.batches.append(list(batch))


def _run_in_thread(runner: Runner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


def _committed(group: str, probe: TopicProbe) -> int:
    consumer = Consumer(get_settings().kafka_config(**{"group.id": group}))
    try:
        parts = [TopicPartition(tp, p) for (tp, p) in probe.start if tp == t.SALES.name]
        # Progress since the probe's start: earlier tests may have left records in these partitions.
        return sum(
            max(tp.offset - probe.start[(tp.topic, tp.partition)], 0)
            for tp in consumer.committed(parts, timeout=10)
        )
    finally:
        consumer.close()


def test_batches_poison_and_commit():
    service = Recorder(batch_size=5, batch_timeout=1.0)
    probe = TopicProbe([t.SALES.name, t.DEADLETTER.name])
    # Start from the current end so other tests' records do not interfere.
    runner = Runner(service, consumer_config={"auto.offset.reset": "latest"})
    thread = _run_in_thread(runner)
    assert runner.assigned.wait(30), "partition assignment"
    plate = "BBCL12"
    good = [_sale(plate) for _ in range(5)]
    prod = gk.producer()
    records = [(t.SALES.name, plate.encode(), s.to_bytes(), [("type", b"Sale")], None) for s in good[:2]]
    records.append((t.SALES.name, plate.encode(), b"{not json", [("type", b"Sale")], None))
    records.append((t.SALES.name, plate.encode(), good[2].to_bytes(), [("type", b"Alert")], None))
    records += [(t.SALES.name, plate.encode(), s.to_bytes(), [("type", b"Sale")], None) for s in good[2:]]
    gk.produce_all(prod, records)
    wait_for(lambda: sum(len(b) for b in service.batches) >= 5, what="5 sales processed")
    assert [len(b) for b in service.batches] == [5]
    assert [e.record.id for e in service.batches[0]] == [s.id for s in good]
    dead = wait_for(lambda: probe.records(t.DEADLETTER.name), what="dead letters")
    assert len(dead) == 2
    headers = {k for m in dead for k, _ in m.headers()}
    assert {"source_topic", "source_partition", "source_offset", "error"} <= headers
    assert all(gk.header(m, "source_topic") == "sales" for m in dead)
    runner.stop()
    thread.join(15)
    assert not thread.is_alive()
    assert _committed(service.group_id, probe) == sum(
        end - probe.start[tp] for tp, end in _ends(probe).items() if tp[0] == t.SALES.name
    )


def test_partial_batch_is_flushed_after_the_timeout():
    service = Recorder(batch_size=5, batch_timeout=0.5)
    runner = Runner(service, consumer_config={"auto.offset.reset": "latest"})
    thread = _run_in_thread(runner)
    assert runner.assigned.wait(30), "partition assignment"
    sales = [_sale(), _sale(), _sale()]
    gk.produce_all(
        gk.producer(), [(t.SALES.name, b"BBCL12", s.to_bytes(), [("type", b"Sale")], None) for s in sales]
    )
    wait_for(lambda: service.batches, what="a partial batch")
    assert [len(b) for b in service.batches] == [3]
    runner.stop()
    thread.join(15)


def _ends(probe: TopicProbe) -> dict[tuple[str, int], int]:
    from tests.support import high_watermarks

    return high_watermarks(probe.topics)
