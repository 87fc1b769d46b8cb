"""The three-node cluster the drills run against, and what they use to break and check it.

The same launcher code as the single broker (KafkaBroker, in cluster mode through
KafkaCluster); each node is a child process in its own session, so a drill can SIGKILL,
stop and start any one of them.
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from gremio import kafka as gk
from gremio import topics as t
from gremio.kafka import Outgoing
from gremio.records import Sale
from gremio.settings import REPO_ROOT, Settings
from gremio.stack.kafka_broker import ensure_jars
from gremio.stack.kafka_cluster import NODE_IDS, KafkaCluster, Leadership, leadership
from gremio.stack.system import free_port, wait_for_port
from gremio.stack.testing import Server

DELIVERY_TIMEOUT = 5.0  # the API's default DELIVERY_TIMEOUT_SECONDS: a 503 comes this long after


class Cluster:
    """The running nodes, and what a drill needs: kill, stop, start, who leads, is it whole."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.kafka = KafkaCluster(
            root / "kafka",
            tuple(free_port() for _ in NODE_IDS),
            tuple(free_port() for _ in NODE_IDS),
            ensure_jars(REPO_ROOT / ".local"),
        )
        self.servers = {
            node.node_id: Server(
                f"kafka{node.node_id}", node.command(), root / "logs" / f"kafka{node.node_id}.log"
            )
            for node in self.kafka.nodes
        }

    def settings(self, **values: Any) -> Settings:
        return Settings(
            _env_file=None,
            kafka_bootstrap_servers=self.kafka.bootstrap_servers,
            delivery_timeout_seconds=DELIVERY_TIMEOUT,
            **values,
        )

    def start(self, *node_ids: int, timeout: float = 120.0) -> None:
        for node_id in node_ids or NODE_IDS:
            self.servers[node_id].start()
        for node_id in node_ids or NODE_IDS:
            port = self.kafka.node(node_id).port
            if not wait_for_port(port, timeout):
                raise RuntimeError(
                    f"kafka{node_id} did not open port {port}; see {self.servers[node_id].log}"
                )

    def stop(self, node_id: int, sig: signal.Signals = signal.SIGTERM) -> None:
        self.servers[node_id].stop(sig, timeout=30)

    def kill_all(self) -> None:
        """The end of the drills: the data is thrown away, so no controlled shutdown (which,
        node after node, would wait on a quorum the others have left)."""
        for server in self.servers.values():
            server.stop(signal.SIGKILL)

    def state(self) -> Leadership:
        return leadership(gk.admin(self.settings()))

    def leader_of(self, topic: str, partition: int) -> int:
        meta = gk.admin(self.settings()).list_topics(topic, timeout=10)
        return meta.topics[topic].partitions[partition].leader

    def wait_whole(self, timeout: float = 120.0) -> Leadership:
        """Until all three brokers answer and no partition lacks a leader or an in-sync replica."""
        deadline = time.monotonic() + timeout
        last: Leadership | str = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.state()
                if len(last.brokers) == len(NODE_IDS) and not last.under_replicated and not last.offline:
                    return last
            except Exception as exc:  # a node still starting: ask again
                last = repr(exc)
            time.sleep(0.5)
        raise TimeoutError(f"the cluster is not whole after {timeout:.0f} s: {last}")


def read_ids(settings: Settings, topic: str, plates: Callable[[str], bool] | None = None) -> list[str]:
    """Every record's `id` in `topic` (only those whose plate `plates` keeps), duplicates kept, from
    the beginning to the high watermarks (a real consumer)."""
    consumer = Consumer(
        settings.kafka_config(**{"group.id": "cluster-readback", "enable.auto.commit": False})
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends: dict[int, int] = {}
        for pid in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, pid), timeout=10)
            if high > low:
                ends[pid] = high
        consumer.assign([TopicPartition(topic, pid, 0) for pid in ends])
        ids: list[str] = []
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = json.loads(msg.value())
            if plates is None or plates(value["plate"]):
                ids.append(value["id"])
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
        assert not ends, f"read back stopped short of partitions {sorted(ends)}"
        return ids
    finally:
        consumer.close()


class Carts:
    """Carts selling through the API's own producer path (ingest_api.delivery.Delivery: one
    idempotent acks=all producer), each thread one cart with its plate, one sale at a time.

    A sale that is not acknowledged within the delivery timeout (the API's 503) is sent again
    with the same id after a short pause, as a cart retries with its Idempotency-Key, until
    it is acknowledged. `acked` keeps each id's acknowledgement (time, partition).
    """

    RETRY_AFTER = 0.2

    def __init__(self, settings: Settings, plates: Sequence[str]) -> None:
        from ingest_api.delivery import open_delivery

        self.delivery = open_delivery(settings)
        self.plates = list(plates)
        self.acked: dict[str, tuple[float, int]] = {}
        self.failures: list[tuple[float, str, str]] = []  # (time, plate, reason)
        self.unacked: set[str] = set()  # sent, never acknowledged (stopped while retrying)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._give_up = float("inf")  # once stopping, a sale in its retries gets `grace` s more
        self._threads: list[threading.Thread] = []

    @staticmethod
    def sale(plate: str) -> Outgoing:
        now = datetime.now(UTC)
        record = Sale(
            id=uuid.uuid4(), plate=plate, client="cliente-1", quantity=1, sold_at=now,
            stock_remaining=80, lat=-33.45, lon=-70.66, received_at=now,
        )  # fmt: skip
        return Outgoing.of(record, t.SALES.name, record.plate)

    def send_until_acked(self, record: Outgoing, give_up: float | None = None) -> int | None:
        """The partition once acknowledged; None if `give_up` (a monotonic time; default: the
        end of stop()'s grace) came first."""
        from ingest_api.delivery import NotDelivered

        sale_id = json.loads(record.value)["id"]
        while True:
            try:
                (delivered,) = self.delivery.send([record], timeout=DELIVERY_TIMEOUT)
            except NotDelivered as exc:
                with self._lock:
                    self.failures.append(
                        (time.monotonic(), record.key.decode(), f"{exc.reason}: {exc.detail}")
                    )
                if time.monotonic() > (self._give_up if give_up is None else give_up):
                    self.unacked.add(sale_id)
                    return None
                time.sleep(self.RETRY_AFTER)
                continue
            with self._lock:
                self.acked[sale_id] = (time.monotonic(), delivered.partition)
            return delivered.partition

    def start(self) -> Carts:
        for plate in self.plates:
            thread = threading.Thread(target=self._sell, args=(plate,), name=f"cart-{plate}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _sell(self, plate: str) -> None:
        while not self._stop.is_set():
            self.send_until_acked(self.sale(plate))

    def stop(self, grace: float = 60.0) -> None:
        self._give_up = time.monotonic() + grace
        self._stop.set()
        for thread in self._threads:
            thread.join(max(0.0, self._give_up - time.monotonic()) + 2 * DELIVERY_TIMEOUT)
        assert not any(thread.is_alive() for thread in self._threads), (
            "a cart never got its sale acknowledged"
        )
        self.delivery.close(timeout=10)

    # --- what happened --------------------------------------------------------------------

    def acks_since(
        self, since: float, until: float = float("inf"), partitions: set[int] | None = None
    ) -> int:
        with self._lock:
            return sum(
                1
                for at, p in self.acked.values()
                if since <= at < until and (partitions is None or p in partitions)
            )

    def wait_acks(
        self, count: int, since: float, timeout: float, partitions: set[int] | None = None
    ) -> float:
        """Until `count` acknowledgements came after `since`; returns when the first of them came."""
        deadline = time.monotonic() + timeout
        while self.acks_since(since, partitions=partitions) < count:
            assert time.monotonic() < deadline, f"fewer than {count} acks in {timeout:.0f} s since the event"
            time.sleep(0.1)
        with self._lock:
            return min(
                at for at, p in self.acked.values() if at >= since and (partitions is None or p in partitions)
            )

    def longest_gap(self, since: float, partitions: set[int] | None = None) -> float:
        """The longest time without an acknowledgement (on these partitions) after `since`."""
        with self._lock:
            times = sorted(
                at for at, p in self.acked.values() if at >= since and (partitions is None or p in partitions)
            )
        return max((b - a for a, b in itertools.pairwise([since, *times])), default=0.0)

    def failure_reasons(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(reason.split(":")[0] for _, _, reason in self.failures))


DRILL_PLATES = "GR"  # the drills' plates: GR1000, GR1001... (other tests share the cluster's topics)


def plates_per_partition(carts: Carts, per_partition: int = 2) -> list[str]:
    """Plates whose sales land on every `sales` partition (by key, where the API puts them),
    `per_partition` of each: found by selling once per candidate plate (acknowledged sales)."""
    found: dict[int, list[str]] = {}
    for i in range(200):
        plate = f"{DRILL_PLATES}{1000 + i}"
        partition = carts.send_until_acked(Carts.sale(plate), give_up=time.monotonic() + 30)
        assert partition is not None
        if len(found.setdefault(partition, [])) < per_partition:
            found[partition].append(plate)
        if len(found) == t.SALES.partitions and all(len(p) == per_partition for p in found.values()):
            return [plate for plates in found.values() for plate in plates]
    raise AssertionError(f"no plates for every sales partition: {found}")


def check_readback(settings: Settings, sold: Sequence[Carts]) -> dict[str, int]:
    """Every sale acknowledged so far (by any drill's carts) is in the topic, and every id in
    the topic was sent. Returns the counts."""
    in_log = read_ids(settings, t.SALES.name, lambda plate: plate.startswith(DRILL_PLATES))
    distinct = set(in_log)
    acked = set().union(*(carts.acked for carts in sold))
    unacked = set().union(*(carts.unacked for carts in sold))
    missing = acked - distinct
    assert not missing, f"{len(missing)} acknowledged sale(s) lost, e.g. {sorted(missing)[:3]}"
    strangers = distinct - acked - unacked
    assert not strangers, f"{len(strangers)} id(s) in the topic that no cart sent"
    return {
        "acked": len(acked),
        "records_in_topic": len(in_log),
        "distinct_ids_in_topic": len(distinct),
        "acked_ids_in_topic": len(acked & distinct),
        # A sale sent again with its id after a timeout whose first try had landed after all:
        # the same id twice in the log, which the drain and the consumers take once.
        "duplicates_same_id": len(in_log) - len(distinct),
        "unacked_sent": len(unacked),
    }
