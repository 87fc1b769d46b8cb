"""The ingest API against the real broker. `POST /v1/sales` and `/v1/sales/batch`: sales land by key, a batch reports each item."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from gremio import kafka as gk
from tests.integration.api_support import (
    OTHER,
    PLATE,
    auth,
    check_landed,
    fields,
    murmur2_partition,
    only_record,
    problem,
    sale,
)
from tests.support import TopicProbe


def test_sale_lands_on_sales_by_key(client):
    probe = TopicProbe()
    answer = client.post("/v1/sales", json=sale(plate="bbcl12"), headers=auth())
    assert answer.status_code == 202, answer.get_json()
    msg = only_record(probe, "sales")
    partitions = gk.partition_counts()["sales"]
    value = check_landed(msg, answer.get_json(), "Sale", PLATE, murmur2_partition(PLATE.encode(), partitions))
    assert value["client"] == "Cliente-7" and value["quantity"] == 3 and value["stock_remaining"] == 57
    assert value["sold_at"] == value["received_at"]  # no sold_at sent: "now"


def test_batch_lands_every_valid_sale_and_reports_each_item(client):
    probe = TopicProbe()
    past = datetime.now(UTC) - timedelta(hours=2)
    items = [
        sale(sold_at=(past + timedelta(minutes=i)).isoformat(), stock_remaining=90 - i) for i in range(5)
    ]
    items.insert(2, sale(quantity=0))
    answer = client.post("/v1/sales/batch", json={"sales": items}, headers=auth())
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    assert (body["accepted"], body["rejected"]) == (5, 1)
    assert body["results"][2]["status"] == 422
    assert fields(body["results"][2]) == {"sales[2].quantity"}
    landed = probe.records()
    assert {m.topic() for m in landed} == {"sales"} and len(landed) == 5
    by_offset = {(m.partition(), m.offset()): m for m in landed}
    for result in body["results"][:2] + body["results"][3:]:
        msg = by_offset[(result["partition"], result["offset"])]
        check_landed(msg, result, "Sale", PLATE, msg.partition())
    assert len({m.partition() for m in landed}) == 1  # one cart, one partition: in order
    assert [json.loads(m.value())["stock_remaining"] for m in sorted(landed, key=lambda m: m.offset())] == [
        90, 89, 88, 87, 86,
    ]  # fmt: skip


def test_a_batch_may_be_bigger_than_a_single_request(client):
    """16 KiB is the single-request limit; a 200-sale batch (~30 KiB) is within its own 256 KiB."""
    items = [sale(stock_remaining=i % 100) for i in range(200)]
    assert len(json.dumps({"sales": items})) > 16 * 1024
    answer = client.post("/v1/sales/batch", json={"sales": items}, headers=auth())
    assert answer.status_code == 202 and answer.get_json()["accepted"] == 200


def test_a_batch_with_one_sale_of_another_cart_is_refused_whole(client):
    probe = TopicProbe()
    answer = client.post(
        "/v1/sales/batch", json={"sales": [sale(), sale(plate=OTHER), sale()]}, headers=auth()
    )
    assert fields(problem(answer, 403)) == {"sales[1].plate"}
    assert probe.records() == []
