"""The API while the broker is down: 503 with Retry-After within the timeout, then 202 again."""

from __future__ import annotations

import json
import time
import uuid

from gremio.records import SaleIn, request_id
from gremio.tokens import cart_token
from ingest_api import create_app
from tests.support import TopicProbe, wait_for

TIMEOUT = 1.5
PLATE = "BBCL12"
SALE = {
    "plate": PLATE,
    "client": "ana",
    "quantity": 1,
    "stock_remaining": 80,
    "location": {"lat": -33.4, "lon": -70.6},
}


def test_broker_outage_gives_503_then_202_once_it_is_back(stack):
    client = create_app({"TESTING": True, "DELIVERY_TIMEOUT_SECONDS": TIMEOUT}).test_client()
    auth = {"Authorization": f"Bearer {cart_token(PLATE)}"}
    assert client.post("/v1/sales", json=SALE, headers=auth).status_code == 202
    key = str(uuid.uuid4())
    stack.stop_kafka()
    try:
        started = time.monotonic()
        answer = client.post("/v1/sales", json=SALE, headers={**auth, "Idempotency-Key": key})
        elapsed = time.monotonic() - started
        assert answer.status_code == 503, answer.get_json()
        assert answer.mimetype == "application/problem+json"
        assert int(answer.headers["Retry-After"]) >= 1
        detail = answer.get_json()["detail"]
        assert "may still have been stored" in detail and "same Idempotency-Key" in detail
        assert elapsed < TIMEOUT + 5, f"503 after {elapsed:.1f} s, timeout {TIMEOUT} s"

        batch = client.post("/v1/sales/batch", json={"sales": [SALE, SALE]}, headers=auth)
        assert batch.status_code == 503
        wait_for(lambda: client.get("/readyz").status_code == 503, timeout=15, what="/readyz 503")
        assert client.get("/healthz").status_code == 200  # alive, just not ready
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'gremio_api_delivery_failures_total{reason="timeout",topic="sales"}' in metrics
    finally:
        stack.start_kafka()

    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=60, what="/readyz 200")
    probe = TopicProbe(["sales"])

    def retried() -> dict | None:
        answer = client.post("/v1/sales", json=SALE, headers={**auth, "Idempotency-Key": key})
        return answer.get_json() if answer.status_code == 202 else None

    landed = wait_for(retried, timeout=60, interval=1, what="202 after the broker came back")
    assert landed["id"] == str(request_id(key, "/v1/sales", SaleIn.model_validate(SALE), PLATE))
    assert landed["id"] in {json.loads(m.value())["id"] for m in probe.records()}
