"""Two API instances behind nginx, on the three-node cluster (issue 17): the API-instance drill,
rate limits shared through Redis, and the client's address as the API sees it.

Everything is real: gunicorn with the repo's config (tests/support.py ApiServer) twice,
Debian's nginx with gremio/stack/nginx.py's config, redis-server as `make up` runs it, and
the session's Kafka cluster. Clients talk to nginx only.

The drill: carts post sales through nginx, one at a time each, every sale with its own
Idempotency-Key, and resend the same request (same key, same body) on any answer but a 2xx,
or on no answer, until it is acknowledged; one instance is SIGKILLed mid-ingest. The API is
stateless, so a sale whose first try had reached the broker before its instance died can be
in the topic twice with the same id (the consumers keep one, by id): that is counted, and
bounded by the failed tries, never asserted to be zero. Figures are printed and written to
test-artifacts/cluster/, never asserted: the machine is shared.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from gremio import kafka as gk
from gremio import topics as t
from gremio.settings import Settings
from gremio.stack import nginx
from gremio.tokens import cart_token
from tests.cluster.support import read_ids
from tests.integration.api_support import report, sale
from tests.integration.test_rate_limit_redis import ACCESS_LOG, Redis
from tests.support import ApiServer, Nginx, http, new_plate, wait_for

REPORTS_LIMIT = 12  # per client and minute, on /v1/reports: a window no test outlasts
CARTS = 6
WARMUP_ACKS = 150
STEADY = 3.0  # seconds of steady ingest before the kill, the baseline for the gap
AFTER_KILL = 8.0  # seconds of ingest after the kill: over FAIL_TIMEOUT, so nginx tries the dead one again
RETRY_AFTER = 0.1


class Front:
    """Two API instances (two gunicorn workers each) sharing one Redis, nginx in front."""

    def __init__(self, folder: Path, cluster, redis_uri: str, instances: int = 2) -> None:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": cluster.kafka.bootstrap_servers,
            "RATE_LIMIT_STORAGE_URI": redis_uri,
            "RATE_LIMIT_REPORTS": f"{REPORTS_LIMIT}/minute",
            "DELIVERY_TIMEOUT_SECONDS": "5",
            "API_PROXY_HOPS": "1",  # nginx's X-Forwarded-For, as make up-cluster runs it
            "GUNICORN_CMD_ARGS": ACCESS_LOG,  # "served-by <pid> <status>", one line a request
        }
        self.apis = [ApiServer(folder / f"api-{i}.log", **env) for i in range(instances)]
        self.nginx = Nginx(folder / "nginx", [api.port for api in self.apis])

    def start(self) -> Front:
        for api in self.apis:
            api.wait_ready()
        self.nginx.start()
        wait_for(lambda: self.nginx.get("/readyz").status == 200, timeout=30, what="/readyz through nginx")
        return self

    def stop(self) -> None:
        self.nginx.server.stop(timeout=10)
        for api in self.apis:
            api.kill()

    def served(self, api: ApiServer, status: str | None = None) -> int:
        """Requests this instance answered (with `status`), from gunicorn's access log."""
        lines = [line for line in api.output().splitlines() if "served-by <" in line]
        return sum(1 for line in lines if status is None or line.endswith(f" {status}"))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[Redis]:
    server = Redis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def front(cluster, redis_server, tmp_path) -> Iterator[Front]:
    gk.ensure_topics(settings=cluster.settings())
    cluster.wait_whole()
    with redis_server.client() as client:
        client.flushdb()
    started = Front(tmp_path, cluster, redis_server.uri)
    try:
        yield started.start()
    finally:
        started.stop()


def post_from(source: str, port: int, path: str, body: Any, headers: dict[str, str] | None = None) -> int:
    """POST from a loopback source address of our choice (127.0.0.2...); the status, 0 for none."""
    conn = HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
    try:
        conn.request(
            "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
        )
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


# --- nginx's config ----------------------------------------------------------------------------


def test_the_config_replaces_x_forwarded_for_and_retries_connection_errors_only(tmp_path):
    text = nginx.config(tmp_path, 18000, [18001, 18002], Settings(_env_file=None))
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
    assert "proxy_add_x_forwarded_for" not in text  # appending would keep a client's spoofed hops
    assert "proxy_next_upstream error timeout;" in text
    assert "non_idempotent" not in text and "http_50" not in text
    assert f"client_max_body_size {Settings(_env_file=None).max_batch_body_bytes};" in text
    assert "listen 127.0.0.1:18000;" in text
    assert str(tmp_path.resolve()) in text.split("pid ", 1)[1].split(";", 1)[0]


# --- rate limits and the client's address --------------------------------------------------------


def test_rate_limits_are_shared_by_both_instances_behind_nginx(front):
    statuses = Counter(front.nginx.post("/v1/reports", report()).status for _ in range(4 * REPORTS_LIMIT))
    # Counted per worker (memory://), 2 instances x 2 workers would take up to 4 x the limit.
    assert statuses == {202: REPORTS_LIMIT, 429: 3 * REPORTS_LIMIT}, statuses
    served = [front.served(api) - front.served(api, "200") for api in front.apis]  # the POSTs
    assert all(n > 0 for n in served), f"nginx sent every request to one instance: {served}"
    assert sum(front.served(api, "202") for api in front.apis) == REPORTS_LIMIT


def test_a_client_sent_x_forwarded_for_cannot_buy_a_fresh_limit(front):
    port = front.nginx.port
    for _ in range(REPORTS_LIMIT):
        assert post_from("127.0.0.1", port, "/v1/reports", report()) == 202
    spoofed = [
        post_from("127.0.0.1", port, "/v1/reports", report(), {"X-Forwarded-For": f"203.0.113.{i}"})
        for i in range(1, 6)
    ]
    assert spoofed == [429] * 5


def test_the_api_sees_each_clients_own_address_through_nginx(front):
    port = front.nginx.port
    for _ in range(REPORTS_LIMIT):
        assert post_from("127.0.0.2", port, "/v1/reports", report()) == 202
    assert post_from("127.0.0.2", port, "/v1/reports", report()) == 429
    # Another client has a limit of its own.
    assert post_from("127.0.0.3", port, "/v1/reports", report()) == 202


# --- the drill: SIGKILL one instance mid-ingest ---------------------------------------------------


class Carts:
    """Carts posting sales through nginx, each sale with its Idempotency-Key, resent as it was
    until a 2xx. `acked` keeps each id's acknowledgement time; `tries` every failed try."""

    def __init__(self, base: str, plates: list[str]) -> None:
        self.base = base
        self.plates = plates
        self.acked: dict[str, float] = {}
        self.failed: list[tuple[float, int]] = []  # (time, status; 0: no answer)
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sell, args=(plate,), name=f"cart-{plate}", daemon=True)
            for plate in plates
        ]

    def start(self) -> Carts:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, grace: float = 60.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(grace)
        assert not any(thread.is_alive() for thread in self._threads), (
            "a cart never got its sale acknowledged"
        )

    def _sell(self, plate: str) -> None:
        headers = {"Authorization": f"Bearer {cart_token(plate)}"}
        give_up = float("inf")
        while not self._stop.is_set():
            body = sale(plate=plate)
            key = {"Idempotency-Key": f"drill-{uuid.uuid4()}", **headers}
            while True:  # the same request until it is acknowledged
                answer = http("POST", self.base + "/v1/sales", body, key, timeout=15)
                with self._lock:
                    self.sent += 1
                if 200 <= answer.status < 300:
                    with self._lock:
                        self.acked[answer.json()["id"]] = time.monotonic()
                    break
                with self._lock:
                    self.failed.append((time.monotonic(), answer.status))
                if self._stop.is_set():
                    give_up = min(give_up, time.monotonic() + 50)
                assert time.monotonic() < give_up, "a sale was never acknowledged"
                time.sleep(RETRY_AFTER)

    def acks_since(self, since: float) -> int:
        with self._lock:
            return sum(1 for at in self.acked.values() if at >= since)

    def longest_gap(self, since: float, until: float) -> float:
        with self._lock:
            times = sorted(at for at in self.acked.values() if since <= at <= until)
        return max((b - a for a, b in itertools.pairwise([since, *times, until])), default=0.0)


def test_sigkill_one_api_instance_behind_nginx_loses_no_acknowledged_sale(cluster, front, figures):
    victim, survivor = front.apis
    plates = sorted({new_plate() for _ in range(CARTS)})
    carts = Carts(front.nginx.base, plates).start()
    try:
        wait_for(lambda: len(carts.acked) >= WARMUP_ACKS, timeout=120, what=f"{WARMUP_ACKS} acks")
        time.sleep(STEADY)
        victim_served = front.served(victim, "202")
        assert victim_served > 0 and front.served(survivor, "202") > 0, "nginx used one instance only"
        failed_before = len(carts.failed)
        killed_at = time.monotonic()
        victim.kill()  # SIGKILL to gunicorn's whole process group: master and workers
        time.sleep(AFTER_KILL)
        wait_for(lambda: carts.acks_since(killed_at) >= 100, timeout=60, what="acks after the kill")
        ended_at = time.monotonic()
    finally:
        carts.stop()
    in_topic = read_ids(cluster.settings(), t.SALES.name, set(plates).__contains__)
    distinct = set(in_topic)
    acked = set(carts.acked)
    missing = acked - distinct
    assert not missing, f"{len(missing)} acknowledged sale(s) lost, e.g. {sorted(missing)[:3]}"
    strangers = distinct - acked
    assert not strangers, f"{len(strangers)} id(s) in the topic that no cart had acknowledged"
    duplicates = len(in_topic) - len(distinct)
    failed = len(carts.failed)
    # A record twice (same id) needs a try that landed but got no 2xx back: a failed try.
    assert duplicates <= failed
    assert front.nginx.server.running, front.nginx.output()[-3000:]
    statuses = Counter(status for _, status in carts.failed)
    figures.update(
        carts=len(plates),
        acked=len(acked),
        records_in_topic=len(in_topic),
        duplicates_same_id=duplicates,
        tries=carts.sent,
        retries=failed,
        failed_tries_after_kill=failed - failed_before,
        failures_by_status={str(k): v for k, v in sorted(statuses.items())},
        http_5xx=sum(v for k, v in statuses.items() if k >= 500),
        connection_errors=statuses.get(0, 0),
        acks_after_kill=carts.acks_since(killed_at),
        longest_ack_gap_after_kill_s=round(carts.longest_gap(killed_at, ended_at), 2),
        longest_ack_gap_before_kill_s=round(carts.longest_gap(killed_at - STEADY, killed_at), 2),
        victim_acked_before_kill=victim_served,
    )
    print(f"\nAPI instance drill: {figures}")
