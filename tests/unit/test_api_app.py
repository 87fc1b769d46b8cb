"""The API's request path in-process, with `ingest_api.testing.NullProducer` for a broker.

Unit tests of `intake` (parse, ids, the 202), `problems` (every refusal a problem+json that
names the field) and `openapi` (generated from the models): no Kafka, no database.
"""

from __future__ import annotations

import uuid

import pytest

from gremio import topics as t
from ingest_api import create_app
from ingest_api.testing import NullProducer
from tests.integration.api_support import PLATE, auth, problem

SALE = {"plate": PLATE, "client": "Cliente-7", "quantity": 3, "stock_remaining": 57,
        "location": {"lat": -33.44, "lon": -70.65}}  # fmt: skip
REPORT = {"lat": -33.45, "lon": -70.66, "description": "carro sin credencial"}


@pytest.fixture(scope="module")
def client():
    app = create_app(
        {"TESTING": True, "RATE_LIMIT_MEMBERS": "1000/minute", "RATE_LIMIT_REPORTS": "1000/minute"},
        producer=NullProducer(),
    )
    return app.test_client()


# --- intake -----------------------------------------------------------------------------------------


def test_a_valid_sale_is_answered_202_with_its_id_and_where_it_landed(client):
    answer = client.post("/v1/sales", json=SALE, headers=auth())
    assert answer.status_code == 202, answer.get_data(as_text=True)
    body = answer.get_json()
    assert uuid.UUID(body["id"]) and body["topic"] == t.SALES.name and body["offset"] == 0


def test_the_same_request_with_the_same_key_keeps_its_id(client):
    headers = {**auth(), "Idempotency-Key": "venta-0001"}
    first = client.post("/v1/sales", json=SALE, headers=headers).get_json()["id"]
    again = client.post("/v1/sales", json=SALE, headers=headers).get_json()["id"]
    other = client.post("/v1/sales", json={**SALE, "quantity": 4}, headers=headers).get_json()["id"]
    assert first == again != other


def test_two_reporters_with_one_key_get_two_ids(client):
    headers = {"Idempotency-Key": "reporte-1"}
    one = client.post("/v1/reports", json=REPORT, headers=headers).get_json()["id"]
    two = client.post("/v1/reports", json={**REPORT, "lat": -33.46}, headers=headers).get_json()["id"]
    assert one != two


def test_a_batch_answers_each_item(client):
    answer = client.post("/v1/sales/batch", json={"sales": [SALE, {**SALE, "quantity": 0}]}, headers=auth())
    assert answer.status_code == 202
    body = answer.get_json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    landed, refused = body["results"]
    assert landed["topic"] == t.SALES.name and uuid.UUID(landed["id"])
    assert refused["status"] == 422 and refused["errors"][0]["field"] == "sales[1].quantity"


# --- problems ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/sales", {**SALE, "quantity": 0}, "quantity"),
        ("/v1/sales", {**SALE, "client": "Ana\x00"}, "client"),
        ("/v1/reports", {**REPORT, "description": "\u202eolleh"}, "description"),
        ("/v1/sales", [SALE], "body"),
    ],
)
def test_refusals_are_problems_naming_the_field(client, path, body, field):
    refused = problem(client.post(path, json=body, headers=auth()), 422)
    assert field in {error["field"] for error in refused["errors"]}


def test_no_token_is_a_401_problem_with_a_challenge(client):
    answer = client.post("/v1/sales", json=SALE)
    problem(answer, 401)
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_paths_methods_and_huge_bodies_are_problems(client):
    problem(client.get("/v1/nothing"), 404)
    problem(client.get("/v1/sales"), 405)
    problem(
        client.post("/v1/reports", data=b"{" + b" " * (1 << 20) + b"}", content_type="application/json"), 413
    )


# --- openapi ----------------------------------------------------------------------------------------


def test_openapi_describes_every_endpoint_from_the_models(client):
    doc = client.get("/openapi.json").get_json()
    assert {"/v1/members", "/v1/sales", "/v1/sales/batch", "/v1/locations", "/v1/reports"} <= set(
        doc["paths"]
    )
    schemas = doc["components"]["schemas"]
    assert schemas["SaleIn"]["properties"]["quantity"]["maximum"] == 1000
    assert "Problem" in schemas
