"""The API as `make up` runs it: gunicorn with the repo's config, two workers, the real broker.

The simulator drives it for a few seconds, which also proves the simulator end to end.
"""

from __future__ import annotations

import argparse
import json

import pytest

from gremio.simulate import main as simulate
from gremio.tokens import cart_token
from tests.support import ApiServer, TopicProbe, metric_value


@pytest.fixture
def gunicorn(tmp_path):
    with ApiServer(tmp_path / "gunicorn.log", API_WORKERS="2", API_THREADS="4") as api:
        yield api.wait_ready()


def test_gunicorn_serves_the_app_and_the_simulator_drives_it(gunicorn):
    probe = TopicProbe()
    answer = gunicorn.post(
        "/v1/sales",
        {
            "patente": "BBCL12",
            "cliente": "ana",
            "cantidad": 2,
            "stock": 60,
            "ubicacion": {"lat": -33.4, "lon": -70.6},
        },
        {"Authorization": f"Bearer {cart_token('BBCL12')}"},
    )
    assert answer.status == 202, answer.body
    assert [(m.topic(), m.offset()) for m in probe.records()] == [("sales", answer.json()["offset"])]

    args = argparse.Namespace(carts=3, seed=5, api=gunicorn.base, duration=8.0, speedup=20.0)
    assert simulate(args) == 0
    landed = probe.records()
    topics = {m.topic() for m in landed}
    assert {"members", "locations"} <= topics, topics
    premium = [json.loads(m.value()) for m in landed if m.topic() == "members" and m.partition() == 1]
    assert len({a["plate"] for a in premium}) >= 3  # every simulated cart applied

    # /metrics adds up both workers (prometheus multiprocess mode).
    metrics = gunicorn.get("/metrics")
    text = metrics.body.decode()
    produced = sum(metric_value(text, "gremio_api_produced_total", topic=topic) or 0 for topic in topics)
    assert metrics.status == 200 and produced == len(landed)

    assert gunicorn.stop() == 0, gunicorn.output()
