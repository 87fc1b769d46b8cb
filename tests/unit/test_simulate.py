"""The traffic simulator, on a fake clock, against the real app given a do-nothing producer."""

from __future__ import annotations

import argparse
import itertools
import json
import socket
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from gremio import records as r
from gremio.settings import Settings
from gremio.simulate import ApiDown, Reply, Simulation, distance_m, fleet, main, pirates
from gremio.tokens import token_plate
from ingest_api import create_app
from ingest_api.testing import NullProducer

SETTINGS = Settings(cart_token_secret="simulator-test-secret-of-32-bytes-at-least")
START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


class Clock:
    """Monotonic and wall time that only move when the simulation sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def wall(self) -> datetime:
        return START + timedelta(seconds=self.t - 1000.0)


@pytest.fixture(scope="module")
def api():
    app = create_app(
        {"TESTING": True, "CART_TOKEN_SECRET": "simulator-test-secret-of-32-bytes-at-least", "RATE_LIMIT_MEMBERS": "100000/minute",  # pragma: allowlist secret
         "RATE_LIMIT_REPORTS": "100000/minute",
         "MAX_FUTURE_SECONDS": 10**9, "SALES_MAX_AGE_DAYS": 10**6},
        producer=NullProducer(),
    )  # fmt: skip
    return app.test_client()


class Recorder:
    """Sends each request to the app and keeps (time, path, body, headers, status)."""

    def __init__(self, api, clock: Clock, down: tuple[float, float] | None = None) -> None:
        self.api = api
        self.clock = clock
        self.down = down
        self.sent: list[tuple[float, str, dict, dict, int]] = []
        self.refused = 0  # attempts while down

    def post(self, path: str, body, headers: dict[str, str]) -> Reply:
        if self.down and self.down[0] <= self.clock() < self.down[1]:
            self.refused += 1
            raise ApiDown("connection refused")
        answer = self.api.post(path, json=body, headers=headers)
        self.sent.append((self.clock(), path, body, headers, answer.status_code))
        retry = answer.headers.get("Retry-After")
        return Reply(answer.status_code, answer.get_json(silent=True), float(retry) if retry else None)

    def to(self, path: str) -> list[tuple[float, str, dict, dict, int]]:
        return [s for s in self.sent if s[1] == path]


def simulate(
    api, seconds: float, seed: int | None = 7, carts: int = 8, down=None, settings: Settings = SETTINGS
) -> tuple[Simulation, Recorder]:
    clock = Clock()
    recorder = Recorder(api, clock, down)
    sim = Simulation(settings, recorder, carts, seed=seed, clock=clock, wall=clock.wall)
    sim.start()
    sim.run(clock() + seconds, lambda: False, clock.sleep)
    return sim, recorder


# --- who the carts are -----------------------------------------------------------------------------


def test_the_fleet_is_valid_unique_and_the_same_on_every_run():
    owners = fleet(50)
    assert fleet(50) == owners and fleet(20) == owners[:20]
    assert len({o.plate for o in owners}) == 50 and len({r.normalize_rut(o.rut) for o in owners}) == 50
    for owner in owners:
        applied = r.MemberApplicationIn.model_validate(owner.application(premium=True))
        assert applied.plate == owner.plate and r.NEW_PLATE.match(owner.plate)
    assert not set(pirates(3, {o.plate for o in owners})) & {o.plate for o in owners}


def test_the_fleet_does_not_depend_on_the_seed(api):
    a, _ = simulate(api, 1, seed=1)
    b, _ = simulate(api, 1, seed=2)
    assert [c.owner for c in a.carts] == [c.owner for c in b.carts]


def test_every_cart_applies_for_premium_membership_with_a_fixed_key(api):
    sim, sent = simulate(api, 30)
    fleet_applications = [
        s for s in sent.to("/v1/members") if s[3]["Idempotency-Key"].startswith("sim-fleet-")
    ]
    assert sorted(s[2]["plate"] for s in fleet_applications) == sorted(c.plate for c in sim.carts)
    assert all(s[2]["premium"] is True and s[4] == 202 for s in fleet_applications)
    assert {s[3]["Idempotency-Key"] for s in fleet_applications} == {
        f"sim-fleet-{c.plate}" for c in sim.carts
    }


# --- what they do -----------------------------------------------------------------------------------


def test_a_seed_makes_the_run_repeatable(api):
    def shape(recorder: Recorder) -> list:
        return [(round(t, 6), path, json.dumps(body, sort_keys=True), headers.get("Idempotency-Key"))
                for t, path, body, headers, _ in recorder.sent]  # fmt: skip

    _, first = simulate(api, 600, seed=11, carts=4)
    _, again = simulate(api, 600, seed=11, carts=4)
    _, other = simulate(api, 600, seed=12, carts=4)
    assert shape(first) == shape(again)
    assert shape(first) != shape(other)


def test_carts_walk_around_santiago_ping_and_sell(api):
    sim, sent = simulate(api, 1200, carts=6)
    by_plate: dict[str, list[tuple[datetime, float, float]]] = defaultdict(list)
    for _, _, body, headers, status in sent.to("/v1/locations"):
        assert status == 202
        assert token_plate(headers["Authorization"].split()[1], SETTINGS) == body["plate"]
        by_plate[body["plate"]].append(
            (datetime.fromisoformat(body["recorded_at"]), body["lat"], body["lon"])
        )
    for cart in sim.carts:
        pings = by_plate[cart.plate]
        assert len(pings) >= 1200 / SETTINGS.simulate_ping_seconds * 0.5
        walking = 0
        for (t0, *a), (t1, *b) in itertools.pairwise(pings):
            kmh = distance_m(tuple(a), tuple(b)) / max((t1 - t0).total_seconds(), 1e-9) * 3.6
            walking += kmh <= 8
        assert walking >= (len(pings) - 1) * 0.9  # all but the deliberate jumps: walking pace
    inside = [
        SETTINGS.service_area_lat_min < body["lat"] < SETTINGS.service_area_lat_max
        and SETTINGS.service_area_lon_min < body["lon"] < SETTINGS.service_area_lon_max
        for _, _, body, _, _ in sent.to("/v1/locations")
    ]
    assert sum(inside) >= len(inside) - 5  # out-of-area pings are rare events
    sales = sent.to("/v1/sales")
    assert len(sales) > 50 and all(s[4] == 202 for s in sales)
    counts = defaultdict(int)
    for _, _, body, _, _ in sales:
        counts[(body["plate"], body["client"])] += 1
    assert max(counts.values()) >= 2  # returning clients


def test_the_first_refill_orders_are_due_within_minutes_of_make_up(api):
    """A newcomer should see orders soon: some carts set out with the morning's leftovers."""
    _, sent = simulate(api, 300, carts=SETTINGS.simulate_carts)
    low = [
        body
        for _, _, body, _, _ in sent.to("/v1/sales")
        if body["stock_remaining"] < SETTINGS.stock_threshold
    ]
    assert low, "no cart ran low in the first 5 minutes"


@pytest.fixture(scope="module")
def long_run(api) -> tuple[Simulation, Recorder]:
    """Four hours of five carts (pinging every 30 s, to keep it quick)."""
    sparse = SETTINGS.model_copy(update={"simulate_ping_seconds": 30.0})
    return simulate(api, 4 * 3600, carts=5, settings=sparse)


def test_stock_drains_from_100_and_comes_back_after_a_restock(long_run):
    sim, sent = long_run
    for cart in sim.carts:
        stock = [
            body["stock_remaining"]
            for _, _, body, _, _ in sent.to("/v1/sales")
            if body["plate"] == cart.plate
        ]
        assert stock[0] < 100 and min(stock) >= 0
        dips = [i for i in range(1, len(stock)) if stock[i - 1] < 20 <= stock[i]]
        assert dips, f"{cart.plate} never restocked: {stock}"
        assert all(stock[i] > stock[i - 1] for i in dips)


def test_offline_carts_send_their_kept_sales_in_one_batch(long_run):
    _, sent = long_run
    batches = sent.to("/v1/sales/batch")
    assert batches, "no cart went offline in two hours"
    for t, _, body, headers, status in batches:
        assert status == 202 and 1 <= len(body["sales"]) <= 500
        plate = token_plate(headers["Authorization"].split()[1], SETTINGS)
        assert {s["plate"] for s in body["sales"]} == {plate}
        sold = [datetime.fromisoformat(s["sold_at"]) for s in body["sales"]]
        assert sold == sorted(sold) and sold[-1] <= START + timedelta(seconds=t - 1000)


def test_strange_events_and_applicants_show_up(long_run):
    sim, sent = long_run
    plates = {c.plate for c in sim.carts}
    pings = sent.to("/v1/locations")
    assert any(body["plate"] in sim.pirate_plates for _, _, body, _, _ in pings), "no unregistered cart"
    assert any(body["lat"] > SETTINGS.service_area_lat_max for _, _, body, _, _ in pings), (
        "nothing out of area"
    )
    assert sent.to("/v1/reports") and all(s[4] == 202 for s in sent.to("/v1/reports"))
    public = [s for s in sent.to("/v1/members") if not s[3]["Idempotency-Key"].startswith("sim-fleet-")]
    assert {s[4] for s in public} >= {202, 422}, "applicants: some accepted, some refused"
    assert any(s[2].get("premium") for s in public)
    assert all(s[2].get("plate", s[2].get("patente")) not in plates for s in public)


def test_an_api_outage_delays_sales_but_loses_none(api):
    # Down from minute 5 to minute 12 of a 30-minute run.
    sim, sent = simulate(api, 1800, carts=4, down=(1300.0, 1720.0))
    keys = [h["Idempotency-Key"] for _, _, _, h, _ in sent.to("/v1/sales")]
    assert len(keys) == len(set(keys)), "a sale went twice"
    assert not any(c.unsent for c in sim.carts), "sales still waiting after the API came back"
    assert 0 < sent.refused < 30, "backs off instead of hammering a dead API"
    outage = (START + timedelta(seconds=300), START + timedelta(seconds=720))
    late = [
        b
        for t, _, b, _, _ in sent.to("/v1/sales")
        if outage[0] <= datetime.fromisoformat(b["sold_at"]) < outage[1]
    ]
    assert late and all(t >= 1720.0 for t, _, b, _, _ in sent.to("/v1/sales") if b in late)


def test_main_survives_an_api_that_is_not_there(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    args = argparse.Namespace(carts=2, seed=3, api=f"http://127.0.0.1:{port}", duration=2.0, speedup=50.0)
    assert main(args) == 0
    assert any("API unreachable" in m for m in caplog.messages)
