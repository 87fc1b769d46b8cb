"""Producing a record and waiting for the broker's acknowledgement (DESIGN §1, §4).

The API answers 202 only after the delivery report, so every request thread blocks on its
own record's report. One long-lived producer per process (per gunicorn worker) serves all
threads; a background thread polls it so delivery callbacks run as soon as they arrive.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

from gremio import kafka as gk
from gremio import topics as t
from gremio.settings import Settings, get_settings

log = logging.getLogger(__name__)

READY_CACHE_SECONDS = 2.0  # /readyz answers from a cached check, so probes cost nothing
READY_CHECK_TIMEOUT = 1.0
PARTITIONS_CACHE_SECONDS = 60.0  # partition counts only grow, and rarely
REQUIRED_TOPICS = (t.MEMBERS.name, t.SALES.name, t.LOCATIONS.name)


class ProducerLike(Protocol):
    """The part of confluent_kafka.Producer the API uses (so a do-nothing one can stand in)."""

    def produce(
        self, topic: str, value: bytes | None = ..., key: bytes | None = ..., **kwargs: Any
    ) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...
    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...


@dataclass(frozen=True, slots=True)
class Delivered:
    topic: str
    partition: int
    offset: int


class NotDelivered(Exception):
    """The broker did not acknowledge the record; `reason` labels the metric."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Pending:
    """One record's delivery report, handed from the poll thread to the request thread."""

    __slots__ = ("done", "error", "message")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: KafkaError | None = None
        self.message: Any = None

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        self.error = err
        self.message = msg
        self.done.set()


class Delivery:
    """Sends records through one producer and waits for their delivery reports."""

    def __init__(self, producer: ProducerLike, on_fatal: Callable[[], None] | None = None) -> None:
        self.producer = producer
        self.on_fatal = on_fatal
        self.fatal: KafkaError | None = None
        self._running = True
        self._ready_lock = threading.Lock()
        self._ready: tuple[float, bool, str] = (0.0, False, "not checked yet")
        self._partitions: dict[str, tuple[float, int]] = {}
        self._poller = threading.Thread(target=self._poll_loop, name="delivery-poll", daemon=True)
        self._poller.start()

    # --- sending ------------------------------------------------------------------------

    def send(self, records: Sequence[gk.Outgoing], timeout: float) -> list[Delivered]:
        """Produce every record, then wait (at most `timeout` s in all) until each is acknowledged.

        Raises NotDelivered if any record is refused or not acknowledged in time; the caller
        answers 503 and the client retries with its Idempotency-Key (same ids downstream).
        """
        if self.fatal is not None:
            raise NotDelivered(
                "fatal", f"the Kafka producer failed ({self.fatal.str()}); gunicorn is replacing the worker"
            )
        deadline = time.monotonic() + timeout
        pending: list[_Pending] = []
        for record in records:
            report = _Pending()
            try:
                gk.produce(self.producer, record, report)
            except BufferError:
                raise NotDelivered(
                    "queue_full", "the producer's queue is full: the broker is not keeping up"
                ) from None
            except KafkaException as exc:
                raise NotDelivered("error", str(exc.args[0])) from None
            pending.append(report)
        delivered: list[Delivered] = []
        for report in pending:
            if not report.done.wait(max(0.0, deadline - time.monotonic())):
                raise NotDelivered("timeout", f"the broker did not acknowledge within {timeout:g} s")
            if report.error is not None:
                raise NotDelivered("error", report.error.str())
            msg = report.message
            delivered.append(Delivered(msg.topic(), msg.partition(), msg.offset()))
        return delivered

    def _poll_loop(self) -> None:
        while self._running:
            try:
                self.producer.poll(0.1)
            except Exception:  # the poll thread must outlive a bad callback
                log.exception("delivery poll failed")
                time.sleep(0.1)

    def on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback: transient errors are logged, fatal ones retire the producer."""
        if err.fatal():
            log.error("Kafka producer failed fatally: %s", err.str())
            self.fatal = err
            if self.on_fatal:
                self.on_fatal()
        elif err.code() == KafkaError._TRANSPORT:
            log.debug("Kafka connection: %s", err.str())  # librdkafka's own log line says it
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            log.warning("Kafka unreachable: %s", err.str())
        else:
            log.warning("Kafka producer: %s", err.str())

    # --- what the broker looks like ------------------------------------------------------

    def partitions(self, topic: t.Topic) -> int:
        """The topic's partition count (cached); its declared count if the broker cannot say."""
        now = time.monotonic()
        cached = self._partitions.get(topic.name)
        if cached and cached[0] > now:
            return cached[1]
        try:
            meta = self.producer.list_topics(topic.name, timeout=READY_CHECK_TIMEOUT).topics.get(topic.name)
            count = len(meta.partitions) if meta is not None and meta.error is None else 0
        except KafkaException:
            count = 0
        if count:
            self._partitions[topic.name] = (now + PARTITIONS_CACHE_SECONDS, count)
            return count
        return cached[1] if cached else topic.partitions

    def ready(self) -> tuple[bool, str]:
        """Whether the broker answers and our topics exist; checked at most every 2 s."""
        checked_at, ok, detail = self._ready
        if time.monotonic() - checked_at < READY_CACHE_SECONDS:
            return ok, detail
        if not self._ready_lock.acquire(blocking=False):
            return ok, detail  # another thread is checking; answer with what we know
        try:
            ok, detail = self._check()
            self._ready = (time.monotonic(), ok, detail)
            return ok, detail
        finally:
            self._ready_lock.release()

    def _check(self) -> tuple[bool, str]:
        if self.fatal is not None:
            return False, f"producer failed: {self.fatal.str()}"
        try:
            meta = self.producer.list_topics(timeout=READY_CHECK_TIMEOUT)
        except KafkaException as exc:
            return False, f"Kafka unreachable: {exc.args[0].str()}"
        missing = [name for name in REQUIRED_TOPICS if name not in meta.topics]
        if missing:
            return False, f"topics missing: {', '.join(missing)} (run `gremio topics`)"
        return True, f"Kafka reachable, {len(meta.brokers)} broker(s)"

    # --- shutdown ----------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> int:
        """Stop polling and flush; returns how many records were still undelivered."""
        self._running = False
        self._poller.join(timeout=2)
        remaining = self.producer.flush(timeout)
        if remaining:
            log.error("%d record(s) still undelivered at shutdown", remaining)
        return remaining


def api_producer(settings: Settings, **overrides: Any) -> Any:
    """The API's idempotent, acks=all producer.

    Records give up after the delivery timeout, so one answered 503 is unlikely to land
    later; a client that retries with its Idempotency-Key is safe either way (same id).
    """
    config: dict[str, Any] = {
        "message.timeout.ms": max(1000, int(settings.delivery_timeout_seconds * 1000)),
        "logger": logging.getLogger("ingest_api.kafka"),
        **overrides,
    }
    return gk.producer(settings, **config)


def open_delivery(settings: Settings, on_fatal: Callable[[], None] | None = None) -> Delivery:
    """A Delivery with its own API producer, whose error callback reaches the Delivery."""
    owner: list[Delivery] = []

    def on_error(err: KafkaError) -> None:
        if owner:
            owner[0].on_error(err)
        else:
            log.warning("Kafka producer: %s", err.str())

    delivery = Delivery(api_producer(settings, error_cb=on_error), on_fatal)
    owner.append(delivery)
    return delivery


# --- the process's delivery (one producer per gunicorn worker) ---------------------------------

_process: tuple[int, Delivery] | None = None
_process_lock = threading.Lock()


def process_delivery(
    settings: Settings | None = None, on_fatal: Callable[[], None] | None = None
) -> Delivery:
    """This process's Delivery, created on first use (gunicorn's post_fork creates it early).

    Keyed by pid: librdkafka's threads do not survive fork, so a child never reuses its
    parent's producer.
    """
    global _process
    with _process_lock:
        if _process is None or _process[0] != os.getpid():
            _process = (os.getpid(), open_delivery(settings or get_settings(), on_fatal))
            atexit.register(close_process_delivery)
        return _process[1]


def close_process_delivery(timeout: float = 30.0) -> None:
    """Flush and drop this process's producer (gunicorn's worker_exit, or interpreter exit)."""
    global _process
    with _process_lock:
        if _process is not None and _process[0] == os.getpid():
            _process[1].close(timeout)
        _process = None
