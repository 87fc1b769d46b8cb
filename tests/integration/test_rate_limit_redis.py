"""Rate limits that hold exactly across gunicorn workers, through a real redis-server.

Redis runs as `make up` runs it (gremio.stack.local.redis_command), on a free port. The API
is gunicorn with the repo's config and two workers. Which worker accepts a connection is
the kernel's choice, so the tests pin one keep-alive connection to each worker (found with
unlimited GET /readyz requests and gunicorn's access log, which names the worker that
answered) and send the limited requests alternately over the two.
When Redis is stopped mid-test the limits fail open to each worker's own counters
(ingest_api/ratelimit.py says why): nobody gets an error, and a flood is still bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from gremio.settings import Settings
from gremio.stack.local import redis_command
from gremio.stack.system import free_port, wait_for_port
from gremio.stack.testing import Server
from ingest_api.ratelimit import RETRY_SECONDS, RateLimits
from tests.integration.api_support import member, report
from tests.support import ApiServer, metric_value, wait_for

# gunicorn's access log: the answering worker's pid and the status, one line a request.
ACCESS_LOG = "--access-logfile - --access-logformat 'served-by %(p)s %(s)s'"


class Redis:
    """redis-server as the local stack runs it, on a free port under `folder`."""

    def __init__(self, folder) -> None:
        self.port = free_port()
        settings = Settings(redis_port=self.port, local_dir=folder)
        (folder / "redis").mkdir(parents=True, exist_ok=True)
        self.server = Server("redis", redis_command(settings), folder / "redis.log")
        self.uri = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        self.server.start()
        assert wait_for_port(self.port, 30), self.server.log.read_text()
        return self

    def stop(self) -> None:
        self.server.stop(signal.SIGTERM, timeout=30)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = Redis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(redis_server):
    """The module's Redis, empty, and running again if a test stopped it."""
    redis_server.start()
    with redis_server.client() as client:
        client.flushdb()
    return redis_server


def served_by(api: ApiServer) -> Counter[tuple[str, str]]:
    """(worker pid, status) of every request gunicorn logged."""
    return Counter(re.findall(r"served-by <(\d+)> (\d+)", api.output()))


def post_reports(api: ApiServer, n: int) -> list[int]:
    return [api.post("/v1/reports", report()).status for _ in range(n)]


@contextlib.contextmanager
def one_connection_per_worker(api: ApiServer, workers: int = 2) -> Iterator[list[http.client.HTTPConnection]]:
    """A keep-alive connection to each worker (gunicorn drops them after 5 s idle)."""
    pinned: dict[str, http.client.HTTPConnection] = {}
    try:
        yield _pin(api, workers, pinned)
    finally:
        for conn in pinned.values():
            conn.close()


def _pin(api: ApiServer, workers: int, pinned: dict[str, http.client.HTTPConnection]) -> list:
    for _ in range(100):
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=15)
        logged = len(re.findall(r"served-by <\d+> 200", api.output()))
        conn.request("GET", "/readyz")
        assert conn.getresponse().read() is not None
        pid = wait_for(lambda seen=logged: _newest_ready_pid(api, seen), timeout=10, what="its log line")
        if pid in pinned:
            conn.close()
        else:
            pinned[pid] = conn
        if len(pinned) == workers:
            return list(pinned.values())
    raise AssertionError(f"no connection reached every worker: {served_by(api)}")


def _newest_ready_pid(api: ApiServer, seen: int) -> str | None:
    """The worker of the newest GET /readyz, once there are more than `seen` of them."""
    found = re.findall(r"served-by <(\d+)> 200", api.output())
    return found[-1] if len(found) > seen else None


def alternately(conns: list[http.client.HTTPConnection], n: int, path: str = "/v1/reports") -> list[int]:
    """n requests over the connections in turn (report bodies, or member ones)."""
    statuses = []
    for i in range(n):
        conn = conns[i % len(conns)]
        body = json.dumps(report() if path == "/v1/reports" else member())
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    return statuses


@contextlib.contextmanager
def two_workers(redis, tmp_path, **settings):
    """The API under gunicorn, two workers counting in `redis`, serving when it yields."""
    with ApiServer(
        tmp_path / "gunicorn.log",
        API_WORKERS="2",
        API_THREADS="2",
        RATE_LIMIT_STORAGE_URI=redis.uri,
        GUNICORN_CMD_ARGS=ACCESS_LOG,
        **settings,
    ) as api:
        api.wait_ready()
        yield api


def test_the_local_stacks_redis_is_loopback_protected_and_keeps_nothing(fresh_redis):
    with fresh_redis.client() as client:
        config = {k: v for name in ("bind", "protected-mode", "save", "appendonly") for k, v in client.config_get(name).items()}  # fmt: skip
    assert config == {"bind": "127.0.0.1", "protected-mode": "yes", "save": "", "appendonly": "no"}


def test_two_workers_share_one_limit_through_redis(fresh_redis, tmp_path):
    limit = 12
    with two_workers(
        fresh_redis, tmp_path, RATE_LIMIT_REPORTS=f"{limit}/minute", RATE_LIMIT_MEMBERS="3/minute"
    ) as api:
        with one_connection_per_worker(api) as conns:
            # Each worker saw half of the first `limit`: on its own it would take `limit` more.
            assert alternately(conns, limit + 6) == [202] * limit + [429] * 6
            assert post_reports(api, 3) == [429] * 3  # fresh connections, whichever worker
            members = alternately(conns, 5, "/v1/members")
            assert members == [202] * 3 + [429] * 2, members  # its own limit, shared the same way
        seen = served_by(api)
        accepted_by = {pid for pid, status in seen if status == "202"}
        refused_by = {pid for pid, status in seen if status == "429"}
        assert len(accepted_by) == 2 and len(refused_by) == 2, seen
        retry_after = api.post("/v1/reports", report())
        assert retry_after.status == 429 and 0 < int(retry_after.headers["Retry-After"]) <= 60
        with fresh_redis.client() as client:
            assert client.keys("LIMITS:*"), "the counters are in Redis"
        assert api.stop() == 0, api.output()[-3000:]


def test_with_redis_stopped_each_worker_keeps_limiting_on_its_own(fresh_redis, tmp_path):
    limit = 4
    with two_workers(fresh_redis, tmp_path, RATE_LIMIT_REPORTS=f"{limit}/minute") as api:
        with one_connection_per_worker(api) as conns:
            assert alternately(conns, 2) == [202, 202]  # counted in Redis
            fresh_redis.stop()
            during = alternately(conns, 4 * limit)
        # Fail open to each worker's memory: never an error; the limit holds per worker, so two
        # workers take exactly twice the limit between them.
        assert set(during) == {202, 429}, during
        assert during.count(202) == 2 * limit and during[-2:] == [429, 429], during
        assert "unreachable" in api.output() and "counting in this worker's memory" in api.output()
        assert fresh_redis.uri.split("//")[1] in api.output()
        fallbacks = metric_value(api.get("/metrics").body.decode(), "gremio_api_rate_limit_fallbacks_total")
        assert fallbacks == 4 * limit, fallbacks

        # Redis back (empty: it keeps nothing): after RETRY_SECONDS both workers count there again.
        fresh_redis.start()
        time.sleep(RETRY_SECONDS + 0.5)
        with one_connection_per_worker(api) as conns:  # the old ones have timed out
            after = alternately(conns, limit + 4)
        assert after == [202] * limit + [429] * 4, after
        assert "is back; counting there again" in api.output()
        assert api.stop() == 0, api.output()[-3000:]


def test_a_storage_that_never_answers_still_limits_in_memory():
    """No Redis at all on that port: the worker's own counters, and quickly."""
    limits = RateLimits(f"redis://127.0.0.1:{free_port()}/0")
    from limits import parse

    item = parse("3/minute")
    started = time.monotonic()
    answers = [limits.hit(item, "reports", "10.0.0.9")[0] for _ in range(5)]
    assert answers == [True, True, True, False, False]
    allowed, reset_at = limits.hit(item, "reports", "10.0.0.9")
    assert not allowed and 0 < reset_at - time.time() <= 60
    assert not limits.shared
    assert time.monotonic() - started < 2  # one failed connection, then memory until RETRY_SECONDS
