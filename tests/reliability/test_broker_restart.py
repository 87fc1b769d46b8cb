"""The broker crashes and comes back while carts keep selling through the real API.

gunicorn runs the API as `make up` does (two workers). Eight client threads send sales
one at a time, each with an Idempotency-Key, and retry a 503 after its Retry-After with the
same key, as carts do. Mid-stream the broker is SIGKILLed (no controlled shutdown), kept
down for several delivery timeouts, and started again. Then the drain operator takes the
topic into PostgreSQL, and the oracle (every 202's id, partition and offset) is checked
against the topic and the table.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid

from gremio import topics as t
from tests.reliability.oracle import Carts, Oracle, drain, fleet, ids_in_table
from tests.support import ApiServer, commit_at_end, wait_for

DELIVERY_TIMEOUT = 2  # seconds: a 503 comes this long after the request
OUTAGE_SECONDS = 8  # at least this long, so every client meets several 503s
READY_BOUND_SECONDS = 10  # issue 9: /readyz is green within 10 s of the broker's return


class PortWatch:
    """Notes when a port starts accepting connections: the moment the broker is back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.opened: float | None = None
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        deadline = time.monotonic() + 300
        while self.opened is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    self.opened = time.monotonic()
            except OSError:
                time.sleep(0.05)

    def opened_at(self) -> float:
        self.thread.join(10)
        assert self.opened is not None, f"port {self.port} never opened"
        return self.opened


class Readiness:
    """Polls /readyz every 0.1 s in a thread and keeps (time, status)."""

    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.seen: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stop.is_set():
            self.seen.append((time.monotonic(), self.api.get("/readyz").status))
            time.sleep(0.1)

    def first(self, status: int, since: float) -> float | None:
        return next((at for at, got in list(self.seen) if at >= since and got == status), None)


def test_every_202_is_in_postgresql_after_a_broker_crash(stack, tmp_path, figures):
    group = f"reliability-drain-{uuid.uuid4()}"
    commit_at_end(group, [t.SALES.name])
    oracle = Oracle()
    done = threading.Event()
    with ApiServer(tmp_path / "api.log", DELIVERY_TIMEOUT_SECONDS=str(DELIVERY_TIMEOUT)) as api:
        api.wait_ready()
        readiness = Readiness(api)
        carts = Carts(api.base, fleet(32, seed=9), oracle, threads=8).run(0, until=done.is_set)
        try:
            flowing = time.monotonic()
            wait_for(lambda: len(oracle.acks) >= 300, timeout=60, what="a steady flow of 202s")
            before = len(oracle.acks)
            stopping = time.monotonic()
            stack.stop_kafka(signal.SIGKILL)
            down = time.monotonic()
            wait_for(lambda: oracle.statuses()[503] >= 16, timeout=60, what="503s during the outage")
            time.sleep(max(0.0, down + OUTAGE_SECONDS - time.monotonic()))
            restarting = time.monotonic()
            port = PortWatch(stack.kafka_port)
            stack.start_kafka()
            answering = time.monotonic()
            back = port.opened_at()
            green = wait_for(lambda: readiness.first(200, back), timeout=120, what="/readyz 200 again")
            resumed = len(oracle.acks)
            wait_for(lambda: len(oracle.acks) >= resumed + 300, timeout=120, what="202s after the return")
        finally:
            done.set()
            carts.join()
            readiness.stop.set()
            readiness.thread.join(5)
        assert api.stop() == 0, api.output()[-3000:]

    result = drain(t.SALES.name, "sales", "gremio.records.Sale", group, stall_timeout=60.0)

    # Every 202 names the offset that holds its record, and every one is in PostgreSQL, once.
    oracle.on_topics()
    stored = ids_in_table("sales", oracle.ids | oracle.tried)
    missing = oracle.ids - set(stored)
    assert not missing, f"{len(missing)} acknowledged sales are not in PostgreSQL"
    assert set(stored.values()) == {1}
    # A 503'd record that landed after all (possible, rarely) carries the id of its retry.
    assert set(stored) <= oracle.ids | oracle.tried

    # Only 202 or 503 with Retry-After, as problem+json; nothing sent while down was accepted.
    statuses = oracle.statuses()
    assert set(statuses) <= {202, 503}, statuses
    refused = [a for a in oracle.attempts if a.status == 503]
    assert all(int(a.retry_after) >= 1 for a in refused)
    assert all(a.content_type == "application/problem+json" for a in refused)
    while_down = [a for a in oracle.attempts if a.started >= down and a.ended <= restarting]
    assert while_down and {a.status for a in while_down} == {503}
    assert readiness.first(503, down) is not None, "/readyz should say 503 while the broker is down"
    ready_after = green - back
    assert ready_after <= READY_BOUND_SECONDS, (
        f"/readyz green {ready_after:.1f} s after the broker's port opened"
    )

    figures.update(
        accepted=len(oracle.acks),
        accepted_before_the_crash=before,
        rate_before_the_crash=round(before / (stopping - flowing)),
        p50_202_ms=round(
            1000
            * sorted(a.ended - a.started for a in oracle.attempts if a.status == 202)[len(oracle.acks) // 2]
        ),
        refused_503=statuses[503],
        requests_while_down=len(while_down),
        outage_seconds=round(restarting - stopping, 1),
        broker_port_open_after_start_seconds=round(back - restarting, 1),
        broker_answering_after_port_open_seconds=round(answering - back, 1),
        readyz_green_after_return_seconds=round(ready_after, 2),
        drained=result,
        in_postgresql=len(set(stored) & oracle.ids),
        landed_despite_503=len(set(stored) - oracle.ids),
        lost=len(missing),
    )
