"""The stock replenishment service (DESIGN §5): sales in, refill orders out.

Per batch of sales: one PostgreSQL transaction (orders and each cart's newest stock),
then the new orders' `replenishments` records, acknowledged by the broker, then the
outbox mark; the runner commits the offsets after that. With a backlog waiting, the
StockRunner (consumers/stock/runner.py) hands over a run of up to
STOCK_MAX_BATCHES_PER_COMMIT batches: each is decided on its own, in order, and the
run shares the transaction, the produce flush and the offset commit. A crash anywhere in
between redelivers the batch, which then changes nothing in the table and publishes
whatever was committed but not yet published. docs/STOCK.md tells the whole story.

A sale the database refuses (a permanent failure, gremio.failures) fails its batch's
transaction; the runner then splits the batch (failures.isolate), each part its own
transaction in order, and dead-letters only the refused sale. A transient failure (the
database restarting) has the runner consume the batch again after a backoff: the store
opens a new connection, and the retry changes nothing that was committed before.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from prometheus_client import Counter, Histogram, start_http_server

from consumers.stock.notices import Notices
from consumers.stock.rules import Rules
from consumers.stock.runner import StockRunner
from consumers.stock.store import Applied, OrderStore
from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.logs import setup_logging
from gremio.records import Record, Sale
from gremio.runner import BaseService, Envelope
from gremio.settings import Settings, get_settings

log = logging.getLogger(__name__)

OPENED = Counter("gremio_stock_orders_opened_total", "Replenishment orders opened")
CLOSED = Counter("gremio_stock_orders_closed_total", "Replenishment orders closed as delivered")
REPUBLISHED = Counter(
    "gremio_stock_orders_republished_total",
    "Orders published again after a run was interrupted between the database commit and the record",
)
IGNORED = Counter(
    "gremio_stock_sales_ignored_total",
    "Sales that changed nothing: older than the cart's newest sale, or already applied",
    ["reason"],
)
BATCH_SECONDS = Histogram(
    "gremio_stock_batch_seconds",
    "Time to make one batch, or one run of batches, durable: the transaction and the records' acknowledgement",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

BATCHES_PER_COMMIT = Histogram(
    "gremio_stock_batches_per_commit",
    "Batches made durable by one transaction, produce flush and offset commit",
    buckets=(1, 2, 5, 10, 20, 50, 100),
)

PRUNE_EVERY_SECONDS = 3600.0


class StockService(BaseService):
    """Sales → replenishment orders, for the shared runner."""

    topics = (t.SALES.name,)
    accepts: ClassVar[Mapping[str, type[Record]]] = {Sale.type_name: Sale}

    def __init__(
        self,
        settings: Settings | None = None,
        group_id: str | None = None,
        notices: Notices | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.group_id = group_id or self.settings.stock_group_id
        self.batch_size = self.settings.stock_batch_size
        self.batch_timeout = self.settings.stock_batch_flush_seconds
        self.max_batches_per_commit = self.settings.stock_max_batches_per_commit  # StockRunner
        self.rules = Rules.from_settings(self.settings)
        self.notices = notices or Notices(timezone=self.settings.guild_timezone)
        self.crash_point = self.settings.stock_test_crash_point
        self.store = OrderStore(self.settings)
        # Each batch waits for its records' acknowledgement at once: lingering would only add delay.
        self.producer = gk.producer(self.settings, **{"linger.ms": 0})
        self._next_prune = 0.0

    def process(self, batch: list[Envelope]) -> None:
        """One transaction, then the new orders' records: safe to run again on part of a batch.

        Given more than one batch's records (StockRunner, with a backlog waiting), each run of
        STOCK_BATCH_SIZE records is decided as its own batch, in order, and all of them are
        made durable together.
        """
        started = time.perf_counter()
        sales = [envelope.record for envelope in batch if isinstance(envelope.record, Sale)]
        size = self.batch_size
        batches = [sales[i : i + size] for i in range(0, len(sales), size)]
        applied = self.store.apply_batches(batches, self.rules, datetime.now(UTC))
        BATCHES_PER_COMMIT.observe(len(batches))
        self._crash_here("after_db_commit")
        if applied.unpublished:
            gk.produce_all(
                self.producer,
                [gk.Outgoing.of(order, t.REPLENISHMENTS.name, order.plate) for order in applied.unpublished],
            )
            self._crash_here("after_produce")
            self.store.published([order.id for order in applied.unpublished])
        BATCH_SECONDS.observe(time.perf_counter() - started)
        self._report(applied)

    def tick(self, now: float) -> None:
        """Hourly, forget applied sale ids past their retention."""
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_SECONDS
        forgotten = self.store.prune(self.settings.stock_dedupe_retention_hours * 3600)
        if forgotten:
            log.info(
                "forgot %d applied sale ids older than %g h",
                forgotten,
                self.settings.stock_dedupe_retention_hours,
            )

    @property
    def consumer_config(self) -> dict[str, Any]:
        """A killed instance's partitions move to another within the session timeout."""
        session_ms = int(self.settings.stock_session_timeout_seconds * 1000)
        return {"session.timeout.ms": session_ms, "heartbeat.interval.ms": session_ms // 3}

    def close(self) -> None:
        self.producer.flush(10)
        self.store.close()

    def _report(self, applied: Applied) -> None:
        decision = applied.decision
        OPENED.inc(len(applied.opened))
        CLOSED.inc(len(decision.delivered))
        REPUBLISHED.inc(len(applied.republish))
        IGNORED.labels("stale").inc(len(decision.stale))
        IGNORED.labels("repeated").inc(len(decision.repeated))
        opened = {order.id for order in applied.opened}
        for batch in applied.batches or [decision]:  # batch by batch, as they were decided
            for order in batch.opened:
                if order.id in opened:
                    self.notices.opened(order)
            for delivery in batch.delivered:
                self.notices.delivered(delivery)
        for order in applied.republish:
            log.warning("re-published order %s (cart %s) after an interrupted run", order.id, order.plate)

    def _crash_here(self, point: str) -> None:
        if self.crash_point == point:
            log.warning("STOCK_TEST_CRASH_POINT=%s: killing this process now", point)
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    """`python -m consumers.stock`: metrics on STOCK_METRICS_PORT, then the run loop."""
    setup_logging()
    settings = get_settings()
    db.wait_for_db(settings, timeout=120)
    start_http_server(settings.stock_metrics_port, addr=settings.bind_host)
    log.info("metrics on http://%s:%d/metrics", settings.bind_host, settings.stock_metrics_port)
    service = StockService(settings)
    try:  # gremio.runner.run_service, on the runner that groups a backlog's batches
        runner = StockRunner(service, settings)
        runner.install_signal_handlers()
        return runner.run()
    finally:
        service.close()
