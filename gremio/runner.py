"""The one run loop every consumer service shares (STYLE guideline 5).

poll → decode (poison to `deadletter`) → the service's `process(batch)`, which makes its
effects durable → dead-letter records acknowledged → offsets committed. SIGTERM or SIGINT
finish the batch in hand, commit, and exit 0.

A failure while making a batch durable is classified (`gremio.failures.classify`):

* **permanent** (the record is refused: a DataError, a non-idempotency IntegrityError, the
  handler's ValueError): the runner splits the batch (`failures.isolate`) until the refused
  records stand alone, dead-letters only those (reason "refused", the error in the `error`
  header), and processes and commits the rest. A service whose `process` must not be run
  twice on part of a batch (`splittable = False`) returns its refused records instead.
* **transient** (PostgreSQL or the broker away, a timeout, a serialization failure): nothing
  is dead-lettered or committed; every partition of the held batch is sought back to its
  first uncommitted record, the batch is dropped, and the loop consumes it again after a
  backoff (woken by stop), so it keeps calling consume() well within max.poll.interval.ms.
* **fatal** (anything else): it propagates uncommitted and the service stops, as the
  batch is redelivered to the next start; services make their effects idempotent for it.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from gremio import failures
from gremio import kafka as gk
from gremio.failures import Backoff, Failure
from gremio.records import Record
from gremio.settings import Settings, get_settings

log = logging.getLogger(__name__)

RECORDS = Counter("gremio_consumer_records_total", "Records consumed", ["group", "topic"])
BATCHES = Counter("gremio_consumer_batches_total", "Batches processed", ["group"])
DEADLETTERED = Counter(
    "gremio_consumer_deadlettered_total",
    "Records sent to the dead-letter topic (reason: undecodable, or refused when their effect failed)",
    ["group", "topic", "reason"],
)
RETRIES = Counter(
    "gremio_consumer_retries_total",
    "Batches given up for now on a transient failure, to be consumed again after a backoff",
    ["group"],
)
# The fixed vocabulary of DEADLETTERED's `reason` label; the error itself is in the header.
UNDECODABLE = "undecodable"
REFUSED = "refused"
LAG = Gauge("gremio_consumer_lag", "Records behind the high watermark", ["group", "topic", "partition"])


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded record and where it came from."""

    record: Record
    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int
    # The message itself, for dead-lettering the record as it came if its effect is refused.
    message: Message | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, record: Record, msg: Message) -> Envelope:
        return cls(record, msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.timestamp()[1], msg)


class Poison(ValueError):
    """A record that can never be processed: it goes to `deadletter`."""


def decode(msg: Message, accepts: Mapping[str, type[Record]]) -> Record:
    """The record in a message, or Poison saying why not."""
    type_name = gk.header(msg, "type")
    model = accepts.get(type_name or "")
    if model is None:
        raise Poison(f"type header {type_name!r} is not one of {sorted(accepts)}")
    value = msg.value()
    if value is None:
        raise Poison("empty value")
    try:
        return model.from_bytes(value)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(map(str, e["loc"])) or "(record)", "error": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise Poison(f"invalid {type_name}: {json.dumps(errors)[:1500]}") from None


class Service(Protocol):
    """What a consumer service gives the runner."""

    group_id: str
    topics: Sequence[str]
    accepts: Mapping[str, type[Record]]  # `type` header → model
    batch_size: int
    batch_timeout: float  # seconds after a batch's first record before it is processed anyway
    # Whether process() may be run again on part of a batch to find a refused record
    # (failures.isolate). A service that is not returns its refused records instead.
    splittable: bool
    poll_interval: float  # how long one consume() waits for a batch to fill
    consumer_config: Mapping[str, Any]  # the service's own consumer settings (session timeout...)

    def process(self, batch: list[Envelope]) -> Sequence[tuple[Envelope, str]] | None:
        """Make the batch's effects durable (idempotently), or raise.

        Returns the records whose effects were refused for good, each with why (a
        `failures.reason`); the runner dead-letters them. Every other record's effects
        are durable. Raise a permanent failure (failures.classify) to have the runner
        split the batch instead (splittable services only), a transient one to have
        the batch consumed again later.
        """

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Called with newly assigned partitions, before any of their records."""

    def tick(self, now: float) -> None:
        """Called on every loop turn, for periodic work."""

    def replayed(self, msg: Message) -> bool:
        """Whether this record was processed before and is only read again (a rebuild):
        if it is poison, it was dead-lettered then, and is not sent again."""

    def close(self) -> None:
        """Release what the service holds (producer, connections) once the runner stopped."""


class Runner:
    """Drives one Service against Kafka until stopped."""

    def __init__(
        self,
        service: Service,
        settings: Settings | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        poll_interval: float | None = None,
    ) -> None:
        """The consumer is set up as the service asks (its `consumer_config` and
        `poll_interval`); `consumer_config` here adds to that (tests)."""
        self.service = service
        self.settings = settings or get_settings()
        self.poll_interval = service.poll_interval if poll_interval is None else poll_interval
        self._stop = threading.Event()
        self.assigned = threading.Event()  # set once partitions are assigned (for tests, readiness)
        self.assignment: set[tuple[str, int]] = set()
        self._pending: list[Envelope] = []
        self._poison: list[tuple[Message, str]] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self._first: dict[tuple[str, int], int] = {}  # first held (uncommitted) offset per partition
        self._first_at: float | None = None
        self._backoff = Backoff()
        self._counters: dict[str, Counter] = {}
        self._dlq = gk.producer(self.settings)
        config = self.settings.kafka_config(
            **{
                "group.id": service.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "statistics.interval.ms": 5000,
                "stats_cb": self._on_stats,
                "fetch.max.bytes": 16 * 1024 * 1024,
            }
        )
        config.update(service.consumer_config)
        config.update(consumer_config or {})
        self.consumer = Consumer(config)

    # --- lifecycle ------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> int:
        """Consume until stopped; 0 after a clean stop. Exceptions propagate uncommitted."""
        self.consumer.subscribe(
            list(self.service.topics), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        log.info("%s consuming %s", self.service.group_id, ", ".join(self.service.topics))
        try:
            while not self._stop.is_set():
                self._poll_once()
            self._flush()
        except BaseException:
            self._drop()  # a failed batch stays uncommitted, even by the revoke in close()
            raise
        finally:
            self.consumer.close()
            self._dlq.flush(10)
        log.info("%s stopped cleanly", self.service.group_id)
        return 0

    # --- the loop ------------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        """The service's periodic work; a transient failure there is logged and ridden out."""
        try:
            self.service.tick(now)
        except Exception as exc:
            if failures.classify(exc) is not Failure.TRANSIENT:
                raise
            log.warning("%s in periodic work, carrying on: %s", _unavailable(exc), failures.reason(exc))

    def _poll_once(self) -> None:
        timeout = self.poll_interval
        if self._first_at is not None:
            timeout = max(0.0, min(timeout, self._first_at + self.service.batch_timeout - time.monotonic()))
        room = max(1, self.service.batch_size - len(self._pending))
        for msg in self.consumer.consume(num_messages=room, timeout=timeout):
            self._accept(msg)
        now = time.monotonic()
        self._tick(now)
        full = len(self._pending) >= self.service.batch_size
        due = self._first_at is not None and now >= self._first_at + self.service.batch_timeout
        poison_only = not self._pending and bool(self._offsets)
        if full or due or poison_only:
            self._flush()

    def _accept(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return
            if err.fatal():
                raise KafkaException(err)
            log.warning("consumer error: %s", err)
            return
        self._offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        self._first.setdefault((msg.topic(), msg.partition()), msg.offset())
        self._record_counter(msg.topic()).inc()
        try:
            self._pending.append(Envelope.of(decode(msg, self.service.accepts), msg))
            if self._first_at is None:
                self._first_at = time.monotonic()
        except Poison as exc:
            if not self.service.replayed(msg):
                self._poison.append((msg, str(exc)))

    def _record_counter(self, topic: str):
        """The labelled counter for a topic, looked up once (labels() is slow per record)."""
        counter = self._counters.get(topic)
        if counter is None:
            counter = self._counters[topic] = RECORDS.labels(self.service.group_id, topic)
        return counter

    def _flush(self, revoking: Sequence[TopicPartition] = ()) -> None:
        """Durable effects, then dead letters acknowledged, then offsets committed.

        On a transient failure nothing is committed: the held records are sought back to
        and read again after a backoff (not while `revoking`: the next owner reads them).
        """
        try:
            self._make_durable()
        except Exception as exc:
            if failures.classify(exc) is not Failure.TRANSIENT:
                raise
            self._give_back(exc, revoking)
            return
        self._backoff.reset()

    def _make_durable(self) -> None:
        refused: list[tuple[Message, str]] = []
        if self._pending:
            for envelope, why in self._process(self._pending):
                if envelope.message is None:
                    where = f"{envelope.topic}[{envelope.partition}]@{envelope.offset}"
                    raise RuntimeError(f"refused record {where} has no message to dead-letter")
                if not self.service.replayed(envelope.message):
                    refused.append((envelope.message, why))
            BATCHES.labels(self.service.group_id).inc()
        letters = [(msg, why, UNDECODABLE) for msg, why in self._poison]
        letters += [(msg, why, REFUSED) for msg, why in refused]
        if letters:
            gk.send_dead_letters(self._dlq, [(msg, why) for msg, why, _ in letters])
            for msg, _, kind in letters:
                DEADLETTERED.labels(self.service.group_id, msg.topic(), kind).inc()
        if self._offsets:
            self.consumer.commit(
                offsets=[TopicPartition(tp, p, o) for (tp, p), o in self._offsets.items()],
                asynchronous=False,
            )
        self._drop()

    def _process(self, batch: list[Envelope]) -> list[tuple[Envelope, str]]:
        """The service's process(): its refused records, and those isolate() finds alone."""
        returned: list[tuple[Envelope, str]] = []

        def apply(part: Sequence[Envelope]) -> None:
            returned.extend(self.service.process(list(part)) or ())

        if not getattr(self.service, "splittable", True):
            apply(batch)
            return returned
        isolated = failures.isolate(batch, apply)
        return returned + [(envelope, failures.reason(exc)) for envelope, exc in isolated]

    def _drop(self) -> None:
        self._pending, self._poison, self._offsets, self._first, self._first_at = [], [], {}, {}, None

    def _give_back(self, exc: BaseException, revoking: Sequence[TopicPartition]) -> None:
        """Seek the held partitions back to their first uncommitted record, drop the batch, wait."""
        RETRIES.labels(self.service.group_id).inc()
        gone = {(p.topic, p.partition) for p in revoking}
        if revoking:
            log.warning(
                "%s (%s) while giving partitions up: not committed, their next owner reads them again",
                _unavailable(exc), failures.reason(exc),
            )  # fmt: skip
        held = {(p.topic, p.partition) for p in self.consumer.assignment()}
        for (topic, partition), offset in self._first.items():
            if (topic, partition) in held and (topic, partition) not in gone:
                self.consumer.seek(TopicPartition(topic, partition, offset))
        self._drop()
        if revoking:
            return
        delay = self._backoff.next_delay()
        log.warning("%s (%s), retrying in %.1f s", _unavailable(exc), failures.reason(exc), delay)
        self._stop.wait(delay)

    # --- callbacks ---------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _describe(partitions))
        self.service.on_assign(consumer, partitions)
        self.assignment |= {(p.topic, p.partition) for p in partitions}
        self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish what we hold before another member takes these partitions over.
        log.info("revoked %s", _describe(partitions))
        self._flush(revoking=partitions)
        self.assignment -= {(p.topic, p.partition) for p in partitions}

    def _on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        for topic, tstats in stats.get("topics", {}).items():
            for partition, pstats in tstats.get("partitions", {}).items():
                lag = pstats.get("consumer_lag", -1)
                if partition != "-1" and lag >= 0:
                    LAG.labels(self.service.group_id, topic, partition).set(lag)


def _unavailable(exc: BaseException) -> str:
    """What a transient failure says is away, for the log line."""
    if isinstance(exc, psycopg.Error):
        return "PostgreSQL unavailable"
    if isinstance(exc, KafkaException):
        return "Kafka unavailable"
    return "transient failure"


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"


def run_service(
    service: Service, settings: Settings | None = None, *, then: Sequence[Callable[[], Any]] = ()
) -> int:
    """A service's life in the foreground: its runner with signal handling until SIGTERM or
    SIGINT, then `service.close()` and each of `then` (what the `main()` started beside it),
    whatever happened. The body of each `main()` after its set-up."""
    try:
        runner = Runner(service, settings)
        runner.install_signal_handlers()
        return runner.run()
    finally:
        service.close()
        for stop in then:
            stop()


class BaseService:
    """Defaults for the optional parts of Service."""

    batch_size = 500
    batch_timeout = 0.2
    splittable = True
    poll_interval = 0.2

    @property
    def consumer_config(self) -> Mapping[str, Any]:
        return {}

    def close(self) -> None:
        return None

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        return None

    def tick(self, now: float) -> None:
        return None

    def replayed(self, msg: Message) -> bool:
        return False
