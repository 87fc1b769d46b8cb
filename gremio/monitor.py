"""`python -m gremio.monitor`: what Prometheus cannot scrape from the services themselves.

A stopped consumer exports nothing, yet its lag is what the operators need. The monitor asks
the broker instead (docs/OPERATIONS.md, "Monitoring"), every MONITOR_INTERVAL_SECONDS:

* every watched group's **lag** per partition: the end offset less the group's committed
  offset (or the partition's start, if the group never committed), from the admin API;
* the **age of the oldest unconsumed record**: the timestamp of the record at the committed
  offset, found by the broker's offsets-by-time lookup (a binary search over time, all
  partitions in one request per step). The monitor reads no record, so its principal needs
  DESCRIBE only and never holds a member's RUT;
* every topic's **end offsets** (records per topic), the brokers in the metadata, and the
  under-replicated and offline partitions;
* the **newest daily report** on disk (REPORTS_DIR/daily/D.csv) and when the next one is due;
* **Airflow's health** (its /api/v2/monitor/health, which needs no login).

It also serves Alertmanager's webhook, POST /v1/alertmanager with a bearer token
(ALERTMANAGER_WEBHOOK_TOKEN): each notification becomes an `ops` alert in the `alerts` table
and on the `alerts` topic (gremio/alerts.py), so `gremio watch` and the live map show it.
Ids are derived from Alertmanager's fingerprint, start and status: a repeat or a retried
POST adds nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gremio import topics as t
from gremio.records import Alert, now_utc
from gremio.safetext import printable
from gremio.settings import Settings, get_settings

log = logging.getLogger(__name__)

Mode = Literal["stream", "daily", "asset"]


@dataclass(frozen=True)
class WatchedGroup:
    group: str
    topics: tuple[str, ...]
    # stream: a service that should keep up; daily: a drain that runs once a day (its lag grows
    # all day by design); asset: members_premium, run on each premium application.
    mode: Mode


# Airflow's drains, by the group ids their DAGs pass to the drain operator (dags/*.py), and
# the premium watcher (gremio/settings.py, airflow_connections).
DRAIN_GROUPS = (
    WatchedGroup("airflow-sales-daily", (t.SALES.name,), "daily"),
    WatchedGroup("airflow-members-monthly", (t.MEMBERS.name,), "daily"),
    WatchedGroup("airflow-members-premium", (t.MEMBERS.name,), "asset"),
    # members_premium's AssetWatcher: the triggerer's consumer (the kafka_members_watch connection).
    WatchedGroup("airflow-members-premium-watch", (t.MEMBERS.name,), "asset"),
)


def watched_groups(settings: Settings) -> tuple[WatchedGroup, ...]:
    return (
        WatchedGroup(settings.stock_group_id, (t.SALES.name,), "stream"),
        WatchedGroup(settings.live_group_id, (t.LOCATIONS.name, t.SALES.name), "stream"),
        *DRAIN_GROUPS,
    )


# --- the broker's side -------------------------------------------------------------------------

TP = tuple[str, int]
NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: the group has committed nothing there
# How far back the timestamp search looks; an older record's age is reported as this.
AGE_HORIZON = timedelta(days=7)


@dataclass(frozen=True)
class GroupLag:
    group: str
    mode: Mode
    topic: str
    partition: int
    lag: int
    age_seconds: float


@dataclass
class Snapshot:
    taken_at: float = 0.0
    end_offsets: dict[TP, int] = field(default_factory=dict)
    lags: list[GroupLag] = field(default_factory=list)
    brokers: int | None = None
    under_replicated: int | None = None
    offline: int | None = None
    report_day_end: float | None = None
    airflow: dict[str, bool] = field(default_factory=dict)
    dag_seconds: dict[str, float] = field(default_factory=dict)


def consumed_from(committed: int, start: int, end: int) -> int:
    """Where a group would read next: its committed offset, or the partition's start when it
    committed nothing or retention deleted what it had not read; never past the end."""
    if committed < 0 or committed < start:
        committed = start
    return min(committed, end)


class Broker:
    """The admin API's view: offsets, committed offsets, record times by offset."""

    def __init__(self, settings: Settings, admin: Any | None = None) -> None:
        from gremio import kafka as gk

        self.settings = settings
        self.admin = admin or gk.admin(settings)
        # (topic, partition, offset) -> the record's timestamp (ms): found once per offset.
        self._times: dict[tuple[str, int, int], int] = {}

    def partitions(self, names: Iterable[str], timeout: float = 5.0) -> tuple[list[TP], int, int, int]:
        """Every partition of topics `names`, and the broker count, under-replicated and
        offline partitions (one metadata request)."""
        from gremio.stack.kafka_cluster import leadership_of

        meta = self.admin.list_topics(timeout=timeout)
        state = leadership_of(meta, internal=False)
        found = [
            (name, pid)
            for name in dict.fromkeys(names)
            if name in meta.topics
            for pid in sorted(meta.topics[name].partitions)
        ]
        return found, len(state.brokers), len(state.under_replicated), len(state.offline)

    def offsets(self, partitions: Iterable[TP], spec: Any, timeout: float = 5.0) -> dict[TP, int]:
        """The offset `spec` (OffsetSpec.latest(), ...) names in each partition."""
        return self._list_offsets(dict.fromkeys(partitions, spec), timeout)

    def _list_offsets(self, specs: Mapping[TP, Any], timeout: float) -> dict[TP, int]:
        from confluent_kafka import TopicPartition

        if not specs:
            return {}
        asked = {TopicPartition(topic, p): spec for (topic, p), spec in specs.items()}
        futures = self.admin.list_offsets(asked, request_timeout=timeout)
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def committed(self, group: str, partitions: Iterable[TP], timeout: float = 5.0) -> dict[TP, int]:
        from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for topic, p in partitions])
        futures = self.admin.list_consumer_group_offsets([request], request_timeout=timeout)
        answer = futures[group].result()
        failed = [tp.error for tp in answer.topic_partitions if tp.error]
        if failed:  # NOT_COORDINATOR, say: unknown is not "never committed"
            raise KafkaException(failed[0])
        return {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions}

    def record_times(self, at: Mapping[TP, int], now_ms: int, timeout: float = 5.0) -> dict[TP, int]:
        """The timestamp (ms) of the record at each partition's offset, to the second.

        The broker answers "the first offset whose timestamp is at least T"; for a record at
        offset c that is at most c exactly when T is at most c's timestamp (timestamps grow
        along a partition: the producer's clock at send). So a bisection over T, every
        partition in one request per step, ~20 steps over AGE_HORIZON.
        """
        from confluent_kafka.admin import OffsetSpec

        found: dict[TP, int] = {}
        lo: dict[TP, int] = {}
        hi: dict[TP, int] = {}
        for tp, offset in at.items():
            cached = self._times.get((*tp, offset))
            if cached is not None:
                found[tp] = cached
            else:
                lo[tp], hi[tp] = now_ms - int(AGE_HORIZON.total_seconds() * 1000), now_ms + 1000
        while lo:
            mids = {tp: (lo[tp] + hi[tp]) // 2 for tp in lo}
            answers = self._list_offsets(
                {tp: OffsetSpec.for_timestamp(ms) for tp, ms in mids.items()}, timeout
            )
            for tp, mid in mids.items():
                first = answers[tp]
                if 0 <= first <= at[tp]:
                    lo[tp] = mid
                else:
                    hi[tp] = mid
                if hi[tp] - lo[tp] <= 1000:
                    found[tp] = lo[tp]
                    self._times[(*tp, at[tp])] = lo[tp]
                    del lo[tp], hi[tp]
        if len(self._times) > 10_000:
            self._times.clear()
        return found


# --- the other parts -----------------------------------------------------------------------------

REPORT_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})\.csv")


def newest_report_day(reports_dir: Path) -> date | None:
    """The newest day D with a daily sales report (REPORTS_DIR/daily/D.csv), if any."""
    days = []
    try:
        names = [p.name for p in (reports_dir / "daily").iterdir()]
    except OSError:
        return None
    for name in names:
        match = REPORT_NAME.fullmatch(name)
        if match:
            try:
                days.append(date.fromisoformat(match.group(1)))
            except ValueError:
                continue
    return max(days, default=None)


def report_day_end(day: date, timezone: str) -> float:
    """The end of `day` in the guild's zone (the start of the next), as a unix time."""
    from gremio.guild_time import day_start

    return day_start(day + timedelta(days=1), timezone).timestamp()


def due_seconds(settings: Settings) -> float:
    """How long after a day ends its report is due: SALES_REPORT_DEADLINE as seconds past midnight."""
    deadline = settings.sales_report_deadline
    return deadline.hour * 3600 + deadline.minute * 60 + deadline.second


def airflow_health(settings: Settings, timeout: float = 3.0) -> dict[str, bool]:
    """Each component of Airflow's health report, healthy or not."""
    with urllib.request.urlopen(settings.airflow_url + "/api/v2/monitor/health", timeout=timeout) as answer:  # noqa: S310 - the settings' URL
        report = json.load(answer)
    return {
        name: part.get("status") == "healthy"
        for name, part in report.items()
        if isinstance(part, dict) and "status" in part
    }


def dag_run_durations(
    settings: Settings, password: str, dags: Iterable[str], timeout: float = 5.0
) -> dict[str, float]:
    """The duration of each DAG's newest successful run, from Airflow's REST API as the
    `monitor` user (a viewer)."""
    from gremio.stack.airflow import MONITOR_USER

    def call(path: str, body: dict | None = None, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json"} | (
            {"Authorization": f"Bearer {token}"} if token else {}
        )
        data = json.dumps(body).encode() if body is not None else None
        asked = urllib.request.Request(settings.airflow_url + path, data=data, headers=headers)  # noqa: S310
        with urllib.request.urlopen(asked, timeout=timeout) as answer:  # noqa: S310 - the settings' URL
            return json.load(answer)

    token = call("/auth/token", {"username": MONITOR_USER, "password": password})["access_token"]
    found = {}
    for dag in dags:
        runs = call(f"/api/v2/dags/{dag}/dagRuns?state=success&order_by=-end_date&limit=1", token=token)[
            "dag_runs"
        ]
        if runs and runs[0].get("start_date") and runs[0].get("end_date"):
            start, end = (datetime.fromisoformat(runs[0][k]) for k in ("start_date", "end_date"))
            found[dag] = (end - start).total_seconds()
    return found


def airflow_monitor_password(settings: Settings) -> str:
    """AIRFLOW_MONITOR_PASSWORD, or the local stack's (AIRFLOW_HOME/passwords.json)."""
    if settings.airflow_monitor_password is not None:
        return settings.airflow_monitor_password.get_secret_value()
    from gremio.stack.airflow import monitor_password

    return monitor_password(settings)


DAGS_TIMED = ("sales_daily", "members_monthly")


# --- collecting --------------------------------------------------------------------------------


class Monitor:
    """Takes a Snapshot every interval; Prometheus reads the newest (MonitorCollector)."""

    def __init__(self, settings: Settings, broker: Broker | None = None) -> None:
        self.settings = settings
        self.broker = broker or Broker(settings)
        self.groups = watched_groups(settings)
        self.snapshot = Snapshot()
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()

    def refresh(self) -> Snapshot:
        snap = Snapshot(taken_at=time.time())
        self._part("kafka", lambda: self._kafka(snap))
        snap.report_day_end = self._part("reports", self._report_day_end)
        snap.airflow = self._part("airflow", lambda: airflow_health(self.settings)) or {}
        if snap.airflow:
            password = airflow_monitor_password(self.settings)
            durations = lambda: dag_run_durations(self.settings, password, DAGS_TIMED)  # noqa: E731
            snap.dag_seconds = self._part("airflow", durations) or {}
        self.snapshot = snap
        return snap

    def _part(self, name: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - one part's failure leaves the others' figures
            self.errors[name] = self.errors.get(name, 0) + 1
            log.warning("collecting %s failed: %s", name, exc)
            return None

    def _report_day_end(self) -> float | None:
        day = newest_report_day(self.settings.reports_dir)
        return report_day_end(day, self.settings.guild_timezone) if day else None

    def _kafka(self, snap: Snapshot) -> None:
        from confluent_kafka.admin import OffsetSpec

        names = [*t.BY_NAME, *(name for watched in self.groups for name in watched.topics)]
        partitions, snap.brokers, snap.under_replicated, snap.offline = self.broker.partitions(names)
        ends = self.broker.offsets(partitions, OffsetSpec.latest())
        starts = self.broker.offsets(partitions, OffsetSpec.earliest())
        snap.end_offsets = ends
        behind: list[tuple[WatchedGroup, TP, int]] = []
        for watched in self.groups:
            mine = [tp for tp in partitions if tp[0] in watched.topics]
            committed = self.broker.committed(watched.group, mine)
            for tp in mine:
                next_ = consumed_from(committed.get(tp, NO_OFFSET), starts.get(tp, 0), ends.get(tp, 0))
                behind.append((watched, tp, next_))
        # Different groups can wait at different offsets of one partition: ask per offset.
        times: dict[tuple[TP, int], int] = {}
        for offsets in _distinct_by_partition(behind, ends):
            found = self.broker.record_times(offsets, int(snap.taken_at * 1000))
            times.update({(tp, offsets[tp]): ms for tp, ms in found.items()})
        for watched, tp, next_ in behind:
            lag = max(ends.get(tp, 0) - next_, 0)
            ms = times.get((tp, next_))
            age = max(snap.taken_at - ms / 1000, 0.0) if lag and ms is not None else 0.0
            snap.lags.append(GroupLag(watched.group, watched.mode, tp[0], tp[1], lag, age))

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.refresh()
            self._stop.wait(max(self.settings.monitor_interval_seconds - (time.monotonic() - started), 0.5))

    def stop(self) -> None:
        self._stop.set()


def _distinct_by_partition(
    behind: Iterable[tuple[WatchedGroup, TP, int]], ends: Mapping[TP, int]
) -> list[dict[TP, int]]:
    """The offsets to time, as few {partition: offset} requests as can hold them."""
    wanted: dict[TP, set[int]] = {}
    for _, tp, offset in behind:
        if offset < ends.get(tp, 0):
            wanted.setdefault(tp, set()).add(offset)
    rounds: list[dict[TP, int]] = []
    for tp, offsets in wanted.items():
        for i, offset in enumerate(sorted(offsets)):
            if len(rounds) <= i:
                rounds.append({})
            rounds[i][tp] = offset
    return rounds


class MonitorCollector:
    """prometheus-client's custom collector over the monitor's newest snapshot."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def describe(self) -> list:
        return []  # collected only on scrape: the registry must not call collect() at registration

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap, settings = self.monitor.snapshot, self.monitor.settings
        labels = ["group", "topic", "partition", "mode"]
        lag = GaugeMetricFamily(
            "gremio_kafka_group_lag",
            "Records between the group's committed offset (or the partition's start) and the end",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "gremio_kafka_group_oldest_unconsumed_age_seconds",
            "Age of the record at the group's committed offset (0 when nothing waits)",
            labels=labels,
        )
        for row in snap.lags:
            values = [row.group, row.topic, str(row.partition), row.mode]
            lag.add_metric(values, row.lag)
            age.add_metric(values, row.age_seconds)
        ends = GaugeMetricFamily(
            "gremio_kafka_topic_end_offset",
            "Each partition's end offset (records ever written)",
            labels=["topic", "partition"],
        )
        for (topic, partition), offset in sorted(snap.end_offsets.items()):
            ends.add_metric([topic, str(partition)], offset)
        yield from (lag, age, ends)
        for name, value, text in (
            ("gremio_kafka_brokers", snap.brokers, "Brokers in the cluster's metadata"),
            ("gremio_kafka_under_replicated_partitions", snap.under_replicated, "Partitions short of an in-sync replica"),
            ("gremio_kafka_offline_partitions", snap.offline, "Partitions without a leader"),
            ("gremio_daily_report_newest_day_end_timestamp_seconds", snap.report_day_end, "End of the newest day with a daily report"),
        ):  # fmt: skip
            if value is not None:
                yield GaugeMetricFamily(name, text, value=value)
        yield GaugeMetricFamily(
            "gremio_daily_report_due_seconds",
            "Seconds after a day's end by which its report is due",
            value=due_seconds(settings),
        )
        healthy = GaugeMetricFamily(
            "gremio_airflow_component_healthy", "Airflow's health report", labels=["component"]
        )
        for component, ok in sorted(snap.airflow.items()):
            healthy.add_metric([component], 1.0 if ok else 0.0)
        yield healthy
        durations = GaugeMetricFamily(
            "gremio_airflow_dag_run_duration_seconds",
            "Duration of each DAG's newest successful run",
            labels=["dag_id"],
        )
        for dag, value in sorted(snap.dag_seconds.items()):
            durations.add_metric([dag], value)
        yield durations
        yield GaugeMetricFamily(
            "gremio_monitor_snapshot_timestamp_seconds",
            "When the figures above were collected",
            value=snap.taken_at,
        )
        errors = CounterMetricFamily(
            "gremio_monitor_collect_errors", "Failed collections, by part", labels=["part"]
        )
        for part in ("kafka", "reports", "airflow"):
            errors.add_metric([part], self.monitor.errors.get(part, 0))
        yield errors


# Every series the monitor serves, as PromQL names them (tests/unit/test_dashboard_metrics.py).
METRIC_NAMES = (
    "gremio_kafka_group_lag",
    "gremio_kafka_group_oldest_unconsumed_age_seconds",
    "gremio_kafka_topic_end_offset",
    "gremio_kafka_brokers",
    "gremio_kafka_under_replicated_partitions",
    "gremio_kafka_offline_partitions",
    "gremio_daily_report_newest_day_end_timestamp_seconds",
    "gremio_daily_report_due_seconds",
    "gremio_airflow_component_healthy",
    "gremio_airflow_dag_run_duration_seconds",
    "gremio_monitor_snapshot_timestamp_seconds",
    "gremio_monitor_collect_errors_total",
    "gremio_ops_alerts_total",
)


# --- Alertmanager's webhook ------------------------------------------------------------------

OPS_NAMESPACE = uuid.UUID("6f5b0c1e-8d0a-4c1b-9a57-0a1d6e1f0b7e")
DETAIL_MAX = 400


class _Notified(BaseModel):
    """One alert of Alertmanager's webhook payload (version 4); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(max_length=64)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=64)
    startsAt: datetime  # noqa: N815 - Alertmanager's name
    endsAt: datetime | None = None  # noqa: N815
    fingerprint: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")


class Notification(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: Literal["4"]
    alerts: list[_Notified] = Field(max_length=1000)


def ops_alert(notified: _Notified) -> Alert:
    """The `ops` alert for one notified alert: the same id for a repeat of the same state."""
    name = notified.labels.get("alertname", "alert")
    summary = notified.annotations.get("summary") or ", ".join(
        f"{k}={v}" for k, v in sorted(notified.labels.items()) if k != "alertname"
    )
    detail = printable(f"{notified.status}: {name}: {summary}")[:DETAIL_MAX]
    at = notified.startsAt
    if notified.status == "resolved" and notified.endsAt and notified.endsAt.year > 1:
        at = notified.endsAt
    if at.tzinfo is None or at.year < 2000:
        at = now_utc()
    key = f"{notified.fingerprint}|{notified.startsAt.isoformat()}|{notified.status}"
    return Alert(id=uuid.uuid5(OPS_NAMESPACE, key), kind="ops", detail=detail, created_at=at)


class OpsAlerts:
    """Writes `ops` alerts: the table (the monitor's role, insert only) and the topic."""

    def __init__(self, settings: Settings) -> None:
        from gremio import kafka as gk

        self.settings = settings
        self.producer = gk.producer(settings)
        self.written: dict[str, int] = {}

    def write(self, notified: Iterable[_Notified]) -> int:
        from gremio import alerts, db

        new = 0
        with db.connect(self.settings) as conn:
            for one in notified:
                if alerts.raise_once(conn, self.producer, ops_alert(one), one.fingerprint):
                    new += 1
                    self.written[one.status] = self.written.get(one.status, 0) + 1
        return new


def create_app(monitor: Monitor, ops: OpsAlerts | None, token: str) -> Any:
    """The monitor's HTTP: /metrics, /healthz, and Alertmanager's webhook."""
    import psycopg
    from confluent_kafka import KafkaException
    from flask import Flask, Response, jsonify, request
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily

    registry = CollectorRegistry()
    registry.register(MonitorCollector(monitor))

    class _Written:
        def collect(self):
            family = CounterMetricFamily(
                "gremio_ops_alerts", "ops alerts written, by status", labels=["status"]
            )
            for status in ("firing", "resolved"):
                family.add_metric([status], (ops.written if ops else {}).get(status, 0))
            yield family

    registry.register(_Written())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok", collected_at=monitor.snapshot.taken_at)

    @app.post("/v1/alertmanager")
    def alertmanager() -> Response | tuple[Response, int]:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return jsonify(error="a bearer token is required"), 401
        try:
            notification = Notification.model_validate_json(request.get_data())
        except ValidationError as exc:
            return jsonify(error="not an Alertmanager webhook payload", errors=exc.error_count()), 400
        if ops is None:
            return jsonify(error="not configured to write alerts"), 503
        try:
            new = ops.write(notification.alerts)
        except (psycopg.OperationalError, KafkaException, TimeoutError) as exc:
            log.warning("ops alerts not written yet (Alertmanager will retry): %s", exc)
            return jsonify(error="the database or the broker is unavailable; retry"), 503
        return jsonify(received=len(notification.alerts), new=new)

    return app


def main() -> int:
    from gremio import db
    from gremio import kafka as gk
    from gremio.logs import setup_logging
    from gremio.web.server import HttpServer

    setup_logging()
    settings = get_settings()
    token = settings.secret("alertmanager_webhook_token")
    gk.wait_for_broker(settings, timeout=120)
    db.wait_for_db(settings, timeout=120)
    monitor = Monitor(settings)
    monitor.refresh()
    server = HttpServer(
        create_app(monitor, OpsAlerts(settings), token), settings.bind_host, settings.monitor_port
    )
    server.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: monitor.stop())
    monitor.run()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
