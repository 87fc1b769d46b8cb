"""GET /v1/live's query: area (bbox), pages (limit, after), and a clear 400 for anything else."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.locations.view import Area, LiveView, Rules
from consumers.locations.web import MAX_LIMIT, create_app
from gremio.records import CartPosition
from tests.support import staff_auth

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
LETTERS = "BCDFGHJKLPRSTVWXYZ"


def plate(i: int) -> str:
    return f"{LETTERS[i // 100 % 18]}{LETTERS[i // 10 % 10]}CL{i % 100:02d}"


@pytest.fixture(scope="module")
def view() -> LiveView:
    """60 carts on a 10 x 6 grid around Santiago (lon -70.70..-70.61, lat -33.50..-33.45)."""
    live = LiveView(Rules.from_settings(), lambda: T0)
    live.set_members({plate(i): f"Maestro {i}" for i in range(0, 60, 2)})
    for i in range(60):
        live.apply(CartPosition(
            id=uuid.uuid4(), plate=plate(i), lat=-33.50 + (i // 10) * 0.01, lon=-70.70 + (i % 10) * 0.01,
            recorded_at=T0, received_at=T0,
        ))  # fmt: skip
    return live


@pytest.fixture(scope="module")
def client(view):
    app = create_app(view).test_client()
    app.environ_base["HTTP_AUTHORIZATION"] = staff_auth()["Authorization"]
    return app


def test_without_parameters_the_body_is_the_whole_view_as_before(client, view):
    body = client.get("/v1/live").get_json()
    assert set(body) == {"carts", "reports", "alerts"}
    assert [c["plate"] for c in body["carts"]] == sorted(plate(i) for i in range(60))
    assert body == view.snapshot()
    cart = body["carts"][0]
    assert set(cart) == {"plate", "master", "registered", "lat", "lon", "recorded_at", "seen_at",
                         "seconds_since_seen", "speed_kmh"}  # fmt: skip
    assert cart["recorded_at"] == T0.isoformat() and cart["seconds_since_seen"] == 0.0


def test_bbox_keeps_the_carts_inside_it(client):
    body = client.get("/v1/live?bbox=-70.705,-33.505,-70.675,-33.485").get_json()
    inside = {plate(i) for i in range(60) if i // 10 <= 1 and i % 10 <= 2}
    assert {c["plate"] for c in body["carts"]} == inside and "next" not in body
    assert all(-70.705 <= c["lon"] <= -70.675 and -33.505 <= c["lat"] <= -33.485 for c in body["carts"])
    assert client.get("/v1/live?bbox=0,0,1,1").get_json()["carts"] == []


def test_pages_walk_every_cart_once_in_plate_order(client):
    seen, after, pages = [], None, 0
    while True:
        body = client.get(
            "/v1/live", query_string={"limit": 7, **({"after": after} if after else {})}
        ).get_json()
        pages += 1
        seen += [c["plate"] for c in body["carts"]]
        assert len(body["carts"]) <= 7
        after = body["next"]
        if after is None:
            break
    assert seen == sorted(plate(i) for i in range(60)) and pages == 9


def test_a_page_of_an_area(client):
    body = client.get("/v1/live?bbox=-70.70,-33.50,-70.61,-33.49&limit=5").get_json()
    assert [c["plate"] for c in body["carts"]] == sorted(plate(i) for i in range(20))[:5]
    assert body["next"] == body["carts"][-1]["plate"]
    rest = client.get(
        f"/v1/live?bbox=-70.70,-33.50,-70.61,-33.49&limit={MAX_LIMIT}&after={body['next']}"
    ).get_json()
    assert len(rest["carts"]) == 15 and rest["next"] is None


def test_area_contains_its_edges():
    area = Area(-70.7, -33.5, -70.6, -33.4)
    assert area.contains(-33.5, -70.7) and area.contains(-33.4, -70.6) and not area.contains(-33.39, -70.65)


BAD = [
    "bbox=", "bbox=1,2,3", "bbox=1,2,3,4,5", "bbox=nan,0,1,1", "bbox=NaN,0,1,1", "bbox=inf,0,1,1",
    "bbox=-inf,-90,180,90", "bbox=1e2,0,1,1", "bbox=1_0,0,20,1", "bbox=%20-70,-33,-70,-33",
    "bbox=-70.6,-33.5,-70.7,-33.4", "bbox=-70.7,-33.4,-70.6,-33.5", "bbox=-181,0,0,1", "bbox=0,-91,1,0",
    "bbox=0x1,0,1,1", "bbox=%D9%A1,0,1,1", "bbox=1,2,3,4%00", "bbox=1;drop table alerts,2,3,4",
    "bbox=" + "1" * 500 + ",0,1,1", "bbox=0,0,1,1&bbox=0,0,2,2",
    "limit=0", "limit=-1", "limit=1001", "limit=99999999999999999999", "limit=1.5", "limit=abc", "limit=",
    "limit=%EF%BC%91", "limit=+5", "limit=%205", "limit=1e3", "limit=5&limit=6",
    "after=", "after=bbcl12", "after=BBCL12%0A", "after=' OR 1=1 --", "after=<script>", "after=BBCL12&after=CDFG34",
    "page=2", "bbox=0,0,1,1&sort=plate", "%FF=1",
]  # fmt: skip


@pytest.mark.parametrize("query", BAD)
def test_hostile_query_strings_get_a_clear_400_and_change_nothing(client, view, query):
    before = view.snapshot()
    response = client.get(f"/v1/live?{query}")
    assert response.status_code == 400, query
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == 400 and problem["detail"] and problem["instance"] == "/v1/live"
    assert view.snapshot() == before


def test_the_login_comes_before_the_query(view):
    assert create_app(view).test_client().get("/v1/live?limit=abc").status_code == 401


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["bbox", "limit", "after", "x"]), st.text(max_size=40), max_size=3))
def test_any_query_is_answered_200_or_400(client, view, params):
    before = view.snapshot()
    response = client.get("/v1/live", query_string=params)
    assert response.status_code in (200, 400), params
    if response.status_code == 200:
        body = response.get_json()
        assert set(body) >= {"carts", "reports", "alerts"}
        if "limit" in params:
            assert len(body["carts"]) <= int(params["limit"])
    else:
        assert response.get_json()["detail"]
    assert view.snapshot() == before


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-180, 180), st.floats(-180, 180), st.floats(-90, 90), st.floats(-90, 90),
    st.integers(1, MAX_LIMIT),
)  # fmt: skip
def test_any_valid_box_and_limit_gives_the_carts_inside_by_plate(client, view, lon1, lon2, lat1, lat2, limit):
    box = [
        round(min(lon1, lon2), 6),
        round(min(lat1, lat2), 6),
        round(max(lon1, lon2), 6),
        round(max(lat1, lat2), 6),
    ]
    response = client.get(
        "/v1/live", query_string={"bbox": ",".join(f"{v:.6f}" for v in box), "limit": limit}
    )
    assert response.status_code == 200
    area = Area(*(float(f"{v:.6f}") for v in box))
    expected = sorted(c.plate for c in view.carts() if area.contains(c.lat, c.lon))
    assert [c["plate"] for c in response.get_json()["carts"]] == expected[:limit]
