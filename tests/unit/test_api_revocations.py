"""The API's revocation check without a broker: what a worker knows, and what it does when it
cannot reach cart_revocations (keeps serving with what it knows)."""

from __future__ import annotations

import time

import pytest

from gremio.settings import Settings
from gremio.stack.system import free_port
from gremio.tokens import cart_token, now_ms, revocation_value, verify
from ingest_api import create_app
from ingest_api.revocations import Revocations, RevocationWatcher
from ingest_api.testing import NullProducer
from tests.integration.api_support import PLATE, problem

SECRET = "revocation-unit-test-secret-of-32-bytes"  # pragma: allowlist secret
POSITION = {"plate": PLATE, "lat": -33.44, "lon": -70.65}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_issued_at_or_before_the_revocation_is_refused_and_a_later_one_is_not():
    settings = Settings(cart_token_secret=SECRET)
    revoked_ms = now_ms()
    known = Revocations({PLATE: revoked_ms})
    client = create_app({"TESTING": True, "CART_TOKEN_SECRET": SECRET}, NullProducer(), known).test_client()
    for issued, status in ((revoked_ms - 1, 401), (revoked_ms, 401), (revoked_ms + 1, 202)):
        answer = client.post(
            "/v1/locations", json=POSITION, headers=bearer(cart_token(PLATE, settings, issued))
        )
        assert answer.status_code == status, (issued - revoked_ms, answer.get_data(as_text=True))
        if status == 401:
            assert "was revoked" in problem(answer, 401)["detail"]


def test_records_and_tombstones_update_what_a_worker_knows():
    known = Revocations()
    known.apply(PLATE.encode(), revocation_value(PLATE, 5_000))
    assert known.revoked_ms(PLATE) == 5_000
    known.apply(PLATE.encode(), revocation_value(PLATE, 7_000))  # the latest wins, as compaction keeps it
    assert known.revoked_ms(PLATE) == 7_000
    known.apply(PLATE.encode(), None)  # a tombstone lifts it
    assert known.revoked_ms(PLATE) is None
    assert known.status() == {"loaded": True, "known": 0}


def test_without_the_broker_the_api_keeps_serving_with_what_it_knows(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("ingest_api.STARTUP_WAIT_SECONDS", 1.0)
    nowhere = Settings(cart_token_secret=SECRET, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    watcher = RevocationWatcher(nowhere)
    try:
        started = time.monotonic()
        client = create_app(
            {"TESTING": True, "CART_TOKEN_SECRET": SECRET}, NullProducer(), watcher
        ).test_client()
        assert time.monotonic() - started < 3  # a worker does not wait for the broker for ever
        token = cart_token(PLATE, nowhere)
        assert verify(token, nowhere).plate == PLATE
        assert client.post("/v1/locations", json=POSITION, headers=bearer(token)).status_code == 202
        ready = client.get("/readyz").get_json()
        assert ready["revocations"]["loaded"] is False and ready["revocations"]["problem"], ready
    finally:
        watcher.close()
