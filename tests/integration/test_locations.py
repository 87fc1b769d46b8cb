"""The live-location service against the real broker and database, through GET /v1/live."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from consumers.locations.service import LocationService
from consumers.locations.view import alert_id
from consumers.locations.web import create_app
from gremio import db
from gremio import kafka as gk
from gremio import records as r
from gremio import topics as t
from gremio.runner import Runner
from gremio.settings import Settings, get_settings
from gremio.web.server import HttpServer as LiveServer
from tests.support import Members, TopicProbe, new_plate, routed, staff_auth, wait_for

PRODUCER = None


def _producer():
    global PRODUCER
    if PRODUCER is None:
        PRODUCER = gk.producer()
    return PRODUCER


@pytest.fixture(scope="module", autouse=True)
def _close_producer() -> Iterator[None]:
    yield
    global PRODUCER
    if PRODUCER is not None:
        PRODUCER.flush(10)
        PRODUCER = None


def forwarded() -> float:
    return REGISTRY.get_sample_value("gremio_locations_positions_total", {"result": "forwarded"}) or 0.0


# --- plates, members and records --------------------------------------------------------------


def plates_on(partition: int, n: int) -> list[str]:
    """`n` fresh plates whose positions go to the same `locations` partition."""
    found: list[str] = []
    while len(found) < n:
        plate = new_plate()
        if t.position_partition(plate, t.LOCATIONS.partitions) == partition and plate not in found:
            found.append(plate)
    return found


@pytest.fixture
def members() -> Iterator[Members]:
    """Register plates as approved members for one test (`members(plate)`); removed afterwards."""
    registered = Members()
    yield registered
    registered.remove()


def now() -> datetime:
    return datetime.now(UTC)


def position(plate: str, lat: float, lon: float, recorded_at: datetime | None = None) -> r.CartPosition:
    at = now()
    return r.CartPosition(
        id=uuid.uuid4(), plate=plate, lat=lat, lon=lon, recorded_at=recorded_at or at, received_at=at
    )


def sale(plate: str, lat: float, lon: float, sold_at: datetime | None = None) -> r.Sale:
    at = now()
    return r.Sale(
        id=uuid.uuid4(), plate=plate, client="cliente-1", quantity=3, sold_at=sold_at or at,
        stock_remaining=60, lat=lat, lon=lon, received_at=at,
    )  # fmt: skip


def send(*records: r.Record, locations: str = t.LOCATIONS.name, sales: str = t.SALES.name) -> list:
    """Produce records where the contract puts them; returns the acknowledged messages."""
    return gk.produce_all(_producer(), [routed(rec, locations, sales) for rec in records])


# --- a running instance -----------------------------------------------------------------------


class Instance:
    """One service instance: run loop in a thread, /v1/live on a free port."""

    def __init__(self, group: str, topics: tuple[str, str] | None = None, **settings: Any) -> None:
        self.settings: Settings = get_settings().model_copy(update=settings)
        locations, sales = topics or (t.LOCATIONS.name, t.SALES.name)
        self.service = LocationService(
            self.settings, group_id=group, locations_topic=locations, sales_topic=sales
        ).start()
        self.server = LiveServer(create_app(self.service.view), "127.0.0.1", 0).start()
        self.runner = Runner(self.service, self.settings)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # kept for stop(): a thread's exception is otherwise lost
            self.failure = exc

    def live(self) -> dict[str, list[dict[str, Any]]]:
        url = f"http://127.0.0.1:{self.server.port}/v1/live"
        asked = urllib.request.Request(url, headers=staff_auth())  # the staff login (web.py)
        with urllib.request.urlopen(asked, timeout=10) as resp:  # noqa: S310 - loopback URL
            assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
            return json.load(resp)

    def carts(self) -> dict[str, dict[str, Any]]:
        return {cart["plate"]: cart for cart in self.live()["carts"]}

    def stop(self) -> None:
        self.runner.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the run loop did not stop"
        assert self.failure is None, f"the run loop failed: {self.failure!r}"
        self.server.stop()
        self.service.close()


@pytest.fixture
def instances() -> Iterator[Any]:
    started: list[Instance] = []

    def start(group: str | None = None, **kwargs: Any) -> Instance:
        instance = Instance(group or f"test-locations-{uuid.uuid4()}", **kwargs)
        started.append(instance)
        assert instance.runner.assigned.wait(60), "partition assignment"
        return instance

    yield start
    for instance in started:
        if instance.thread.is_alive():
            instance.stop()
        assert instance.failure is None, f"the run loop failed: {instance.failure!r}"


def alerts_in_table(*plates: str) -> list[tuple]:
    with db.connect() as conn:
        return conn.execute(
            "select id, kind, plate, lat, lon, detail from alerts where plate = any(%s) order by created_at",
            (list(plates),),
        ).fetchall()


def private_topics() -> tuple[str, str]:
    """A `locations` and `sales` pair that only this test writes to."""
    suffix = uuid.uuid4().hex[:8]
    pair = (
        t.Topic(f"locations-test-{suffix}", t.LOCATIONS.partitions, "plate", "", ""),
        t.Topic(f"sales-test-{suffix}", t.SALES.partitions, "plate", "", ""),
    )
    gk.ensure_topics(pair)
    return pair[0].name, pair[1].name


# --- expiry, ordering, sources ----------------------------------------------------------------


def test_a_cart_expires_after_the_ttl(instances, members) -> None:
    assert Settings.model_fields["live_ttl_seconds"].default == 60
    assert get_settings().live_ttl_seconds == 60
    [plate] = plates_on(1, 1)
    members(plate)
    live = instances(live_ttl_seconds=5)
    ping = position(plate, -33.4372, -70.6506)
    send(ping)
    cart = wait_for(lambda: live.carts().get(plate), what="the cart on /v1/live")
    assert (cart["lat"], cart["lon"], cart["registered"]) == (-33.4372, -70.6506, True)
    assert cart["master"] == f"Maestra {plate}"
    wait_for(lambda: plate not in live.carts(), what="the cart to expire")
    assert now() - ping.received_at > timedelta(seconds=5), "expired before its TTL"


def test_an_older_position_arriving_late_is_ignored(instances, members) -> None:
    [plate] = plates_on(2, 1)
    members(plate)
    live = instances()
    newest = position(plate, -33.4400, -70.6500)
    send(newest)
    wait_for(lambda: plate in live.carts(), what="the newest position")
    late = position(plate, -33.4500, -70.6600, recorded_at=newest.recorded_at - timedelta(seconds=30))
    send(late)
    # The late ping still counts as a sign of life: its arrival time shows up as seen_at.
    cart = wait_for(
        lambda: (c := live.carts()[plate])["seen_at"] == late.received_at.isoformat() and c,
        what="the late position processed",
    )
    assert (cart["lat"], cart["lon"], cart["recorded_at"]) == (-33.44, -70.65, newest.recorded_at.isoformat())


def test_positions_from_sales_count(instances, members) -> None:
    [plate] = plates_on(3, 1)
    members(plate)
    live = instances()
    first = sale(plate, -33.4410, -70.6510)
    send(first)
    cart = wait_for(lambda: live.carts().get(plate), what="the sale's position")
    assert (cart["lat"], cart["lon"], cart["recorded_at"]) == (-33.441, -70.651, first.sold_at.isoformat())
    older = sale(plate, -33.4999, -70.6999, sold_at=first.sold_at - timedelta(minutes=2))
    send(older)
    wait_for(lambda: live.carts()[plate]["seen_at"] == older.received_at.isoformat(), what="older sale")
    assert live.carts()[plate]["lat"] == -33.441
    ping = position(plate, -33.4412, -70.6510)
    send(ping)
    wait_for(lambda: live.carts()[plate]["lat"] == -33.4412, what="a newer ping after the sale")


# --- alerts ---------------------------------------------------------------------------------


def test_alerts_are_raised_recorded_published_and_suppressed(instances, members, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="consumers.locations.service")
    registered, unregistered = plates_on(1, 2)
    members(registered)
    live = instances()
    probe = TopicProbe([t.ALERTS.name])
    t0 = now()
    at = lambda s: t0 + timedelta(seconds=s)  # noqa: E731
    walk = position(registered, -33.4400, -70.6500, recorded_at=at(0))
    # 0.002° of latitude is about 222 m: in 10 s that is 80 km/h.
    jump = position(registered, -33.4420, -70.6500, recorded_at=at(10))
    jump_again = position(registered, -33.4440, -70.6500, recorded_at=at(20))
    away = position(registered, -33.0458, -71.6197, recorded_at=at(3600))  # Valparaíso, an hour later
    away_again = position(registered, -33.0460, -71.6197, recorded_at=at(3660))
    stranger = position(unregistered, -33.4500, -70.6600)
    stranger_again = position(
        unregistered, -33.4501, -70.6600, recorded_at=stranger.recorded_at + timedelta(seconds=5)
    )
    send(walk, jump, jump_again, away, away_again, stranger, stranger_again)
    wait_for(
        lambda: (
            live.carts().get(unregistered, {}).get("lat") == -33.4501
            and live.carts().get(registered, {}).get("lat") == -33.046
        ),
        what="every position processed",
    )
    expected = {
        ("jump", registered): jump,
        ("out_of_area", registered): away,
        ("unregistered_cart", unregistered): stranger,
    }
    rows = wait_for(lambda: len(got := alerts_in_table(registered, unregistered)) >= 3 and got, what="alerts")
    assert sorted((kind, plate) for _, kind, plate, *_ in rows) == sorted(expected)
    for alert_uuid, kind, plate, lat, lon, detail in rows:
        source = expected[(kind, plate)]
        assert alert_uuid == alert_id(source.id, kind)
        assert (lat, lon) == (source.lat, source.lon)
        assert plate in detail
    published = wait_for(lambda: len(m := probe.records(t.ALERTS.name)) >= 3 and m, what="alerts topic")
    ours = [m for m in published if m.key() in (registered.encode(), unregistered.encode())]
    assert len(ours) == 3, "each alert is published once"
    for msg in ours:
        assert gk.header(msg, "type") == "Alert"
        alert = r.Alert.from_bytes(msg.value())
        assert msg.key() == alert.plate.encode()
        assert alert.id == alert_id(expected[(alert.kind, alert.plate)].id, alert.kind)
    screen = {(a["kind"], a["plate"]) for a in live.live()["alerts"]}
    assert set(expected) <= screen
    logged = " ".join(rec.getMessage() for rec in caplog.records)
    assert f"ALERT jump {registered}" in logged and f"ALERT unregistered_cart {unregistered}" in logged


# Reference distance for the nearest-cart test, computed by hand, not with geographiclib:
# the two points share a meridian, 0.0005° apart, so the geodesic is the meridian arc,
# s = M(φ)·Δφ with the meridional radius of curvature M(φ) = a(1−e²)/(1−e²·sin²φ)^(3/2)
# (any geodesy text, e.g. Wikipedia "Meridian arc"), on WGS84 (a = 6378137 m,
# f = 1/298.257223563, e² = f(2−f) = 0.00669438) at the midpoint φ = −33.61975°:
# M = 6354992.14 m, Δφ = 0.0005° = 8.72665e-6 rad, s = 55.458 m. The same formula gives
# 110.852 km per degree at 30°, the value in published degree-length tables.
CART = (-33.62000, -70.85000)
REPORTED_AT = (-33.61950, -70.85000)
REFERENCE_DISTANCE_M = 55.458


def test_fugitive_report_shows_the_nearest_cart(instances, members) -> None:
    near, farther = plates_on(1, 1) + plates_on(2, 1)
    members(near, farther)
    live = instances()
    probe = TopicProbe([t.ALERTS.name])
    send(position(near, *CART), position(farther, CART[0], CART[1] + 0.002))  # ~185 m east
    wait_for(lambda: {near, farther} <= set(live.carts()), what="both carts live")
    report = r.FugitiveReport(
        id=uuid.uuid4(), lat=REPORTED_AT[0], lon=REPORTED_AT[1], description="carro sin logo",
        plate="AB1234", received_at=now(),
    )  # fmt: skip
    lonely = r.FugitiveReport(id=uuid.uuid4(), lat=-33.7000, lon=-70.9000, received_at=now())  # ~10 km away
    send(report, lonely)

    def both_shown() -> dict[str, dict[str, Any]] | None:
        got = {x["id"]: x for x in live.live()["reports"]}
        return got if {str(report.id), str(lonely.id)} <= set(got) else None

    shown = wait_for(both_shown, what="both reports on /v1/live")
    seen = shown[str(report.id)]
    assert seen["nearest_plate"] == near
    assert abs(seen["nearest_distance_m"] - REFERENCE_DISTANCE_M) <= 1.0
    assert (seen["plate"], seen["description"]) == ("AB1234", "carro sin logo")
    with db.connect() as conn:
        row = conn.execute(
            "select nearest_plate, nearest_distance_m from fugitive_reports where id = %s", (report.id,)
        ).fetchone()
    assert row[0] == near and abs(row[1] - REFERENCE_DISTANCE_M) <= 1.0
    keys = {str(report.id).encode(), str(lonely.id).encode()}
    published = wait_for(
        lambda: len(m := [x for x in probe.records(t.ALERTS.name) if x.key() in keys]) >= 2 and m,
        what="fugitive_report alerts",
    )
    alerts = {msg.key().decode(): r.Alert.from_bytes(msg.value()) for msg in published}
    assert len(published) == 2
    named = alerts[str(report.id)]
    assert (named.kind, named.plate, named.lat, named.lon) == ("fugitive_report", near, *REPORTED_AT)
    assert named.id == alert_id(report.id, "fugitive_report")
    assert (alerts[str(lonely.id)].kind, alerts[str(lonely.id)].plate) == ("fugitive_report", None)


# --- restart, scale-out, poison -----------------------------------------------------------------


def test_restart_rebuilds_the_view_from_the_last_ttl_window(instances, members) -> None:
    topics = private_topics()
    locations, sales = topics
    group = f"test-locations-{uuid.uuid4()}"
    ttl = 30
    old, kept, stranger = plates_on(1, 3)
    by_sale = new_plate()
    members(old, kept, by_sale)
    first = instances(group, topics=topics, live_ttl_seconds=ttl)
    # OLD's payload is fresh, but the broker got it before the TTL window (its timestamp).
    stale = position(old, -33.4400, -70.6400)
    prod = _producer()
    prod.produce(
        locations, key=old.encode(), value=stale.to_bytes(), headers=[("type", b"CartPosition")], partition=1,
        timestamp=int((time.time() - 2 * ttl) * 1000),
    )  # fmt: skip
    gk.flush_or_raise(prod)
    acked = send(
        position(kept, -33.4410, -70.6410), position(stranger, -33.4420, -70.6420), locations=locations
    )
    send(sale(by_sale, -33.4430, -70.6430), sales=sales)
    wait_for(lambda: {old, kept, stranger, by_sale} <= set(first.carts()), what="the first instance's view")
    wait_for(lambda: alerts_in_table(stranger), what="the unregistered_cart alert")
    first.stop()

    probe = TopicProbe([t.ALERTS.name])
    second = instances(group, topics=topics, live_ttl_seconds=ttl)
    # Nothing new was sent: what the second instance shows, it rebuilt.
    wait_for(lambda: {kept, stranger, by_sale} <= set(second.carts()), what="the rebuilt view")
    assert old not in second.carts()
    assert second.service.rebuild_offsets[(locations, 1)] == acked[0].offset()
    # A record sent now is processed after the replayed ones, so their effects are in.
    marker = position(kept, -33.4411, -70.6410)
    send(marker, locations=locations)
    wait_for(lambda: second.carts()[kept]["lat"] == marker.lat, what="a new position after the rebuild")
    assert [kind for _, kind, *_ in alerts_in_table(stranger)] == ["unregistered_cart"]
    assert [m for m in probe.records(t.ALERTS.name) if m.key() == stranger.encode()] == []


def test_two_instances_each_show_the_whole_fleet_and_judge_only_their_own(instances, members) -> None:
    topics = private_topics()
    locations, sales = topics
    group = f"test-locations-{uuid.uuid4()}"
    a = instances(group, topics=topics)
    b = instances(group, topics=topics)
    every = {(tp, p) for tp in topics for p in range(4)}
    wait_for(
        lambda: a.runner.assignment and b.runner.assignment
        and a.runner.assignment | b.runner.assignment == every
        and not a.runner.assignment & b.runner.assignment,
        what="the group to settle on two members",
    )  # fmt: skip
    probe = TopicProbe([t.ALERTS.name])
    pinging = [new_plate() for _ in range(12)]
    selling = [new_plate() for _ in range(8)]  # carts known only by their sales
    members(*pinging[:6], *selling)  # the other six pinging carts raise unregistered_cart
    before = forwarded()
    records = [position(p, -33.44 - i / 1000, -70.65) for i, p in enumerate(pinging)]
    send(*records, locations=locations)
    sold = send(
        *[sale(p, -33.45 - i / 1000, -70.66) for i, p in enumerate(selling + pinging[:4])], sales=sales
    )
    # A sale read by the instance that does not hold its cart is forwarded to the one that does.
    holder = {key: x for x in (a, b) for key in x.runner.assignment}
    crossing = sum(
        holder[(sales, m.partition())]
        is not holder[(locations, t.position_partition(m.key().decode(), t.LOCATIONS.partitions))]
        for m in sold
    )
    everyone = set(pinging) | set(selling)
    # Both boards show every cart, whichever instance holds it (consumers/locations/mirror.py).
    wait_for(lambda: set(a.carts()) == everyone == set(b.carts()), what="every cart on both boards")
    assert {p for p in everyone if a.service.holds_cart(p)} and {
        p for p in everyone if b.service.holds_cart(p)
    }
    assert all(a.service.holds_cart(p) != b.service.holds_cart(p) for p in everyone)
    assert forwarded() - before == crossing

    # A fugitive report's nearest cart is searched among all carts: here one that the
    # instance holding the reports' partition does not hold.
    reports_holder = holder[(locations, t.FUGITIVE_PARTITION)]
    other = b if reports_holder is a else a
    nearest = next(p for p in sorted(pinging[:6] + selling) if other.service.holds_cart(p))
    at = other.carts()[nearest]  # its newest position: a ping, or a sale's
    report = r.FugitiveReport(id=uuid.uuid4(), lat=at["lat"], lon=at["lon"] + 0.0005, received_at=now())
    send(report, locations=locations)
    for x in (a, b):
        shown = wait_for(
            lambda x=x: next((y for y in x.live()["reports"] if y["id"] == str(report.id)), None),
            what="the report on both boards",
        )
        assert shown["nearest_plate"] == nearest

    # Each event is judged once, by its cart's holder: one unregistered_cart per stranger.
    strangers = {p.encode() for p in pinging[6:]}
    wait_for(
        lambda: {m.key() for m in probe.records(t.ALERTS.name)} >= strangers | {str(report.id).encode()},
        what="the alerts",
    )
    time.sleep(2)  # time for a doubled alert to show up
    keys = [m.key() for m in probe.records(t.ALERTS.name) if m.key() in strangers | {str(report.id).encode()}]
    assert sorted(keys) == sorted([*strangers, str(report.id).encode()])
    named = next(
        r.Alert.from_bytes(m.value())
        for m in probe.records(t.ALERTS.name)
        if m.key() == str(report.id).encode()
    )
    assert named.plate == nearest

    # When one leaves, the other takes its partitions over; its board stays whole.
    b.stop()
    wait_for(lambda: a.runner.assignment == every, timeout=60, what="the survivor holding every partition")
    wait_for(lambda: set(a.carts()) == everyone, timeout=60, what="the survivor showing every cart")
    assert a.service.mirror.following == frozenset()


def test_poison_goes_to_deadletter_and_the_service_carries_on(instances) -> None:
    live = instances()
    probe = TopicProbe([t.DEADLETTER.name])
    key = f"poison-{uuid.uuid4()}".encode()
    gk.produce_all(
        _producer(),
        [
            (t.LOCATIONS.name, key, b"{not json", [("type", b"CartPosition")], 1),
            (t.LOCATIONS.name, key, b'{"id": 1}', [("type", b"Bogus")], 1),
        ],
    )
    [plate] = plates_on(1, 1)
    send(position(plate, -33.45, -70.65))
    wait_for(lambda: plate in live.carts(), what="a good position after the poison")
    dead = wait_for(
        lambda: len(m := [x for x in probe.records(t.DEADLETTER.name) if x.key() == key]) >= 2 and m,
        what="dead letters",
    )
    assert len(dead) == 2
    assert {gk.header(m, "source_topic") for m in dead} == {"locations"}
    assert {m.value() for m in dead} == {b"{not json", b'{"id": 1}'}
    assert all(gk.header(m, "error") for m in dead)
