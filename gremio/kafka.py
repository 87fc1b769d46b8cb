"""Kafka helpers every part shares: topic bootstrap, producers, and the dead-letter path."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from gremio import topics as t
from gremio.settings import Settings, get_settings

if TYPE_CHECKING:
    from gremio.records import Record

log = logging.getLogger(__name__)

# librdkafka's murmur2 partitioner places keys where Java clients would, so other tools
# reading or writing these topics agree with us on "by key".
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
    "linger.ms": 2,
    "compression.type": "lz4",
    "message.max.bytes": 8 * 1024 * 1024,
}


class Outgoing(NamedTuple):
    """One record to produce; `partition` None means "by key".

    The mirror of `gremio.runner.decode`: `of()` writes the record's JSON with its class name
    in the `type` header, which is what `decode` reads back. Being a tuple, a hand-made
    (topic, key, value, headers, partition) works too (the tests send poison that way).
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int | None = None

    @classmethod
    def of(cls, record: Record, topic: str, key: str | None, partition: int | None = None) -> Outgoing:
        return cls(
            topic,
            None if key is None else key.encode("utf-8"),
            record.to_bytes(),
            type_headers(type(record)),
            partition,
        )


def type_headers(model: type[Record]) -> list[tuple[str, bytes]]:
    """The headers that name a record's type, as `gremio.runner.decode` reads them."""
    return [("type", model.type_name.encode())]


def produce(prod: Any, record: Outgoing, on_delivery: Any) -> None:
    """Queue one record: by key unless its partition is fixed. BufferError goes to the caller."""
    if record.partition is None:
        prod.produce(record.topic, record.value, record.key, headers=record.headers, on_delivery=on_delivery)
    else:
        prod.produce(
            record.topic, record.value, record.key,
            partition=record.partition, headers=record.headers, on_delivery=on_delivery,
        )  # fmt: skip


def admin(settings: Settings | None = None) -> AdminClient:
    settings = settings or get_settings()
    return AdminClient(settings.kafka_config())


def producer(settings: Settings | None = None, **overrides: Any) -> Producer:
    """An idempotent, acks=all producer; `overrides` may replace the defaults (linger.ms, say)."""
    settings = settings or get_settings()
    return Producer(settings.kafka_config(**{**PRODUCER_DEFAULTS, **overrides}))


def wait_for_broker(settings: Settings | None = None, timeout: float = 60.0) -> None:
    """Block until the broker answers a metadata request, or raise TimeoutError."""
    client = admin(settings)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.list_topics(timeout=2)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.5)
    raise TimeoutError(f"Kafka did not answer within {timeout:.0f} s: {last}")


def ensure_topics(
    declared: Iterable[t.Topic] = t.TOPICS, settings: Settings | None = None, timeout: float = 30.0
) -> dict[str, str]:
    """Create missing topics and grow partition counts; never shrink or delete.

    New topics get KAFKA_REPLICATION_FACTOR replicas (-1: the brokers' default). An existing
    topic with fewer replicas is reported, not changed: adding replicas moves data, which is
    an operator's decision (kafka-reassign-partitions, docs/SCALING.md).

    A topic's declared config (cleanup.policy=compact, ...) is set when it is created, and set
    again on an existing topic that differs (one a broker auto-created, say): "config set: ...".

    Returns what was done per topic: "created", "grown to N" or "ok".
    """
    settings = settings or get_settings()
    replicas = settings.kafka_replication_factor
    client = admin(settings)
    existing = client.list_topics(timeout=timeout).topics
    done: dict[str, str] = {}
    to_create: list[NewTopic] = []
    to_grow: list[NewPartitions] = []
    for topic in declared:
        if topic.name not in existing:
            to_create.append(
                NewTopic(
                    topic.name,
                    num_partitions=topic.partitions,
                    replication_factor=replicas,
                    config=dict(topic.config),
                )
            )
            done[topic.name] = "created"
        elif len(existing[topic.name].partitions) < topic.partitions:
            to_grow.append(NewPartitions(topic.name, topic.partitions))
            done[topic.name] = f"grown to {topic.partitions}"
        else:
            done[topic.name] = "ok"
        if topic.name in existing and replicas > 0:
            have = min((len(p.replicas) for p in existing[topic.name].partitions.values()), default=0)
            if have < replicas:
                log.warning(
                    "topic %s has %d replica(s), KAFKA_REPLICATION_FACTOR asks for %d: reassign its"
                    " partitions (kafka-reassign-partitions) to add them",
                    topic.name, have, replicas,
                )  # fmt: skip
                done[topic.name] += f" ({have} of {replicas} replicas)"
    for future in client.create_topics(to_create, request_timeout=timeout).values() if to_create else []:
        try:
            future.result()
        except KafkaException as exc:
            # Another bootstrap running at the same time created it first: fine.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    for future in client.create_partitions(to_grow, request_timeout=timeout).values() if to_grow else []:
        future.result()
    for name, changed in _align_configs(
        client, [tp for tp in declared if tp.name in existing], timeout
    ).items():
        done[name] = ("" if done[name] == "ok" else f"{done[name]}, ") + f"config set: {changed}"
    _wait_for_partitions(client, declared, timeout)
    return done


def _align_configs(client: AdminClient, topics: Sequence[t.Topic], timeout: float) -> dict[str, str]:
    """Set the declared config keys that differ on existing topics; returns what changed."""
    declared = {tp.name: dict(tp.config) for tp in topics if tp.config}
    if not declared:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in declared]
    changes: list[ConfigResource] = []
    changed: dict[str, str] = {}
    for resource, future in client.describe_configs(resources, request_timeout=timeout).items():
        have = {key: entry.value for key, entry in future.result().items()}
        wrong = {k: v for k, v in declared[resource.name].items() if have.get(k) != v}
        if wrong:
            entries = [
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in wrong.items()
            ]
            changes.append(ConfigResource(ResourceType.TOPIC, resource.name, incremental_configs=entries))
            changed[resource.name] = ", ".join(f"{k}={v}" for k, v in wrong.items())
    for future in (
        client.incremental_alter_configs(changes, request_timeout=timeout).values() if changes else []
    ):
        future.result()
    return changed


def _wait_for_partitions(client: AdminClient, declared: Iterable[t.Topic], timeout: float) -> None:
    """Topic creation is asynchronous in the broker; wait until metadata shows it all."""
    deadline = time.monotonic() + timeout
    wanted = {topic.name: topic.partitions for topic in declared}
    while True:
        meta = client.list_topics(timeout=timeout).topics
        missing = [
            name
            for name, count in wanted.items()
            if name not in meta
            or len(meta[name].partitions) < count
            or any(p.leader < 0 for p in meta[name].partitions.values())
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not ready after {timeout:.0f} s: {', '.join(missing)}")
        time.sleep(0.2)


def partition_counts(settings: Settings | None = None, timeout: float = 10.0) -> dict[str, int]:
    meta = admin(settings).list_topics(timeout=timeout).topics
    return {name: len(topic.partitions) for name, topic in meta.items() if not name.startswith("__")}


def header(msg: Message, name: str) -> str | None:
    """A header's value as text, or None."""
    for key, value in msg.headers() or ():
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


def deadletter_headers(msg: Message, error: str) -> list[tuple[str, bytes]]:
    """The original headers plus where the record came from and why it was refused."""
    original = [(k, v) for k, v in (msg.headers() or ()) if not k.startswith("source_")]
    return [
        *original,
        (t.DLQ_SOURCE_TOPIC, (msg.topic() or "").encode()),
        (t.DLQ_SOURCE_PARTITION, str(msg.partition()).encode()),
        (t.DLQ_SOURCE_OFFSET, str(msg.offset()).encode()),
        (t.DLQ_ERROR, error[:2000].encode("utf-8", "replace")),
    ]


def send_dead_letters(
    prod: Producer, poison: Sequence[tuple[Message, str]], topic: str = t.DEADLETTER.name
) -> None:
    """Send each (message, why) to the dead-letter topic and wait for the acknowledgements."""
    if not poison:
        return
    produce_all(
        prod,
        [Outgoing(topic, msg.key(), msg.value() or b"", deadletter_headers(msg, why)) for msg, why in poison],
    )
    for msg, why in poison:
        log.warning("dead-lettered %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), why[:300])


def flush_or_raise(prod: Producer, timeout: float = 30.0) -> None:
    """Wait for every queued record's delivery report; raise if any is still queued."""
    remaining = prod.flush(timeout)
    if remaining:
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"{remaining} records not delivered"))


class DeliveryTracker:
    """Collects delivery reports so a caller can tell that every record it produced landed."""

    def __init__(self) -> None:
        self.errors: list[KafkaError] = []
        self.delivered: list[Message] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.delivered.append(msg)

    def raise_for_errors(self) -> None:
        if self.errors:
            raise KafkaException(self.errors[0])


def produce_all(prod: Producer, records: Sequence[Outgoing | tuple], timeout: float = 30.0) -> list[Message]:
    """Produce the records and wait until all are acknowledged (a full queue waits, not fails)."""
    tracker = DeliveryTracker()
    for record in records:
        outgoing = Outgoing(*record)
        while True:
            try:
                produce(prod, outgoing, tracker)
                break
            except BufferError:
                prod.poll(0.1)
        prod.poll(0)
    flush_or_raise(prod, timeout)
    tracker.raise_for_errors()
    return tracker.delivered
