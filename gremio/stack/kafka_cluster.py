"""Three KRaft nodes on loopback, from the same jars as the single broker (docs/SCALING.md).

Each node is broker and controller (KafkaBroker in cluster mode): three client ports, three
controller ports, and a three-voter dynamic quorum formatted with `--initial-controllers`
(Kafka 4.x, KIP-853). Topics get three replicas with min.insync.replicas=2, internal topics
too, and unclean leader election is off: an acks=all write is on two nodes before it is
acknowledged, and survives the loss of any one node. tests/cluster/ drills it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from gremio.stack.kafka_broker import KafkaBroker, _cluster_id
from gremio.stack.system import StackError

NODE_IDS = (1, 2, 3)


@dataclass
class KafkaCluster:
    """Node i (1-based) has client port ports[i-1] and controller port controller_ports[i-1]."""

    root: Path
    ports: tuple[int, ...]
    controller_ports: tuple[int, ...]
    libs: Path
    heap: str = "512m"

    def __post_init__(self) -> None:
        if len(self.ports) != len(NODE_IDS) or len(self.controller_ports) != len(NODE_IDS):
            raise StackError(
                f"a cluster has {len(NODE_IDS)} client ports and {len(NODE_IDS)} controller ports"
            )

    @property
    def voters(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(NODE_IDS, self.controller_ports, strict=True))

    @property
    def cluster_id_file(self) -> Path:
        return self.root / "cluster.id"

    @property
    def cluster_id(self) -> str:
        """The id every node is formatted with: made once, kept beside the nodes' folders."""
        if not self.cluster_id_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self.cluster_id_file.write_text(_cluster_id() + "\n")
        return self.cluster_id_file.read_text().strip()

    def node(self, node_id: int) -> KafkaBroker:
        i = NODE_IDS.index(node_id)
        return KafkaBroker(
            data_dir=self.root / f"node{node_id}",
            port=self.ports[i],
            controller_port=self.controller_ports[i],
            libs=self.libs,
            heap=self.heap,
            node_id=node_id,
            voters=self.voters,
            cluster_id=self.cluster_id,
        )

    @property
    def nodes(self) -> list[KafkaBroker]:
        return [self.node(node_id) for node_id in NODE_IDS]

    @property
    def bootstrap_servers(self) -> str:
        """Every client gets the whole list: any one node answering is enough to start."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def prepare(self) -> None:
        """Write each node's server.properties and format its storage once (same cluster id)."""
        for node in self.nodes:
            node.prepare()


class PartitionState(NamedTuple):
    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class Leadership(NamedTuple):
    """What `make status` shows for a cluster: who answers, who leads, what lacks a replica."""

    brokers: tuple[int, ...]
    leaders: dict[int, int]  # broker id -> partitions it leads
    under_replicated: tuple[PartitionState, ...]  # fewer in-sync replicas than replicas
    offline: tuple[PartitionState, ...]  # no leader


def leadership(admin: Any, timeout: float = 5.0, internal: bool = True) -> Leadership:
    """Partition leadership and under-replicated partitions, from one metadata request."""
    return leadership_of(admin.list_topics(timeout=timeout), internal)


def leadership_of(meta: Any, internal: bool = True) -> Leadership:
    """`leadership` from a metadata answer already at hand (ClusterMetadata)."""
    leaders = dict.fromkeys(sorted(meta.brokers), 0)
    under: list[PartitionState] = []
    offline: list[PartitionState] = []
    for name, topic in sorted(meta.topics.items()):
        if not internal and name.startswith("__"):
            continue
        for pid, p in sorted(topic.partitions.items()):
            state = PartitionState(name, pid, p.leader, tuple(p.replicas), tuple(p.isrs))
            if p.leader < 0:
                offline.append(state)
            else:
                leaders[p.leader] = leaders.get(p.leader, 0) + 1
            if len(p.isrs) < len(p.replicas):
                under.append(state)
    return Leadership(tuple(sorted(meta.brokers)), leaders, tuple(under), tuple(offline))


def partitions_of(admin: Any, topic: str, timeout: float = 5.0) -> tuple[PartitionState, ...]:
    """One topic's partitions: leader, replicas and in-sync replicas of each."""
    meta = admin.list_topics(topic, timeout=timeout).topics[topic]
    return tuple(
        PartitionState(topic, pid, p.leader, tuple(p.replicas), tuple(p.isrs))
        for pid, p in sorted(meta.partitions.items())
    )
