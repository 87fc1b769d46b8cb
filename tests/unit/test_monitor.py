"""The monitor's pure parts: where a group reads next, its webhook's alerts, its metric names."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gremio.monitor import (
    METRIC_NAMES,
    GroupLag,
    Monitor,
    MonitorCollector,
    Snapshot,
    WatchedGroup,
    _distinct_by_partition,
    _Notified,
    consumed_from,
    ops_alert,
)
from gremio.safetext import printable
from gremio.settings import Settings
from gremio.stack.prometheus import rules, seconds


def test_a_group_reads_next_at_its_commit_or_the_start_and_never_past_the_end():
    assert consumed_from(-1001, 5, 9) == 5  # never committed: everything retained waits
    assert consumed_from(3, 5, 9) == 5  # retention deleted what it had not read
    assert consumed_from(7, 5, 9) == 7
    assert consumed_from(12, 5, 9) == 9  # an offset past the end (a truncated log) lags 0


def test_offsets_to_time_go_in_as_few_requests_as_hold_them():
    g = WatchedGroup("g", ("sales",), "stream")
    behind = [(g, ("sales", 0), 3), (g, ("sales", 0), 5), (g, ("sales", 1), 2), (g, ("sales", 2), 8)]
    rounds = _distinct_by_partition(behind, {("sales", 0): 9, ("sales", 1): 4, ("sales", 2): 8})
    assert rounds == [{("sales", 0): 3, ("sales", 1): 2}, {("sales", 0): 5}]  # p2 waits for nothing


def test_durations_scale_for_drills_and_the_repository_file_stays_as_written():
    assert [seconds(d) for d in ("30s", "5m", "1h", "1m30s", "2h5m")] == [30, 300, 3600, 90, 7500]
    original = rules()
    scaled = rules(0.2)
    for kept, short in zip(original["groups"][0]["rules"], scaled["groups"][0]["rules"], strict=True):
        if "for" in kept:
            assert seconds(short["for"]) == max(round(seconds(kept["for"]) * 0.2), 1)
        assert kept["expr"] == short["expr"]


names = st.text(min_size=0, max_size=80)


@given(
    labels=st.dictionaries(names, names, max_size=8),
    summary=st.text(max_size=2000),
    status=st.sampled_from(["firing", "resolved"]),
    fingerprint=st.text("0123456789abcdef", min_size=1, max_size=16),
)
def test_any_notified_alert_becomes_one_printable_ops_alert_with_a_stable_id(
    labels, summary, status, fingerprint
):
    notified = _Notified(
        status=status,
        labels=labels,
        annotations={"summary": summary},
        startsAt=datetime(2026, 12, 4, 12, 0, tzinfo=UTC),
        fingerprint=fingerprint,
    )
    alert = ops_alert(notified)
    assert alert.kind == "ops" and alert.plate is None
    assert len(alert.detail) <= 400 and printable(alert.detail) == alert.detail  # nothing hidden left
    assert ops_alert(notified).id == alert.id  # a repeat of the same state is the same alert
    other = notified.model_copy(update={"status": "resolved" if status == "firing" else "firing"})
    assert ops_alert(other).id != alert.id


def test_every_family_the_collector_serves_is_named_in_metric_names():
    settings = Settings.model_construct()
    monitor = Monitor.__new__(Monitor)
    monitor.settings, monitor.errors = settings, {}
    monitor.snapshot = Snapshot(
        taken_at=1.0,
        end_offsets={("sales", 0): 3},
        lags=[GroupLag("g", "stream", "sales", 0, 2, 5.0)],
        brokers=1,
        under_replicated=0,
        offline=0,
        report_day_end=2.0,
        airflow={"scheduler": True},
        dag_seconds={"sales_daily": 12.0},
    )
    served = set()
    for family in MonitorCollector(monitor).collect():
        served |= {sample.name for sample in family.samples}
    assert served | {"gremio_ops_alerts_total"} == set(METRIC_NAMES)


def test_the_watched_airflow_groups_are_the_ones_the_dags_and_connections_use():
    from gremio.monitor import DRAIN_GROUPS
    from gremio.settings import REPO_ROOT

    dags = "".join(p.read_text() for p in (REPO_ROOT / "dags").glob("*.py"))
    from pydantic import SecretStr

    with_role = Settings.model_construct(pg_airflow_password=SecretStr("x" * 32))
    watch = with_role.airflow_connections()["AIRFLOW_CONN_KAFKA_MEMBERS_WATCH"]
    for watched in DRAIN_GROUPS:
        assert f'group_id="{watched.group}"' in dags or f'"group.id": "{watched.group}"' in watch, watched
