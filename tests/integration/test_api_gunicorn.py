"""The API as `make up` runs it: gunicorn with the repo's config, two workers, the real broker.

The simulator drives it for a few seconds, which also proves the simulator end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from gremio.settings import REPO_ROOT
from gremio.simulate import main as simulate
from gremio.stack.system import free_port
from gremio.tokens import cart_token
from tests.support import TopicProbe, wait_for

GUNICORN = Path(sys.executable).with_name("gunicorn")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def post(url: str, body: dict, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def gunicorn(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "API_PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "API_WORKERS": "2",
        "API_THREADS": "4",
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [str(GUNICORN), "-c", "ingest_api/gunicorn_conf.py", "ingest_api:create_app()"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: get(f"{base}/readyz")[0] == 200 or proc.poll() is not None, timeout=60, what="gunicorn"
        )
        assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
        yield base, proc, tmp_path / "gunicorn.log"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def counter(metrics: str, name: str, **labels: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_gunicorn_serves_the_app_and_the_simulator_drives_it(gunicorn):
    base, proc, log = gunicorn
    probe = TopicProbe()
    status, body = post(
        f"{base}/v1/sales",
        {
            "patente": "BBCL12",
            "cliente": "ana",
            "cantidad": 2,
            "stock": 60,
            "ubicacion": {"lat": -33.4, "lon": -70.6},
        },
        {"Authorization": f"Bearer {cart_token('BBCL12')}"},
    )
    assert status == 202, body
    assert [(m.topic(), m.offset()) for m in probe.records()] == [("sales", body["offset"])]

    args = argparse.Namespace(carts=3, seed=5, api=base, duration=8.0, speedup=20.0)
    assert simulate(args) == 0
    landed = probe.records()
    topics = {m.topic() for m in landed}
    assert {"members", "locations"} <= topics, topics
    premium = [json.loads(m.value()) for m in landed if m.topic() == "members" and m.partition() == 1]
    assert len({a["plate"] for a in premium}) >= 3  # every simulated cart applied

    # /metrics adds up both workers (prometheus multiprocess mode).
    status, text = get(f"{base}/metrics")
    produced = sum(counter(text.decode(), "gremio_api_produced_total", topic=topic) for topic in topics)
    assert status == 200 and produced == len(landed)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()
