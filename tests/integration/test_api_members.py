"""The ingest API against the real broker. `POST /v1/members`: an application lands on its lane's partition; Spanish field names; no token needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.api_support import OTHER, PLATE, auth, check_landed, member, only_record, report
from tests.support import TopicProbe


@pytest.mark.parametrize(("premium", "partition"), [(False, 0), (True, 1)])
def test_member_application_lands_on_its_partition(client, premium, partition):
    probe = TopicProbe()
    answer = client.post("/v1/members", json=member(premium=premium, plate="bb-cl 12"))
    assert answer.status_code == 202, answer.get_json()
    msg = only_record(probe, "members")
    value = check_landed(msg, answer.get_json(), "MemberApplication", "12345678-5", partition)
    assert value["rut"] == "12345678-5" and value["plate"] == PLATE and value["premium"] is premium


def test_spanish_field_names_are_accepted(client):
    probe = TopicProbe()
    answer = client.post(
        "/v1/members",
        json={"nombre": " María  José ", "apellido": "Soto", "rut": "7654321-6", "correo": "mj@example.cl",
              "patente": "ab1234", "premium": True},
    )  # fmt: skip
    assert answer.status_code == 202, answer.get_json()
    value = json.loads(only_record(probe, "members").value())
    assert (value["first_name"], value["last_name"], value["email"], value["plate"]) == (
        "María José", "Soto", "mj@example.cl", OTHER,
    )  # fmt: skip

    probe = TopicProbe()
    sold_at = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    spanish = {"patente": PLATE, "cliente": "Don Pepe", "cantidad": 2, "hora": sold_at, "stock": 40,
               "ubicacion": {"lat": -33.43, "lon": -70.64}}  # fmt: skip
    answer = client.post("/v1/sales", json=spanish, headers=auth())
    assert answer.status_code == 202, answer.get_json()
    value = json.loads(only_record(probe, "sales").value())
    assert (value["client"], value["quantity"], value["stock_remaining"], value["lat"]) == (
        "Don Pepe",
        2,
        40,
        -33.43,
    )
    assert datetime.fromisoformat(value["sold_at"]) == datetime.fromisoformat(sold_at)


def test_public_endpoints_need_no_token(client):
    assert client.post("/v1/reports", json=report()).status_code == 202
    assert client.post("/v1/members", json=member()).status_code == 202
