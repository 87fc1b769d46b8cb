"""The ingest API against the real broker. Idempotency keys: the same request keeps its id, different requests never share one."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.api_support import OTHER, PLATE, auth, fields, member, position, problem, report, sale
from tests.support import TopicProbe


def test_the_same_idempotency_key_gives_the_same_id(client):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/v1/sales", json=sale(), headers={**auth(), **key}).get_json()
    again = client.post("/v1/sales", json=sale(), headers={**auth(), **key}).get_json()
    assert first["id"] == again["id"]
    fresh = client.post("/v1/sales", json=sale(), headers={**auth(), "Idempotency-Key": str(uuid.uuid4())})
    assert fresh.get_json()["id"] != first["id"]
    unkeyed = [client.post("/v1/sales", json=sale(), headers=auth()).get_json()["id"] for _ in range(2)]
    assert len({first["id"], *unkeyed}) == 3
    # Scoped by endpoint and by cart: the same key elsewhere is another record.
    position_id = client.post("/v1/locations", json=position(), headers={**auth(), **key}).get_json()["id"]
    other_cart = client.post("/v1/sales", json=sale(plate=OTHER), headers={**auth(OTHER), **key}).get_json()[
        "id"
    ]
    assert len({first["id"], position_id, other_cart}) == 3
    for path, body in (("/v1/members", member()), ("/v1/reports", report())):
        ids = {client.post(path, json=body, headers=key).get_json()["id"] for _ in range(2)}
        assert len(ids) == 1


def test_two_different_requests_with_the_same_key_never_share_an_id(client):
    """Two reporters who both chose the key "1": both reports land, with two ids (Stripe's rule)."""
    probe = TopicProbe(["locations"])
    key = {"Idempotency-Key": "1"}
    first = client.post("/v1/reports", json=report(description="carro en la plaza"), headers=key)
    second = client.post("/v1/reports", json=report(description="otro carro, en la feria"), headers=key)
    assert first.status_code == second.status_code == 202
    ids = {first.get_json()["id"], second.get_json()["id"]}
    assert len(ids) == 2
    assert ids <= {json.loads(m.value())["id"] for m in probe.records()}
    # The same request spelled differently is the same request: the same id.
    spelled = [
        client.post("/v1/sales", json=sale(plate=plate), headers={**auth(), **key}).get_json()["id"]
        for plate in (PLATE, PLATE.lower())
    ]
    assert spelled[0] == spelled[1]
    # A sale of another quantity under the same key is another sale.
    other = client.post("/v1/sales", json=sale(quantity=4), headers={**auth(), **key}).get_json()["id"]
    assert other != spelled[0]


def test_batch_items_keep_their_ids_when_the_batch_is_retried(client):
    key = {**auth(), "Idempotency-Key": "offline-sync-0042"}
    items = {"sales": [sale(stock_remaining=s) for s in (30, 29, 28)]}
    first = [r["id"] for r in client.post("/v1/sales/batch", json=items, headers=key).get_json()["results"]]
    again = [r["id"] for r in client.post("/v1/sales/batch", json=items, headers=key).get_json()["results"]]
    assert first == again and len(set(first)) == 3


@pytest.mark.parametrize("key", ["", "x" * 256, "tiene espacio", "ñandú"])
def test_a_bad_idempotency_key_is_refused(client, key):
    probe = TopicProbe()
    answer = client.post("/v1/reports", json=report(), headers={"Idempotency-Key": key})
    assert fields(problem(answer, 400)) == {"Idempotency-Key"}
    assert probe.records() == []
