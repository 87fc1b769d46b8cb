"""The live-location service on the shared run loop (DESIGN §5, live locations).

Group `location-tracker` reads `locations` (positions, and fugitive reports on p0) and
`sales` (each sale carries its cart's position). Per batch: the plates that would raise
`unregistered_cart` are looked up in `members` (one query, only when there are any), so a
member approved before a position arrived is known; `view.apply`, the view's stateful
update, moves the carts and decides the alerts; new alerts and reports go to PostgreSQL and to the `alerts`
topic; then the runner commits. See docs/LOCATIONS.md for the rules and scale-out.

**Rebuild.** On every assignment each partition is sought back to the first record of the
last LIVE_TTL_SECONDS (or to the committed offset, if that is earlier, so nothing is
skipped). Records below the committed offset were processed before: they only rebuild the
view, and raise nothing again.

**Ownership.** A cart belongs to the instance holding its `locations` partition: only that
instance judges it and raises its alerts. A sale read by an instance that does not hold that
partition is forwarded there as a CartPosition (id derived from the sale). **One view.** Every
instance also mirrors the partitions it does not hold into its view, raising nothing
(consumers/locations/mirror.py), so `/v1/live`, the board and a fugitive report's nearest
cart see the whole fleet whichever instance answers.

**Failures** (gremio.failures). `view.apply` changes the view, so a batch is never run twice to
find a bad record: `process` returns the records refused for good (the handler's
ValueError, or rows PostgreSQL refuses, found by writing the batch again one record at a
time) and the runner dead-letters them. On a transient failure (PostgreSQL restarting) the
alerts and reports not yet written are kept and written with the runner's next attempt. A
transient failure of the members lookup comes before the view changes: the whole batch is
retried, and no alert is raised for want of an answer.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar, get_args
from zoneinfo import ZoneInfo

import psycopg
from confluent_kafka import OFFSET_STORED, Consumer, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge

from consumers.locations.mirror import Mirror
from consumers.locations.store import LiveStore
from consumers.locations.view import (
    Effects,
    LiveView,
    Raised,
    Rules,
    SeenReport,
    position_from_sale,
)
from consumers.locations.wire import PositionDecoder
from gremio import db, failures
from gremio import kafka as gk
from gremio import topics as t
from gremio.failures import Failure
from gremio.logs import PersonalDataFilter, setup_logging
from gremio.records import AlertKind, CartPosition, FugitiveReport, Sale, now_utc
from gremio.runner import BaseService, Envelope, run_service
from gremio.settings import Settings, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

FEED_REFRESH_SECONDS = 2.0  # reports and alerts of other instances, from the tables
EXPIRE_SECONDS = 1.0
SUMMARY_SECONDS = 30.0

POSITIONS = Counter(
    "gremio_locations_positions_total",
    "Position updates processed (applied: newest for its cart; stale: older, ignored; "
    "forwarded: a sale's position sent to the instance that holds its cart)",
    ["result"],
)
ALERTS = Counter("gremio_locations_alerts_total", "Alerts raised", ["kind"])
REPORTS = Counter("gremio_locations_reports_total", "Fugitive reports processed")
LIVE_CARTS = Gauge("gremio_locations_live_carts", "Carts with a position in the last LIVE_TTL_SECONDS")
MEMBER_LOOKUPS = Counter(
    "gremio_locations_member_lookups_total",
    "Batches whose would-be unregistered_cart plates were looked up in `members` (one query each)",
)
MEMBERS_LEARNED = Counter(
    "gremio_locations_members_learned_total",
    "Plates found in `members` by those lookups: approved since the last members refresh",
)
for _kind in get_args(AlertKind):
    ALERTS.labels(_kind)
for _result in ("applied", "stale", "forwarded"):
    POSITIONS.labels(_result)


def rebuild_offset(committed: int, at_time: int, end: int) -> int:
    """Where to start a partition: the first record of the TTL window, or earlier if unprocessed.

    `committed` is the group's committed offset (negative: none); `at_time` is the first
    offset at or after now - TTL (negative: every record is older); `end` is the high
    watermark, used as a real offset so a record landing during the assignment is read.
    """
    if at_time < 0:
        return committed if committed >= 0 else end
    return min(committed, at_time) if committed >= 0 else at_time


class LocationService(BaseService):
    """Live view, alerts and fugitive reports from `locations` and `sales`."""

    # Positions through the fast decoder (wire.py): the same records, or pydantic's own decision.
    accepts: ClassVar[dict[str, Any]] = {
        "CartPosition": PositionDecoder,
        "FugitiveReport": FugitiveReport,
        "Sale": Sale,
    }
    batch_size = 500
    splittable = False  # process() changes the view: never run again on part of a batch
    # A live board: small batches, short waits. The runner's consume() waits up to its
    # poll interval for a batch to fill, so that is kept short as well.
    batch_timeout = 0.02
    poll_interval = 0.02

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        group_id: str | None = None,
        locations_topic: str = t.LOCATIONS.name,
        sales_topic: str = t.SALES.name,
        log_summary: bool = False,
    ) -> None:
        self.settings = settings or get_settings()
        self.group_id = group_id or self.settings.live_group_id
        self.locations_topic = locations_topic
        self.topics = (locations_topic, sales_topic)
        self.rules = Rules.from_settings(self.settings)
        self.view = LiveView(self.rules)
        LIVE_CARTS.set_function(self.view.live_count)  # one service per process: its view
        self.store = LiveStore(self.settings)
        self.log_summary = log_summary
        self._producer = gk.producer(self.settings)
        self._location_partitions = t.LOCATIONS.partitions
        self._sales_partitions = t.SALES.partitions
        self._held: set[int] = set()  # locations partitions this instance holds
        self._replay_until: dict[tuple[str, int], int] = {}
        self.rebuild_offsets: dict[tuple[str, int], int] = {}  # where the last assignment started
        self._due: dict[str, float] = {}
        # Effects handled but not yet written (a transient failure), and the record behind
        # each alert and report row (by row id), kept until they are written.
        self._carried = Effects()
        self._sources: dict[uuid.UUID, Envelope] = {}
        self._seeded = False  # suppression memory read from the alerts table since the last assignment
        self.mirror = Mirror(self.view, self.settings, self.group_id, self.accepts, self.holds_cart)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> LocationService:
        """Load members, the suppression memory and recent reports/alerts before consuming."""
        self._refresh_members()
        self._refresh_feeds()
        self.mirror.start()
        return self

    def close(self) -> None:
        self.mirror.stop()
        self._producer.flush(10)
        self.store.close()

    @property
    def consumer_config(self) -> dict[str, Any]:
        return {"session.timeout.ms": int(self.settings.live_session_timeout_seconds * 1000)}

    def holds_reports(self) -> bool:
        return t.FUGITIVE_PARTITION in self._held

    def holds_cart(self, plate: str) -> bool:
        return t.position_partition(plate, self._location_partitions) in self._held

    # --- the runner's hooks ---------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Seek each partition to now - TTL (or its unprocessed records) and assign.

        With the default eager assignors `partitions` is the whole new assignment. Nothing
        may escape a confluent-kafka callback cleanly, so failures here degrade instead:
        no rebuild (start at the committed offsets), or suppression re-read before the
        next batch.
        """
        before = self._held
        self._held = {p.partition for p in partitions if p.topic == self.locations_topic}
        try:
            self._seek_to_window(consumer, partitions)
        except KafkaException as exc:
            log.warning("no rebuild this time, carrying on from the committed offsets: %s", exc)
            for p in partitions:
                p.offset = OFFSET_STORED
            self.rebuild_offsets, self._replay_until = {}, {}
        # The carts of partitions taken over are rebuilt from their own partitions' window (the
        # mirror may have moved them further): their jumps are judged against their own records.
        taken = self._held - before
        n = self._location_partitions
        self.view.keep_carts(lambda plate: t.position_partition(plate, n) not in taken)
        locations, sales = self.topics
        assigned = {(p.topic, p.partition) for p in partitions}
        self.mirror.follow(
            [(locations, p) for p in range(n) if p != t.FUGITIVE_PARTITION and p not in self._held]
            + [(sales, p) for p in range(self._sales_partitions) if (sales, p) not in assigned]
        )
        self._seeded = False
        self._safely(self._refresh_feeds)
        consumer.assign(partitions)

    def _seek_to_window(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        since_ms = int((time.time() - self.settings.live_ttl_seconds) * 1000)
        committed = {(p.topic, p.partition): p.offset for p in consumer.committed(partitions, timeout=30)}
        query = [TopicPartition(p.topic, p.partition, since_ms) for p in partitions]
        at_time = {}
        for p in consumer.offsets_for_times(query, timeout=30):
            if p.error is not None:
                log.warning("no offset by time for %s[%d]: %s", p.topic, p.partition, p.error)
            at_time[(p.topic, p.partition)] = -1 if p.error is not None else p.offset
        # Asked of the producer, not the consumer: the consumer's list_topics() inside its own
        # rebalance callback clears confluent-kafka's per-call state, and the next callback
        # of that consume() call (the runner's stats_cb) then aborts the process
        # (CallState_get assertion, confluent-kafka 2.16; tests/reliability found it).
        meta = self._producer.list_topics(timeout=30).topics
        locations, sales = self.topics
        self._location_partitions = (
            len(getattr(meta.get(locations), "partitions", ())) or self._location_partitions
        )
        self._sales_partitions = len(getattr(meta.get(sales), "partitions", ())) or self._sales_partitions
        for p in partitions:
            key = (p.topic, p.partition)
            start, seen = committed.get(key, -1), at_time.get(key, -1)
            end = consumer.get_watermark_offsets(p, timeout=30)[1] if start < 0 and seen < 0 else -1
            p.offset = rebuild_offset(start, seen, end)
        self.rebuild_offsets = {(p.topic, p.partition): p.offset for p in partitions}
        self._replay_until = {key: offset for key, offset in committed.items() if offset >= 0}
        log.info(
            "rebuilding the live view from %s",
            ", ".join(f"{tp}[{p}]@{o}" for (tp, p), o in sorted(self.rebuild_offsets.items())),
        )

    def replayed(self, msg: Message) -> bool:
        """Below the committed offset: read again for the rebuild (its poison was dead-lettered)."""
        return msg.offset() < self._replay_until.get((msg.topic(), msg.partition()), -1)

    def process(self, batch: list[Envelope]) -> list[tuple[Envelope, str]]:
        """Handle the batch into the view, make its alerts and reports durable; the refused records.

        `view.apply` changes the view, so the runner must not run a batch (or part of it) twice
        to find a refused record (`splittable = False`): a handler's ValueError refuses its
        record here, and rows the database refuses refuse the records that made them. On
        a transient failure the effects not yet written are kept and written with the
        next batch: the records read again are then stale in the view and add nothing.
        """
        if not self._seeded:
            # The suppression memory must hold other instances' alerts before raising any.
            self._refresh_feeds()
        now = self.view.clock()  # the batch is judged at one time, the lookup's
        replay_until = self._replay_until
        batch_replays = [env.offset < replay_until.get((env.topic, env.partition), -1) for env in batch]
        self._learn_members(batch, batch_replays, now)
        effects = Effects(alerts=list(self._carried.alerts), reports=list(self._carried.reports))
        refused: list[tuple[Envelope, str]] = []
        forward: list[CartPosition] = []
        reports: list[tuple[Envelope, bool]] = []
        with self.view.lock:  # one acquisition per batch (apply_into takes it again, re-entrantly)
            for env, replay in zip(batch, batch_replays, strict=True):
                record = env.record
                if isinstance(record, FugitiveReport):
                    # Reports last: a report's nearest cart then sees positions that arrived with it.
                    reports.append((env, replay))
                    continue
                if isinstance(record, Sale) and not self.holds_cart(record.plate):
                    if not replay:
                        forward.append(position_from_sale(record))
                    continue
                self._apply(effects, env, replay, now, refused)
            for env, replay in reports:
                self._apply(effects, env, replay, now, refused)
        # Carried effects and the same records read again raise the same rows: once each.
        effects.alerts = _first_each(effects.alerts, lambda r: r.alert.id)
        effects.reports = _first_each(effects.reports, lambda r: r.id)
        self._carried = Effects(alerts=effects.alerts, reports=effects.reports)
        if forward:
            self._forward(forward)
        fresh: list[Raised] = []
        if effects.alerts or effects.reports:
            fresh, rows_refused = self._write(effects)
            refused += rows_refused
        self._carried, self._sources = Effects(), {}
        POSITIONS.labels("applied").inc(effects.applied)
        POSITIONS.labels("stale").inc(effects.stale)
        REPORTS.inc(len(effects.reports))
        for raised in fresh:
            alert = raised.alert
            ALERTS.labels(alert.kind).inc()
            log.warning("ALERT %s %s: %s", alert.kind, alert.plate or "-", alert.detail)
        return refused

    def _apply(
        self,
        effects: Effects,
        env: Envelope,
        replay: bool,
        now: datetime,
        refused: list[tuple[Envelope, str]],
    ) -> None:
        """One record into the view and `effects`; a handler's ValueError refuses it."""
        alerts, reports = len(effects.alerts), len(effects.reports)
        try:
            self.view.apply_into(effects, env.record, replay, now)
        except ValueError as exc:
            if not replay:  # a replayed record's refusal was dead-lettered the first time
                refused.append((env, failures.reason(exc)))
            return
        # Remember which record made each alert and report row, to refuse it if the row is.
        for raised in effects.alerts[alerts:]:
            self._sources[raised.alert.id] = env
        for report in effects.reports[reports:]:
            self._sources[report.id] = env

    def _learn_members(self, batch: Sequence[Envelope], replays: Sequence[bool], now: datetime) -> None:
        """Look up in `members` the plates that would raise `unregistered_cart` at `now`, and
        the unknown ones near the batch's fugitive reports (`view.unknown_near`).

        One query, and only when an alert would be raised (a cart already alerted for is
        suppressed, so it costs nothing while it keeps pinging). It runs after the batch
        arrived, so an approval committed before a position was received is always found.
        A transient failure propagates before the view changes: the runner retries the
        whole batch, and no alert is raised because PostgreSQL was away.
        """
        judged = [
            env.record
            for env, replay in zip(batch, replays, strict=True)
            if not replay
            and (
                isinstance(env.record, CartPosition)
                or (isinstance(env.record, Sale) and self.holds_cart(env.record.plate))
            )
        ]
        reports = [
            env.record
            for env, replay in zip(batch, replays, strict=True)
            if not replay and isinstance(env.record, FugitiveReport)
        ]
        plates = sorted({*self.view.unknown_plates(judged, now), *self.view.unknown_near(reports, now)})
        if not plates:
            return
        found = self.store.members_among(plates)
        MEMBER_LOOKUPS.inc()
        if found:
            MEMBERS_LEARNED.inc(len(found))
            self.view.add_members(found)
            log.info(
                "%d of %d unknown plates are members approved since the last refresh", len(found), len(plates)
            )

    def tick(self, now: float) -> None:
        if self._is_due("expire", now, EXPIRE_SECONDS):
            for cart in self.view.expire():
                log.info(
                    "cart %s silent for %.0f s: off the board", cart.plate, self.rules.ttl.total_seconds()
                )
        if self._is_due("members", now, self.settings.members_refresh_seconds):
            self._safely(self._refresh_members)
        if self._is_due("feeds", now, FEED_REFRESH_SECONDS):
            self._safely(self._refresh_feeds)
        if self.log_summary and self._is_due("summary", now, SUMMARY_SECONDS):
            snap = self.view.snapshot()
            log.info(
                "live: %d carts, %d fugitive reports and %d alerts in the last %.0f min",
                len(snap["carts"]), len(snap["reports"]), len(snap["alerts"]),
                self.rules.report_window.total_seconds() / 60,
            )  # fmt: skip

    # --- effects --------------------------------------------------------------------------

    def _write(self, effects: Effects) -> tuple[list[Raised], list[tuple[Envelope, str]]]:
        """The batch's rows in one transaction; if refused, each source record's on its own."""
        try:
            return self.store.write(effects, self._publish), []
        except Exception as exc:
            if failures.classify(exc) is not Failure.PERMANENT:
                raise
            log.warning(
                "PostgreSQL refused a batch's alerts or reports (%s): writing them one record at a time",
                failures.reason(exc),
            )
        sources: dict[tuple[str, int, int] | None, Envelope] = {}
        groups: dict[tuple[str, int, int] | None, Effects] = {}
        rows: list[tuple[uuid.UUID, Raised | SeenReport]] = [(r.id, r) for r in effects.reports]
        rows += [(r.alert.id, r) for r in effects.alerts]
        for row_id, row in rows:
            env = self._sources.get(row_id)
            key = None if env is None else (env.topic, env.partition, env.offset)
            if env is not None:
                sources[key] = env
            group = groups.setdefault(key, Effects())
            if isinstance(row, Raised):
                group.alerts.append(row)
            else:
                group.reports.append(row)
        fresh, refused = self.store.write_each(list(groups.items()), self._publish)
        out: list[tuple[Envelope, str]] = []
        for key, exc in refused:
            if key is None:
                log.error("PostgreSQL refused rows of no known record, left out: %s", failures.reason(exc))
            else:
                out.append((sources[key], failures.reason(exc)))
        return fresh, out

    def _forward(self, positions: Sequence[CartPosition]) -> None:
        """Send sales' positions to the `locations` partition of their carts (scale-out only)."""
        gk.produce_all(
            self._producer,
            [
                gk.Outgoing.of(
                    p, self.locations_topic, p.plate, t.position_partition(p.plate, self._location_partitions)
                )
                for p in positions
            ],
        )
        POSITIONS.labels("forwarded").inc(len(positions))

    def _publish(self, raised: Sequence[Raised]) -> None:
        gk.produce_all(
            self._producer,
            [gk.Outgoing.of(r.alert, t.ALERTS.name, r.key) for r in raised],
        )

    # --- periodic work ----------------------------------------------------------------------

    def _refresh_members(self) -> None:
        self.view.set_members(self.store.members())

    def _refresh_feeds(self) -> None:
        """Suppression memory, and the reports and alerts every instance shows, from the tables."""
        now = now_utc()
        self.view.seed_suppression(self.store.suppression(now - self.rules.suppress))
        self._seeded = True
        since = now - self.rules.report_window
        self.view.merge_reports(self.store.recent_reports(since))
        self.view.merge_alerts(self.store.recent_alerts(since, self.rules.recent_alerts))

    def _is_due(self, what: str, now: float, every: float) -> bool:
        if now < self._due.get(what, 0.0):
            return False
        self._due[what] = now + every
        return True

    def _safely(self, refresh: Any) -> None:
        try:
            refresh()
        except psycopg.Error as exc:
            log.warning("PostgreSQL unavailable, keeping the last known data: %s", exc)
            self.store.close()


def _first_each(items: Sequence[T], key: Callable[[T], object]) -> list[T]:
    """The items in order, without later ones of the same key."""
    first: dict[object, T] = {}
    for item in items:
        first.setdefault(key(item), item)
    return list(first.values())


def main() -> int:
    """`python -m consumers.locations`: the board in a terminal, log lines otherwise."""
    from consumers.locations.board import Board
    from consumers.locations.web import create_app
    from gremio.web.server import HttpServer

    settings = get_settings()
    settings.require("staff_password_hash")  # the live map's staff login (web.py)
    console = None
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console()
        handler = RichHandler(console=console, show_path=False)
        handler.addFilter(PersonalDataFilter())
        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    else:
        setup_logging()
    gk.wait_for_broker(settings)
    db.wait_for_db(settings)
    service = LocationService(settings, log_summary=console is None).start()
    server = HttpServer(create_app(service.view), settings.bind_host, settings.live_port).start()
    board = Board(service.view, console, ZoneInfo(settings.guild_timezone)) if console else None
    with board or contextlib.nullcontext():
        return run_service(service, settings, then=[server.stop])
