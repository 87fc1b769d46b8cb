"""The live view's rules with an injected clock: ordering, expiry, alerts, suppression, nearest."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from consumers.locations.board import render
from consumers.locations.service import rebuild_offset
from consumers.locations.view import LiveView, Rules, alert_id, geodesic_m, position_from_sale
from consumers.locations.web import create_app
from gremio.records import CartPosition, FugitiveReport, Sale
from gremio.settings import Settings
from tests.support import staff_auth

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
PLAZA = (-33.43780, -70.65045)  # Plaza de Armas, Santiago


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def view(clock: Clock) -> LiveView:
    live = LiveView(Rules.from_settings(), clock)
    live.set_members({"BBCL12": "Ana Pérez", "CDFG34": "Luis Soto"})
    return live


def ping(plate: str, lat: float, lon: float, at: datetime, received: datetime | None = None) -> CartPosition:
    return CartPosition(
        id=uuid.uuid4(), plate=plate, lat=lat, lon=lon, recorded_at=at, received_at=received or at
    )


def sale(plate: str, lat: float, lon: float, at: datetime, received: datetime | None = None) -> Sale:
    return Sale(
        id=uuid.uuid4(), plate=plate, client="ana", quantity=2, sold_at=at, stock_remaining=50,
        lat=lat, lon=lon, received_at=received or at,
    )  # fmt: skip


def report(lat: float, lon: float, at: datetime, plate: str | None = None) -> FugitiveReport:
    return FugitiveReport(
        id=uuid.uuid4(), lat=lat, lon=lon, description="sin patente", plate=plate, received_at=at
    )


def kinds(effects) -> list[str]:
    return [r.alert.kind for r in effects.alerts]


# --- ordering and sources -------------------------------------------------------------------


def test_newest_position_wins_and_an_older_one_is_ignored(view: LiveView, clock: Clock) -> None:
    view.apply(ping("BBCL12", *PLAZA, T0))
    clock.advance(10)
    newer = view.apply(ping("BBCL12", -33.43790, -70.65045, T0 + timedelta(seconds=10)))
    assert newer.applied == 1
    clock.advance(5)
    late = view.apply(ping("BBCL12", -33.5, -70.7, T0 + timedelta(seconds=5), received=clock.now))
    assert (late.applied, late.stale, late.alerts) == (0, 1, [])
    [cart] = view.carts()
    assert (cart.lat, cart.lon, cart.recorded_at) == (-33.43790, -70.65045, T0 + timedelta(seconds=10))
    # ...but it arrived, so the cart is alive as of its arrival.
    assert cart.seen_at == clock.now


def test_sales_are_positions_ordered_by_sold_at(view: LiveView, clock: Clock) -> None:
    view.apply(sale("BBCL12", *PLAZA, T0))
    assert [(c.lat, c.lon) for c in view.carts()] == [PLAZA]
    clock.advance(20)
    view.apply(ping("BBCL12", -33.43800, -70.65045, T0 + timedelta(seconds=20)))
    late_sale = view.apply(sale("BBCL12", -33.44, -70.66, T0 + timedelta(seconds=15), received=clock.now))
    assert late_sale.stale == 1
    assert view.carts()[0].lat == -33.43800
    clock.advance(10)
    view.apply(sale("BBCL12", -33.43810, -70.65045, T0 + timedelta(seconds=30)))
    assert view.carts()[0].lat == -33.43810


def test_a_sale_position_has_a_stable_id() -> None:
    s = sale("BBCL12", *PLAZA, T0)
    assert position_from_sale(s).id == position_from_sale(s).id != s.id
    assert position_from_sale(s).recorded_at == s.sold_at


# --- expiry ---------------------------------------------------------------------------------


def test_default_ttl_is_60_seconds() -> None:
    assert Settings.model_fields["live_ttl_seconds"].default == 60
    assert Rules.from_settings().ttl == timedelta(seconds=60)


def test_cart_expires_after_the_ttl_without_a_received_position(view: LiveView, clock: Clock) -> None:
    view.apply(ping("BBCL12", *PLAZA, T0))
    clock.advance(60)
    assert [c.plate for c in view.carts()] == ["BBCL12"]
    clock.advance(0.5)
    assert view.carts() == []
    assert [c.plate for c in view.expire()] == ["BBCL12"]
    assert view.snapshot()["carts"] == []


def test_a_cart_that_comes_back_after_expiring_starts_afresh(view: LiveView, clock: Clock) -> None:
    view.apply(ping("BBCL12", *PLAZA, T0))
    clock.advance(120)
    # 2 km in 120 s is 60 km/h, but the first position is no longer live: no jump.
    back = view.apply(ping("BBCL12", PLAZA[0] - 0.018, PLAZA[1], clock.now))
    assert kinds(back) == []
    assert view.carts()[0].speed_kmh is None


# --- alerts ---------------------------------------------------------------------------------


def test_jump_is_raised_over_the_speed_limit_and_suppressed_for_five_minutes(
    view: LiveView, clock: Clock
) -> None:
    first = ping("BBCL12", *PLAZA, T0)
    view.apply(first)
    clock.advance(10)
    # 0.001° of latitude is about 111 m: 111 m in 10 s is 40 km/h.
    second = ping("BBCL12", PLAZA[0] - 0.001, PLAZA[1], clock.now)
    effects = view.apply(second)
    [raised] = effects.alerts
    alert = raised.alert
    assert (alert.kind, alert.plate, alert.lat, alert.lon) == ("jump", "BBCL12", second.lat, second.lon)
    assert alert.id == alert_id(second.id, "jump")
    assert alert.created_at == clock.now
    assert raised.key == "BBCL12"
    assert "km/h" in alert.detail
    assert view.carts()[0].speed_kmh == pytest.approx(geodesic_m(*PLAZA, second.lat, second.lon) / 10 * 3.6)
    clock.advance(10)  # another 40 km/h: suppressed
    assert kinds(view.apply(ping("BBCL12", PLAZA[0] - 0.002, PLAZA[1], clock.now))) == []
    clock.advance(289)  # 299 s after the alert: 3.3 km in 289 s, still suppressed
    assert kinds(view.apply(ping("BBCL12", PLAZA[0] - 0.032, PLAZA[1], clock.now))) == []
    clock.advance(2)  # 301 s after it: raised again
    assert kinds(view.apply(ping("BBCL12", PLAZA[0] - 0.033, PLAZA[1], clock.now))) == ["jump"]


def test_the_jump_limit_is_decided_by_the_geodesic(clock: Clock) -> None:
    """Just over and just under 30 km/h, by the WGS84 geodesic (haversine alone is off by ~0.3 % here)."""
    for share, raised in ((1.0005, ["jump"]), (0.9995, [])):
        live = LiveView(Rules.from_settings(), clock)
        live.set_members({"BBCL12": "Ana"})
        live.apply(ping("BBCL12", *PLAZA, T0))
        metres_per_degree = geodesic_m(PLAZA[0], PLAZA[1], PLAZA[0] - 0.01, PLAZA[1]) / 0.01
        seconds = 0.01 * metres_per_degree / (30 / 3.6) / share
        after = T0 + timedelta(seconds=seconds)
        effects = live.apply(ping("BBCL12", PLAZA[0] - 0.01, PLAZA[1], after))
        assert kinds(effects) == raised
        assert live.carts()[0].speed_kmh == pytest.approx(30 * share, rel=1e-6)  # µs timestamps


def test_walking_pace_is_no_jump(view: LiveView, clock: Clock) -> None:
    view.apply(ping("BBCL12", *PLAZA, T0))
    clock.advance(60)
    # 0.0005° ≈ 55 m in 60 s: 3.3 km/h.
    assert kinds(view.apply(ping("BBCL12", PLAZA[0] - 0.0005, PLAZA[1], clock.now))) == []


def test_out_of_area_and_its_suppression(view: LiveView, clock: Clock) -> None:
    valparaiso = (-33.0458, -71.6197)
    effects = view.apply(ping("BBCL12", *valparaiso, T0))
    [raised] = effects.alerts
    assert (raised.alert.kind, raised.alert.plate, raised.alert.lat) == (
        "out_of_area",
        "BBCL12",
        valparaiso[0],
    )
    clock.advance(60)
    assert kinds(view.apply(ping("BBCL12", valparaiso[0], valparaiso[1] + 0.0001, clock.now))) == []
    assert kinds(view.apply(ping("CDFG34", *valparaiso, clock.now))) == ["out_of_area"]


def test_the_area_boundary_is_inside() -> None:
    rules = Rules.from_settings()
    assert rules.in_area(-33.75, -70.95) and rules.in_area(-33.15, -70.40)
    assert not rules.in_area(-33.7501, -70.6) and not rules.in_area(-33.4, -70.3999)


def test_unregistered_cart_once_per_window_for_pings_and_sales(view: LiveView, clock: Clock) -> None:
    effects = view.apply(sale("ZZ9999", *PLAZA, T0))
    [raised] = effects.alerts
    assert (raised.alert.kind, raised.alert.plate) == ("unregistered_cart", "ZZ9999")
    assert "sale" in raised.alert.detail
    clock.advance(30)
    assert kinds(view.apply(ping("ZZ9999", *PLAZA, clock.now))) == []
    clock.advance(300)
    assert kinds(view.apply(ping("ZZ9999", *PLAZA, clock.now))) == ["unregistered_cart"]
    assert kinds(view.apply(ping("BBCL12", *PLAZA, clock.now))) == []
    assert [c["registered"] for c in view.snapshot()["carts"]] == [True, False]


def test_suppression_seeded_from_earlier_alerts(view: LiveView, clock: Clock) -> None:
    view.seed_suppression([("unregistered_cart", "ZZ9999", T0 - timedelta(seconds=100))])
    assert kinds(view.apply(ping("ZZ9999", *PLAZA, T0))) == []
    clock.advance(200)
    assert kinds(view.apply(ping("ZZ9999", *PLAZA, clock.now))) == ["unregistered_cart"]


def test_unknown_plates_are_the_ones_about_to_raise_unregistered_cart(view: LiveView, clock: Clock) -> None:
    batch = [
        ping("ZZ9999", *PLAZA, T0), sale("ZZ9999", *PLAZA, T0), ping("BBCL12", *PLAZA, T0),
        ping("YY8888", *PLAZA, T0), report(*PLAZA, T0, plate="XX7777"),
    ]  # fmt: skip
    assert view.unknown_plates(batch) == ["YY8888", "ZZ9999"]  # members and reports need no lookup
    assert view.unknown_plates([]) == []
    view.apply(ping("ZZ9999", *PLAZA, T0))
    # A cart already alerted for costs no lookup while it keeps pinging, until its window ends.
    clock.advance(299)
    assert view.unknown_plates(batch) == ["YY8888"]
    assert view.unknown_plates(batch, T0 + timedelta(seconds=300)) == ["YY8888", "ZZ9999"]


def test_a_member_found_by_the_lookup_raises_nothing(view: LiveView, clock: Clock) -> None:
    view.apply(ping("ZZ9999", *PLAZA, T0))  # before the approval: a true alert
    clock.advance(300)
    fresh = ping("ZZ9999", *PLAZA, clock.now)
    assert view.unknown_plates([fresh, ping("YY8888", *PLAZA, clock.now)]) == ["YY8888", "ZZ9999"]
    view.add_members({"ZZ9999": "Rosa Díaz"})  # what the service found in `members`
    assert kinds(view.apply(fresh)) == []
    assert kinds(view.apply(ping("YY8888", *PLAZA, clock.now))) == ["unregistered_cart"]
    assert view.master("ZZ9999") == "Rosa Díaz" and view.master("BBCL12") == "Ana Pérez"
    view.set_members({"BBCL12": "Ana Pérez"})  # the periodic refresh still removes members
    assert view.master("ZZ9999") is None


def test_a_batch_judged_at_one_time_agrees_with_its_lookup(view: LiveView, clock: Clock) -> None:
    view.apply(ping("ZZ9999", *PLAZA, T0))
    at = T0 + timedelta(seconds=299.999)
    batch = [ping("ZZ9999", *PLAZA, at)]
    assert view.unknown_plates(batch, at) == []
    clock.advance(400)  # the clock moves on while the batch is handled: `now` keeps the lookup's time
    assert kinds(view.apply(batch[0], now=at)) == []
    raised = view.apply(ping("ZZ9999", *PLAZA, clock.now), now=T0 + timedelta(seconds=301)).alerts
    assert [r.alert.created_at for r in raised] == [T0 + timedelta(seconds=301)]


def test_replayed_records_rebuild_the_view_but_raise_nothing(view: LiveView, clock: Clock) -> None:
    view.apply(ping("ZZ9999", -33.0, -71.6, T0), replay=True)
    clock.advance(5)
    assert kinds(view.apply(ping("ZZ9999", -33.2, -71.6, clock.now), replay=True)) == []
    assert view.apply(report(*PLAZA, clock.now), replay=True).reports == []
    assert [c.plate for c in view.carts()] == ["ZZ9999"]


def test_the_same_record_gives_the_same_alert_id(clock: Clock) -> None:
    record = ping("ZZ9999", -33.0, -71.6, T0)
    first = {r.alert.id for r in LiveView(Rules.from_settings(), clock).apply(record).alerts}
    again = {r.alert.id for r in LiveView(Rules.from_settings(), clock).apply(record).alerts}
    assert first == again == {alert_id(record.id, "unregistered_cart"), alert_id(record.id, "out_of_area")}


# --- fugitive reports -----------------------------------------------------------------------


def test_report_names_nearest_registered_cart_within_radius(view: LiveView, clock: Clock) -> None:
    view.apply(ping("BBCL12", PLAZA[0] - 0.0005, PLAZA[1], T0))  # ~55 m south
    view.apply(ping("ZZ9999", PLAZA[0] + 0.0003, PLAZA[1], T0))  # ~33 m north, unregistered
    view.apply(ping("CDFG34", PLAZA[0], PLAZA[1] + 0.01, T0))  # ~930 m east
    clock.advance(1)
    fugitive = report(*PLAZA, clock.now, plate="XY1234")
    effects = view.apply(fugitive)
    [seen] = effects.reports
    assert seen.nearest_plate == "ZZ9999"  # the nearest live cart, registered or not
    assert seen.nearest_distance_m == pytest.approx(geodesic_m(*PLAZA, PLAZA[0] + 0.0003, PLAZA[1]))
    [raised] = effects.alerts
    alert = raised.alert
    assert (alert.kind, alert.plate, alert.lat, alert.lon) == ("fugitive_report", "BBCL12", *PLAZA)
    assert alert.id == alert_id(fugitive.id, "fugitive_report")
    assert raised.key == str(fugitive.id)
    assert "BBCL12" in alert.detail and "XY1234" in alert.detail
    snap = view.snapshot()
    assert snap["reports"][0]["nearest_plate"] == "ZZ9999"
    assert snap["alerts"][0]["kind"] == "fugitive_report"


def test_every_report_raises_even_with_no_cart_near(view: LiveView, clock: Clock) -> None:
    view.apply(ping("BBCL12", PLAZA[0] - 0.002, PLAZA[1], T0))  # ~220 m: beyond 100 m
    first = view.apply(report(*PLAZA, T0))
    second = view.apply(report(*PLAZA, T0))
    assert [r.alert.plate for r in first.alerts + second.alerts] == [None, None]
    assert first.reports[0].nearest_plate == "BBCL12"
    assert "no registered cart within 100 m" in first.alerts[0].alert.detail


def test_report_with_no_live_cart(clock: Clock) -> None:
    effects = LiveView(Rules.from_settings(), clock).apply(report(*PLAZA, T0))
    assert (effects.reports[0].nearest_plate, effects.reports[0].nearest_distance_m) == (None, None)


def test_reports_leave_the_view_after_the_window(view: LiveView, clock: Clock) -> None:
    view.apply(report(*PLAZA, T0))
    clock.advance(600)
    assert len(view.snapshot()["reports"]) == 1
    clock.advance(1)
    view.expire()
    assert view.snapshot()["reports"] == []


def test_nearest_prefilter_agrees_with_brute_force(clock: Clock) -> None:
    rng = random.Random(7)
    live = LiveView(Rules.from_settings(), clock)
    for i in range(400):
        lat, lon = PLAZA[0] + rng.uniform(-0.3, 0.3), PLAZA[1] + rng.uniform(-0.3, 0.3)
        live.apply(ping(f"AB{i:04d}", lat, lon, T0), replay=True)
    for _ in range(50):
        lat, lon = PLAZA[0] + rng.uniform(-0.5, 0.5), PLAZA[1] + rng.uniform(-0.5, 0.5)
        cart, distance = live.nearest(lat, lon)
        best = min(geodesic_m(lat, lon, c.lat, c.lon) for c in live.carts())
        assert distance == best
        assert geodesic_m(lat, lon, cart.lat, cart.lon) == best


# --- scale-out and rebuild helpers ----------------------------------------------------------


def test_the_unknown_carts_near_a_report_are_the_ones_to_look_up(view: LiveView, clock) -> None:
    # Carts another instance holds reach this view only through the mirror, unlooked-up.
    view.set_members({"BBCL12": "Rosa"})
    view.apply(ping("BBCL12", *PLAZA, T0), replay=True)  # a member, near
    view.apply(ping("CDFG34", PLAZA[0], PLAZA[1] + 0.0009, T0), replay=True)  # ~84 m east
    view.apply(ping("DFGH56", PLAZA[0], PLAZA[1] + 0.0013, T0), replay=True)  # ~120 m: out of reach
    view.apply(ping("FGHJ78", PLAZA[0] + 0.5, PLAZA[1], T0), replay=True)  # far away
    near = report(*PLAZA, T0)
    assert view.unknown_near([]) == []
    assert view.unknown_near([near]) == ["CDFG34"]
    assert view.unknown_near([near, report(PLAZA[0] + 0.5, PLAZA[1], T0)]) == ["CDFG34", "FGHJ78"]
    clock.advance(view.rules.ttl.total_seconds() + 1)
    assert view.unknown_near([near]) == [], "an expired cart is matched by nobody"


def test_keep_carts_drops_those_of_other_instances(view: LiveView) -> None:
    for plate in ("BBCL12", "CDFG34", "ZZ9999"):
        view.apply(ping(plate, *PLAZA, T0), replay=True)
    assert sorted(view.keep_carts(lambda plate: plate != "CDFG34")) == ["CDFG34"]
    assert [c.plate for c in view.carts()] == ["BBCL12", "ZZ9999"]


@pytest.mark.parametrize(
    ("committed", "at_time", "start"),
    [
        (-1001, 40, 40),  # a new group: the TTL window
        (-1001, -1, 120),  # a new group, nothing in the window: the end, as it is now
        (100, 40, 40),  # processed up to 100: replay from 40 to rebuild
        (30, 40, 30),  # committed before the window: nothing unprocessed is skipped
        (100, -1, 100),  # nothing in the window: carry on from the commit
    ],
)
def test_rebuild_offset(committed: int, at_time: int, start: int) -> None:
    assert rebuild_offset(committed, at_time, end=120) == start


# --- screen and HTTP ---------------------------------------------------------------------------


def test_board_and_http_show_the_same_view(view: LiveView, clock: Clock) -> None:
    from zoneinfo import ZoneInfo

    view.apply(ping("BBCL12", *PLAZA, T0))
    view.apply(ping("ZZ9999", -33.0, -71.6, T0))
    view.apply(report(*PLAZA, T0))
    console = Console(record=True, width=200)
    console.print(render(view.snapshot(), ZoneInfo("America/Santiago")))
    screen = console.export_text()
    assert "BBCL12" in screen and "Ana Pérez" in screen and "unregistered" in screen
    assert "out_of_area" in screen and "fugitive_report" in screen
    client = create_app(view).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = staff_auth()["Authorization"]  # the staff login
    body = client.get("/v1/live").get_json()
    assert set(body) == {"carts", "reports", "alerts"}
    assert [c["plate"] for c in body["carts"]] == ["BBCL12", "ZZ9999"]
    assert body["carts"][0] == {
        "plate": "BBCL12", "master": "Ana Pérez", "registered": True, "lat": PLAZA[0], "lon": PLAZA[1],
        "recorded_at": T0.isoformat(), "seen_at": T0.isoformat(), "seconds_since_seen": 0.0,
        "speed_kmh": None,
    }  # fmt: skip
    assert client.get("/metrics").status_code == 200
    assert client.get("/").status_code == 200  # the live map page (docs/WEB.md)
