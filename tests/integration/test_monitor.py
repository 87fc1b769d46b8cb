"""gremio's monitor against the real broker and database: lag, age, and Alertmanager's webhook."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.monitor import Monitor, OpsAlerts, WatchedGroup, create_app
from gremio.stack.testing import WEBHOOK_TOKEN
from tests.support import TopicProbe, make_topic, metric_value, wait_for

pytestmark = pytest.mark.usefixtures("stack")


def _commit(group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit `offsets` for `group`, waiting out a fresh broker's NOT_COORDINATOR."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in offsets.items()])
    admin = gk.admin()  # kept alive until the futures resolve

    def committed() -> bool:
        [future] = admin.alter_consumer_group_offsets([request]).values()
        return not any(tp.error for tp in future.result(timeout=60).topic_partitions)

    wait_for(committed, timeout=60, interval=1, what=f"{group}'s offsets committed")


def test_lag_and_the_age_of_the_oldest_unconsumed_record_come_from_the_broker(settings):
    topic = make_topic(f"monitor-{uuid.uuid4().hex[:8]}", 2)
    now_ms = int(time.time() * 1000)
    prod = gk.producer(settings)
    for age_s in (300, 200, 100):  # three records on partition 0, sent 300, 200, 100 s ago
        prod.produce(topic, b"x", key=b"k", partition=0, timestamp=now_ms - age_s * 1000)
    prod.produce(topic, b"y", key=b"k", partition=1, timestamp=now_ms - 50_000)
    assert prod.flush(30) == 0
    reading, never = f"monitor-reading-{uuid.uuid4().hex[:6]}", f"monitor-never-{uuid.uuid4().hex[:6]}"
    _commit(reading, topic, {0: 1, 1: 1})  # read the first of p0, all of p1

    monitor = Monitor(settings)
    monitor.groups = (WatchedGroup(reading, (topic,), "stream"), WatchedGroup(never, (topic,), "daily"))
    snap = monitor.refresh()
    assert monitor.errors == {} or set(monitor.errors) <= {"airflow"}, monitor.errors
    rows = {(r.group, r.partition): r for r in snap.lags}
    assert rows[(reading, 0)].lag == 2 and rows[(reading, 1)].lag == 0
    assert 198 <= rows[(reading, 0)].age_seconds <= 203, rows[(reading, 0)]  # the record sent 200 s ago
    assert rows[(reading, 1)].age_seconds == 0
    # A group that never committed waits at the partition's start: everything, oldest first.
    assert rows[(never, 0)].lag == 3 and 298 <= rows[(never, 0)].age_seconds <= 303
    assert rows[(never, 1)].mode == "daily" and rows[(never, 1)].lag == 1
    assert snap.end_offsets[(topic, 0)] == 3 and snap.brokers == 1
    assert snap.under_replicated == 0 and snap.offline == 0

    # The same figures on /metrics, by group, topic, partition and mode.
    client = create_app(monitor, None, WEBHOOK_TOKEN).test_client()
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        metric_value(text, "gremio_kafka_group_lag", group=reading, topic=topic, partition="0", mode="stream")
        == 2
    )
    assert metric_value(text, "gremio_kafka_topic_end_offset", topic=topic, partition="0") == 3
    assert metric_value(text, "gremio_kafka_under_replicated_partitions") == 0
    assert metric_value(text, "gremio_daily_report_due_seconds") == 6 * 3600
    # The cached timestamp serves the next collection without a search.
    again = monitor.refresh()
    assert {(r.group, r.partition): r.lag for r in again.lags} == {k: r.lag for k, r in rows.items()}


def test_the_newest_daily_report_on_disk_sets_when_the_next_is_due(settings, tmp_path):
    daily = tmp_path / "daily"
    daily.mkdir()
    for name in ("2026-11-30.csv", "2026-12-01.csv", "2026-12-01.json", "2026-13-01.csv", "notes.csv"):
        (daily / name).write_text("")
    monitor = Monitor(settings.model_copy(update={"reports_dir": tmp_path}))
    snap = monitor.refresh()
    # 2026-12-01 ends at midnight in Santiago (UTC-3 in December).
    assert snap.report_day_end == datetime(2026, 12, 2, 3, 0, tzinfo=UTC).timestamp()
    empty = Monitor(settings.model_copy(update={"reports_dir": tmp_path / "none"}))
    assert empty.refresh().report_day_end is None
    text = create_app(empty, None, WEBHOOK_TOKEN).test_client().get("/metrics").get_data(as_text=True)
    assert "gremio_daily_report_newest_day_end_timestamp_seconds" not in text  # absent: no alert


def _notification(fingerprint: str, status: str = "firing", **annotations: str) -> dict:
    starts = (datetime.now(UTC) - timedelta(seconds=70)).isoformat()
    return {
        "version": "4",
        "status": status,
        "receiver": "gremio",
        "groupLabels": {"alertname": "GremioServiceDown"},
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "GremioServiceDown", "job": "stock", "severity": "critical"},
                "annotations": {"summary": "stock is down", **annotations},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": fingerprint,
                "generatorURL": "http://127.0.0.1:9090/graph",
            }
        ],
    }


def _ops_rows(fingerprint_detail: str) -> list[tuple]:
    with db.connect() as conn:
        return conn.execute(
            "select kind, detail from alerts where kind = 'ops' and detail like %s",
            (f"%{fingerprint_detail}%",),
        ).fetchall()


def test_alertmanagers_webhook_writes_ops_alerts_once_to_the_table_and_the_topic(settings):
    monitor_role = settings.model_copy(update={"db_role": "monitor"})  # insert-only on alerts
    client = create_app(Monitor(settings), OpsAlerts(monitor_role), WEBHOOK_TOKEN).test_client()
    marker = uuid.uuid4().hex[:10]
    body = _notification(uuid.uuid4().hex[:16], summary=f"stock is down {marker}")
    probe = TopicProbe([t.ALERTS.name])

    assert client.post("/v1/alertmanager", json=body).status_code == 401
    wrong = {"Authorization": f"Bearer {WEBHOOK_TOKEN}x"}
    assert client.post("/v1/alertmanager", json=body, headers=wrong).status_code == 401
    bearer = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    first = client.post("/v1/alertmanager", json=body, headers=bearer)
    assert first.status_code == 200 and first.get_json() == {"received": 1, "new": 1}
    repeat = client.post("/v1/alertmanager", json=body, headers=bearer)  # Alertmanager's repeat
    assert repeat.get_json() == {"received": 1, "new": 0}
    assert _ops_rows(marker) == [("ops", f"firing: GremioServiceDown: stock is down {marker}")]
    [record] = [m for m in probe.records(t.ALERTS.name) if marker.encode() in m.value()]
    assert json.loads(record.value())["kind"] == "ops"

    resolved = _notification(body["alerts"][0]["fingerprint"], "resolved", summary=f"stock is down {marker}")
    assert client.post("/v1/alertmanager", json=resolved, headers=bearer).get_json()["new"] == 1
    assert len(_ops_rows(marker)) == 2
    text = client.get("/metrics").get_data(as_text=True)
    assert metric_value(text, "gremio_ops_alerts_total", status="resolved") == 1


@pytest.mark.parametrize(
    "hostile",
    [
        b"",
        b"{",
        b'{"version": "4", "alerts": "x"}',
        json.dumps({"version": "3", "alerts": []}).encode(),
        json.dumps(_notification("not-hex; drop table alerts")).encode(),
        json.dumps(_notification("ab" * 40)).encode(),  # a fingerprint longer than Alertmanager's
        json.dumps({**_notification("abc"), "alerts": [_notification("abc")["alerts"][0]] * 1001}).encode(),
    ],
)
def test_a_hostile_webhook_body_is_refused_and_writes_nothing(settings, hostile):
    client = create_app(Monitor(settings), OpsAlerts(settings), WEBHOOK_TOKEN).test_client()
    bearer = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    before = _ops_rows("")
    answer = client.post("/v1/alertmanager", data=hostile, headers=bearer)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert _ops_rows("") == before


def test_control_characters_and_a_huge_summary_are_kept_off_the_screen(settings):
    client = create_app(Monitor(settings), OpsAlerts(settings), WEBHOOK_TOKEN).test_client()
    marker = uuid.uuid4().hex[:10]
    body = _notification(uuid.uuid4().hex[:16], summary=f"{marker}\x1b[2J\u202e" + "x" * 5000)
    bearer = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    assert client.post("/v1/alertmanager", json=body, headers=bearer).status_code == 200
    [(_, detail)] = _ops_rows(marker)
    assert len(detail) <= 400 and detail.isprintable()
    big = b'{"version": "4", "alerts": [' + b" " * (2 << 20) + b"]}"
    assert client.post("/v1/alertmanager", data=big, headers=bearer).status_code == 413
