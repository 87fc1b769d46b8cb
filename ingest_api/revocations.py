"""Revoked cart tokens, as every API worker knows them (DESIGN §4; issue 14).

`gremio token revoke PLATE` appends {plate, revoked_at} to the compacted topic
`cart_revocations` (key = plate; gremio/tokens.py). Each API process (each gunicorn worker)
runs one background thread with a Kafka consumer that assign()s every partition of that
topic from the beginning, keeps {plate: revoked_at} in memory, and then follows the topic:
a revocation reaches every worker of every instance within a second or two (the poll
timeout is 0.5 s; the contract is 10 s). A token of that plate issued at or before its
revoked_at is refused with 401 (ingest_api/intake.py).

No consumer group: the consumer never subscribes and never commits (it always reads the
whole topic, which compaction keeps at one record per revoked plate). librdkafka insists on
a group.id all the same, so each process gets its own unique one,
`gremio-api-revocations-<host>-<pid>-<random>`, which never joins or commits anything.

The API never reads or writes the database for this: the topic is the record.

When the broker cannot be reached, the API keeps serving with the revocations it already
knows (it could not deliver a cart's record then anyway). A starting worker waits at most
STARTUP_WAIT_SECONDS for the topic to be read to its end before it serves carts, so a fresh
worker does not accept a revoked token; past that it serves with what it has and says so in
/readyz (`revocations`), and catches up as soon as the broker answers.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from gremio import topics as t
from gremio.settings import Settings, get_settings
from gremio.tokens import RevocationError, parse_revocation

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # how long one poll waits: a revocation is applied within about this
METADATA_SECONDS = 30.0  # how often the partition count is checked again (it may grow)
RETRY_SECONDS = 2.0  # after a failed metadata request (broker down, topic missing)
STARTUP_WAIT_SECONDS = 5.0


class Revocations:
    """{plate: revoked_at in ms}: what this process knows. Without a consumer (a stand-in
    producer, unit tests) it knows what it was given and counts as loaded."""

    def __init__(self, revoked: dict[str, int] | None = None) -> None:
        self._revoked: dict[str, int] = dict(revoked or {})
        self.loaded = threading.Event()
        self.loaded.set()
        self.problem: str | None = None

    def revoked_ms(self, plate: str) -> int | None:
        """When this plate's tokens were last revoked (ms since the epoch), or None."""
        return self._revoked.get(plate)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of cart_revocations: a revocation, or a tombstone that lifts one."""
        if value is None:
            if key:
                self._revoked.pop(key.decode("utf-8", "replace"), None)
            return
        plate, revoked_ms = parse_revocation(value)
        self._revoked[plate] = revoked_ms

    def wait_loaded(self, timeout: float) -> bool:
        return self.loaded.wait(timeout)

    def status(self) -> dict[str, Any]:
        """For /readyz: whether the topic has been read to its end, and how many are known."""
        found: dict[str, Any] = {"loaded": self.loaded.is_set(), "known": len(self._revoked)}
        if self.problem:
            found["problem"] = self.problem
        return found

    def close(self) -> None:
        return None


class RevocationWatcher(Revocations):
    """Revocations read from cart_revocations by a consumer on a background thread."""

    def __init__(self, settings: Settings, poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__()
        self.loaded.clear()
        self.problem = "not read yet"
        self.poll_seconds = poll_seconds
        self._settings = settings
        self._running = True
        self._assigned: set[int] = set()
        self._unread: set[int] = set()  # partitions not yet read to their end once
        self._next_metadata = 0.0  # when to look at the topic's partitions again
        group = f"gremio-api-revocations-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._consumer = Consumer(
            settings.kafka_config(**{
                "group.id": group,
                "client.id": "gremio-api-revocations",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 250,
                "error_cb": self._on_error,
                "logger": logging.getLogger("ingest_api.kafka.revocations"),
            })
        )  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="cart-revocations", daemon=True)
        self._thread.start()

    # --- the background thread -----------------------------------------------------------

    def _run(self) -> None:
        while self._running:
            try:
                if time.monotonic() >= self._next_metadata:
                    ok = self._assign_partitions()
                    self._next_metadata = time.monotonic() + (METADATA_SECONDS if ok else RETRY_SECONDS)
                if not self._assigned:
                    time.sleep(min(RETRY_SECONDS, max(0.0, self._next_metadata - time.monotonic())))
                    continue
                msg = self._consumer.poll(self.poll_seconds)
                if msg is not None:
                    self._handle(msg)
            except Exception as exc:  # the thread must outlive anything one record or poll does
                log.exception("cart revocations: reading failed")
                self.problem = f"reading failed: {exc}"
                time.sleep(RETRY_SECONDS)
        self._consumer.close()

    def _assign_partitions(self) -> bool:
        """Assign, from the beginning, every partition not assigned yet; False to retry soon."""
        name = t.CART_REVOCATIONS.name
        try:
            meta = self._consumer.list_topics(name, timeout=5).topics.get(name)
        except KafkaException as exc:
            self.problem = f"Kafka unreachable: {exc.args[0].str()}"
            return False
        if meta is None or meta.error is not None:
            why = meta.error.str() if meta is not None and meta.error is not None else "unknown topic"
            self.problem = f"cannot read topic {name} ({why}; `gremio topics` creates it)"
            return False
        new = sorted(set(meta.partitions) - self._assigned)
        if new:
            self._consumer.incremental_assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in new])
            self._assigned.update(new)
            self._unread.update(new)
        if self.loaded.is_set():
            self.problem = None  # the broker answers again
        return True

    def _handle(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._unread.discard(msg.partition())
                if not self._unread and not self.loaded.is_set():
                    self.loaded.set()
                    log.info("cart revocations: %d known", len(self._revoked))
                self.problem = None
            else:
                self.problem = err.str()
                log.warning("cart revocations: %s", err.str())
            return
        try:
            self.apply(msg.key(), msg.value())
            if self.loaded.is_set():  # a new one (the first read only counts them)
                log.info(
                    "cart revocations: worker %d applied %s's revocation (%s[%d]@%d)",
                    os.getpid(), (msg.key() or b"").decode("utf-8", "replace"),
                    msg.topic(), msg.partition(), msg.offset(),
                )  # fmt: skip
        except RevocationError as exc:
            log.warning(
                "cart revocations: skipped the record at %s[%d]@%d: %s",
                msg.topic(), msg.partition(), msg.offset(), exc,
            )  # fmt: skip
        self.problem = None

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("cart revocations consumer failed: %s", err.str())
        elif err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            log.debug("cart revocations: %s", err.str())
        else:
            log.warning("cart revocations: %s", err.str())
        if err.code() != KafkaError._TRANSPORT:
            self.problem = err.str()
            self._next_metadata = min(self._next_metadata, time.monotonic() + RETRY_SECONDS)

    # --- shutdown ----------------------------------------------------------------------------

    def close(self) -> None:
        self._running = False
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


# --- the process's revocations (one consumer per gunicorn worker) ------------------------------

_process: tuple[int, RevocationWatcher] | None = None
_process_lock = threading.Lock()


def process_revocations(settings: Settings | None = None) -> RevocationWatcher:
    """This process's watcher, started on first use (gunicorn's post_fork starts it early).

    Keyed by pid: librdkafka's threads do not survive fork, so a child starts its own.
    """
    global _process
    with _process_lock:
        if _process is None or _process[0] != os.getpid():
            _process = (os.getpid(), RevocationWatcher(settings or get_settings()))
            atexit.register(close_process_revocations)
        return _process[1]


def close_process_revocations() -> None:
    global _process
    with _process_lock:
        if _process is not None and _process[0] == os.getpid():
            _process[1].close()
        _process = None
