"""The rest of the fleet on every instance's board: a read-only mirror of the other partitions.

With two or more location instances each holds some `locations` and `sales` partitions, and
only the holder of a cart's partition judges it (alerts, once per event). The mirror makes the
*view* global, as a stream processor's global table does, while the effects stay partitioned:

- It is a second consumer of the same group id that never subscribes and never commits: it
  is `assign`ed the partitions the instance does not hold (all of them minus the group's
  assignment, and minus the fugitive reports' p0, whose reports every instance reads from
  the `reports` table). So it joins no group and moves no committed offset.
- Each partition starts at the first record of the last LIVE_TTL_SECONDS, like the rebuild.
- Its records go into the same LiveView as replays (`replay=True`): they move carts and
  raise nothing. A record of a cart this instance holds is skipped, under the view's lock,
  so the holder's own records alone decide that cart's jumps.
- On every rebalance the service hands it the new complement (`follow`). Its consumer is used
  from its own thread only.

Its cost is reading the whole fleet's positions on every instance: docs/LOCATIONS.md,
"Scale-out".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition
from prometheus_client import Counter

from consumers.locations.view import Effects, LiveView
from gremio.records import CartPosition, Record, Sale
from gremio.runner import Poison, decode
from gremio.settings import Settings

log = logging.getLogger(__name__)

BATCH = 500
IDLE_SECONDS = 0.5  # with nothing to mirror (a single instance), how often to look again

MIRRORED = Counter(
    "gremio_locations_mirrored_total",
    "Records of partitions held by other instances read into this instance's view "
    "(applied: a position or sale of another instance's cart; skipped: held here, or not a position)",
    ["result"],
)
for _result in ("applied", "skipped"):
    MIRRORED.labels(_result)


class Mirror:
    """Reads the partitions another instance holds into `view`, in a thread of its own."""

    def __init__(
        self,
        view: LiveView,
        settings: Settings,
        group_id: str,
        accepts: Mapping[str, Any],
        holds_cart: Callable[[str], bool],
    ) -> None:
        self.view = view
        self.settings = settings
        self.accepts = accepts
        self.holds_cart = holds_cart
        self.following: frozenset[tuple[str, int]] = frozenset()  # what the consumer is assigned
        self._wanted: frozenset[tuple[str, int]] | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        # The same group id, for the principal's ACLs; never subscribed, never committed.
        self._consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": group_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "fetch.max.bytes": 16 * 1024 * 1024,
                }
            )
        )
        self._thread = threading.Thread(target=self._run, name="live-mirror", daemon=True)

    def start(self) -> Mirror:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(30)
        self._consumer.close()

    def follow(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Mirror these partitions from now on (the service's rebalance callback)."""
        with self._changed:
            self._wanted = frozenset(partitions)
            self._changed.notify_all()

    # --- its thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._reassign()
                if not self.following:
                    with self._changed:
                        self._changed.wait(IDLE_SECONDS)
                    continue
                messages = self._consumer.consume(BATCH, timeout=0.1)
            except KafkaException as exc:  # the broker away: the board keeps what it has
                log.warning("mirror: %s; trying again", exc)
                self._stop.wait(1.0)
                continue
            try:
                self._apply(m for m in messages if m.error() is None)
            except Exception:  # never let the board's other half die quietly: log, count, go on
                log.exception("mirror: %d records not applied", len(messages))
                MIRRORED.labels("skipped").inc(len(messages))

    def _reassign(self) -> None:
        with self._changed:
            wanted, self._wanted = self._wanted, None
        if wanted is None or wanted == self.following:
            return
        since_ms = int((time.time() - self.settings.live_ttl_seconds) * 1000)
        query = [TopicPartition(topic, p, since_ms) for topic, p in sorted(wanted)]
        starts = self._consumer.offsets_for_times(query, timeout=30) if query else []
        for tp in starts:
            if tp.error is not None or tp.offset < 0:
                tp.offset = OFFSET_END  # nothing in the window: only what comes
        self._consumer.assign(starts)
        self.following = wanted
        log.info("mirroring %d partitions held by other instances", len(wanted))

    def _apply(self, messages: Iterable[Any]) -> None:
        records: list[Record] = []
        for msg in messages:
            try:
                records.append(decode(msg, self.accepts))
            except Poison:  # its holder dead-letters it
                MIRRORED.labels("skipped").inc()
        if not records:
            return
        effects = Effects()  # replays raise nothing; the counts are the holder's
        applied = 0
        with self.view.lock:  # the service's rebalance changes what it holds under this lock
            now = self.view.clock()
            for record in records:
                if isinstance(record, CartPosition | Sale) and not self.holds_cart(record.plate):
                    try:
                        self.view.apply_into(effects, record, True, now)
                    except ValueError:
                        continue
                    applied += 1
        MIRRORED.labels("applied").inc(applied)
        MIRRORED.labels("skipped").inc(len(records) - applied)
