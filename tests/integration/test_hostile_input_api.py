"""Hostile text and stale times through the real API (issue 12: accepted means processable).

Every refusal is a problem+json whose `errors` name the field as the client wrote it and the
character that was refused, never the text it was hidden in; nothing reaches a topic.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ingest_api import create_app
from tests.integration.api_support import PLATE, auth, member, sale
from tests.support import TopicProbe

HIDDEN_TEXT = "texto-que-no-debe-volver"  # hidden around the bad character; never echoed


def spanish(**fields) -> dict:
    """A member application with its first name sent as `nombre`."""
    return {k: v for k, v in member().items() if k != "first_name"} | fields


def days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


def refused(response, status: int = 422) -> dict[str, str]:
    """{field: message} of a problem+json answer."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status
    return {e["field"]: e["message"] for e in body["errors"]}


HIDDEN = [
    ("/v1/members", member(first_name=f"{HIDDEN_TEXT}\u202e"), "first_name", "U+202E"),
    ("/v1/members", spanish(nombre=f"{HIDDEN_TEXT}\x00"), "nombre", "U+0000"),
    ("/v1/members", member(last_name=f"Soto\n{HIDDEN_TEXT}"), "last_name", "U+000A"),
    ("/v1/members", member(email=f"{HIDDEN_TEXT}\u200b@example.cl"), "email", "U+200B"),
    ("/v1/members", member(rut="12.345.678-5\n"), "rut", "U+000A"),
    ("/v1/members", member(plate="ßBCL12"), "plate", "U+00DF"),
    ("/v1/sales", sale(client=f"{HIDDEN_TEXT}\x9b31m"), "client", "U+009B"),
    ("/v1/sales", sale(client=f"{HIDDEN_TEXT}\u2066"), "client", "U+2066"),
    ("/v1/locations", {"plate": "BBCL12\n", "lat": -33.44, "lon": -70.65}, "plate", "U+000A"),
    ("/v1/reports", {"lat": -33.4, "lon": -70.6, "description": f"{HIDDEN_TEXT}\u2028"}, "description", "U+2028"),
    ("/v1/reports", {"lat": -33.4, "lon": -70.6, "description": f"{HIDDEN_TEXT}\x7f"}, "description", "U+007F"),
    ("/v1/reports", {"lat": -33.4, "lon": -70.6, "patente": "ＡＢ１２３４\ufeff"}, "patente", "U+FEFF"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "field", "char"), HIDDEN, ids=[f"{h[2]}-{h[3]}" for h in HIDDEN])
def test_hidden_characters_get_a_422_naming_the_field_and_the_character(client, path, body, field, char):
    probe = TopicProbe()
    errors = refused(client.post(path, json=body, headers=auth()))
    assert field in errors, errors
    assert char in errors[field]
    assert HIDDEN_TEXT not in json.dumps(errors)
    assert probe.records() == []


def test_a_lone_surrogate_is_not_valid_json(client):
    probe = TopicProbe()
    raw = json.dumps(member()).replace('"Ana"', '"\\ud800"').encode()
    errors = refused(client.post("/v1/members", data=raw, content_type="application/json"), 400)
    assert list(errors) == ["body"]
    assert probe.records() == []


def test_a_batch_item_with_a_hidden_character_is_named_by_its_index(client):
    probe = TopicProbe()
    errors = refused(
        client.post("/v1/sales/batch", json={"sales": [sale(client="a\u200db"), sale(sold_at=days_ago(8))]},
                    headers=auth())
    )  # fmt: skip
    assert "U+200D" in errors["sales[0].client"]
    assert "more than 7 days old" in errors["sales[1].sold_at"]
    assert probe.records() == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [("/v1/sales", sale(sold_at=days_ago(8)), "sold_at"), ("/v1/sales", sale(hora=days_ago(30)), "hora"),
     ("/v1/locations", {"plate": PLATE, "lat": -33.44, "lon": -70.65, "recorded_at": days_ago(7.01)}, "recorded_at")],
)  # fmt: skip
def test_times_older_than_sales_max_age_days_get_a_422_with_the_reason(client, path, body, field):
    probe = TopicProbe()
    errors = refused(client.post(path, json=body, headers=auth()))
    assert "is more than 7 days old; the oldest" in errors[field]
    assert "SALES_MAX_AGE_DAYS" in errors[field]
    assert probe.records() == []


def test_the_age_limit_is_the_setting():
    strict = create_app({"TESTING": True, "SALES_MAX_AGE_DAYS": 2}).test_client()
    errors = refused(strict.post("/v1/sales", json=sale(sold_at=days_ago(3)), headers=auth()))
    assert "is more than 2 days old" in errors["sold_at"]


def test_text_is_stored_trimmed_nfc_and_a_description_folded(client):
    probe = TopicProbe()
    answer = client.post(
        "/v1/sales", json=sale(client="  Cafe\u0301 7 ", sold_at=days_ago(6.9)), headers=auth()
    )
    assert answer.status_code == 202, answer.get_data(as_text=True)
    reported = client.post(
        "/v1/reports", json={"lat": -33.4, "lon": -70.6, "description": " carro\r\nsin\tcredencial "}
    )
    assert reported.status_code == 202, reported.get_data(as_text=True)
    values = {msg.topic(): json.loads(msg.value()) for msg in probe.records()}
    assert values["sales"]["client"] == "Café 7"
    assert values["locations"]["description"] == "carro sin credencial"
