"""The ingest API against the real broker. Invalid input: a 4xx problem naming the field, and nothing produced."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.api_support import auth, fields, member, position, problem, report, sale, without
from tests.support import TopicProbe

FUTURE = (datetime.now(UTC) + timedelta(hours=1)).isoformat()


INVALID = [
    # (name, path, body, status, field that must be named)
    ("rut check digit", "/v1/members", member(rut="12.345.678-0"), 422, "rut"),
    ("malformed email", "/v1/members", member(email="ana@@example"), 422, "email"),
    ("malformed correo", "/v1/members", {**without(member(), "email"), "correo": "no-arroba"}, 422, "correo"),
    ("bad member plate", "/v1/members", member(plate="ABC123"), 422, "plate"),
    ("bad sale plate", "/v1/sales", sale(plate="A1"), 422, "plate"),
    ("quantity 0", "/v1/sales", sale(quantity=0), 422, "quantity"),
    ("quantity 1001", "/v1/sales", sale(quantity=1001), 422, "quantity"),
    ("quantity 2.5", "/v1/sales", sale(quantity=2.5), 422, "quantity"),
    ("quantity as text", "/v1/sales", sale(quantity="2"), 422, "quantity"),
    ("negative stock", "/v1/sales", sale(stock_remaining=-1), 422, "stock_remaining"),
    ("lat 91", "/v1/locations", position(lat=91), 422, "lat"),
    ("lat 91 in a sale", "/v1/sales", sale(location={"lat": 91, "lon": -70.6}), 422, "location.lat"),
    ("lat 91 in a report", "/v1/reports", report(lat=91), 422, "lat"),
    ("null island", "/v1/locations", position(lat=0, lon=0), 422, "lon"),
    ("null island in a sale", "/v1/sales", sale(location={"lat": 0, "lon": 0}), 422, "location.lon"),
    ("null island in a report", "/v1/reports", report(lat=0.0, lon=0.0), 422, "lon"),
    ("position an hour ahead", "/v1/locations", position(recorded_at=FUTURE), 422, "recorded_at"),
    ("sale an hour ahead", "/v1/sales", sale(sold_at=FUTURE), 422, "sold_at"),
    ("naive time", "/v1/locations", position(recorded_at="2025-01-01T10:00:00"), 422, "recorded_at"),
    ("missing client", "/v1/sales", without(sale(), "client"), 422, "client"),
    ("missing rut", "/v1/members", without(member(), "rut"), 422, "rut"),
    ("blank name", "/v1/members", member(first_name="   "), 422, "first_name"),
    ("unknown field", "/v1/locations", position(speed=3), 422, "speed"),
    ("long description", "/v1/reports", report(description="x" * 501), 422, "description"),
    ("batch of 501", "/v1/sales/batch", {"sales": [sale()] * 501}, 422, "sales"),
    ("empty batch", "/v1/sales/batch", {"sales": []}, 422, "sales"),
    (
        "batch of only bad sales",
        "/v1/sales/batch",
        {"sales": [sale(quantity=0), 7]},
        422,
        "sales[0].quantity",
    ),
    ("body not an object", "/v1/sales", [sale()], 422, "body"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "field"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_input_is_refused_naming_the_field(client, path, body, status, field):
    probe = TopicProbe()
    answer = client.post(path, json=body, headers=auth())
    assert field in fields(problem(answer, status))
    assert probe.records() == []


def test_every_bad_field_is_named_at_once(client):
    probe = TopicProbe()
    answer = client.post(
        "/v1/members", json=member(rut="1-1", email="x", plate="?", premium="yes", first_name="")
    )
    named = fields(problem(answer, 422))
    assert named == {"rut", "email", "plate", "premium", "first_name"}
    assert probe.records() == []


RAW = [
    ("not JSON", "/v1/sales", b"plate=BBCL12&quantity=2", "application/json", 400, "body"),
    ("truncated JSON", "/v1/members", b'{"rut": "1-9"', "application/json", 400, "body"),
    ("not UTF-8", "/v1/reports", b'{"lat": "\xff"}', "application/json", 400, "body"),
    ("text/plain", "/v1/sales", json.dumps(sale()).encode(), "text/plain", 415, "Content-Type"),
    ("form", "/v1/members", b"rut=1-9", "application/x-www-form-urlencoded", 415, "Content-Type"),
    ("no content type", "/v1/locations", json.dumps(position()).encode(), None, 415, "Content-Type"),
    (
        "over 16 KiB",
        "/v1/sales",
        json.dumps(sale(client="x" * 17000)).encode(),
        "application/json",
        413,
        "body",
    ),
    ("over 16 KiB of report", "/v1/reports", b" " * 16385, "application/json", 413, "body"),
    (
        "batch over 256 KiB",
        "/v1/sales/batch",
        json.dumps({"sales": [sale(client="c" * 70)] * 2000}).encode(),
        "application/json",
        413,
        "body",
    ),
]


@pytest.mark.parametrize(
    ("path", "data", "content_type", "status", "field"), [c[1:] for c in RAW], ids=[c[0] for c in RAW]
)
def test_unreadable_bodies_are_refused(client, path, data, content_type, status, field):
    probe = TopicProbe()
    headers = {**auth(), **({"Content-Type": content_type} if content_type else {})}
    answer = client.post(path, data=data, headers=headers)
    assert field in fields(problem(answer, status))
    assert probe.records() == []


def test_errors_for_unknown_paths_and_methods_are_problems(client):
    problem(client.get("/v1/nothing"), 404)
    problem(client.get("/v1/sales"), 405)
