"""gremio's own topic creation on the three-node cluster: three replicas, two in sync."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType

from gremio import kafka as gk
from gremio import topics as t
from gremio.stack.kafka_cluster import KafkaCluster
from tests.cluster.support import read_ids

INTERNAL = "__consumer_offsets"


def test_gremio_topics_get_three_replicas_and_two_in_sync(cluster):
    settings = cluster.settings()  # KAFKA_REPLICATION_FACTOR=-1: the brokers' default, 3
    # "created" here (this file runs first); "ok" if a drill ran alone before, created them the same way.
    assert set(gk.ensure_topics(settings=settings).values()) <= {"created", "ok"}
    # Told 3 explicitly (the cluster profile's setting), the same topics are simply "ok".
    assert set(gk.ensure_topics(settings=cluster.settings(kafka_replication_factor=3)).values()) == {"ok"}

    client = gk.admin(settings)
    meta = client.list_topics(timeout=10).topics
    for topic in t.TOPICS:
        partitions = meta[topic.name].partitions
        assert len(partitions) == topic.partitions
        for p in partitions.values():
            assert sorted(p.replicas) == [1, 2, 3], (topic.name, p.id, p.replicas)
            assert sorted(p.isrs) == [1, 2, 3], (topic.name, p.id, p.isrs)
    # Leadership is spread: not every partition on one node.
    leaders = {p.leader for name in (tp.name for tp in t.TOPICS) for p in meta[name].partitions.values()}
    assert len(leaders) == 3, leaders

    wanted = ("min.insync.replicas", "unclean.leader.election.enable")
    resources = [ConfigResource(ResourceType.TOPIC, tp.name) for tp in t.TOPICS]
    for resource, future in client.describe_configs(resources, request_timeout=10).items():
        config = future.result()
        assert {k: config[k].value for k in wanted} == {
            "min.insync.replicas": "2",
            "unclean.leader.election.enable": "false",
        }, resource.name
        for key, value in t.BY_NAME[resource.name].config:  # the declared config is still there
            assert config[key].value == value
    assert cluster.state().under_replicated == ()


def test_internal_topics_are_replicated(cluster):
    """Kafka's own topics (consumer offsets: a group's progress) are replicated the same way."""
    read_ids(cluster.settings(), t.SALES.name)  # a consumer group: the broker creates __consumer_offsets
    client = gk.admin(cluster.settings())
    deadline = time.monotonic() + 60
    while True:  # created asynchronously, on the group's first coordinator lookup
        try:
            (future,) = client.describe_configs([ConfigResource(ResourceType.TOPIC, INTERNAL)]).values()
            config = future.result()
            break
        except KafkaException:
            assert time.monotonic() < deadline, f"{INTERNAL} was never created"
            time.sleep(0.5)
    assert config["min.insync.replicas"].value == "2"
    for p in client.list_topics(INTERNAL, timeout=10).topics[INTERNAL].partitions.values():
        assert sorted(p.replicas) == [1, 2, 3]


def test_every_node_is_formatted_with_the_same_three_voters(tmp_path):
    kafka = KafkaCluster(tmp_path, (11, 12, 13), (21, 22, 23), tmp_path)
    nodes = kafka.nodes
    assert len({node.initial_controllers() for node in nodes}) == 1
    assert [v.split("@")[0] for v in nodes[0].initial_controllers().split(",")] == ["1", "2", "3"]
    for node in nodes:
        props = node.server_properties().splitlines()
        assert f"node.id={node.node_id}" in props
        assert "controller.quorum.bootstrap.servers=127.0.0.1:21,127.0.0.1:22,127.0.0.1:23" in props
        assert (
            f"listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
            in props
        )
        for line in (
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "unclean.leader.election.enable=false",
            "offsets.topic.replication.factor=3",
            "transaction.state.log.min.isr=2",
        ):
            assert line in props
    assert kafka.bootstrap_servers == "127.0.0.1:11,127.0.0.1:12,127.0.0.1:13"
