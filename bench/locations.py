"""Live-location benchmark: throughput against a bare consumer, memory, ping-to-board latency.

    .venv/bin/python -m bench.locations [--carts 1000] [--steps 50] [--rounds 2] [--pings 300]

1. Throughput: the same CartPositions are read by a bare decode-and-commit consumer
   (the baseline) and by the location service on the shared runner, alternately, each in
   a fresh consumer group. Figures: position updates/s, and the service as a ratio.
2. Memory: a LiveView holding 10,000 live carts (each with two positions applied, so its
   speed is known) and 10,000 registered members. Measured twice in this process: RSS
   growth while building it (includes what the allocator keeps of the freed records), and
   tracemalloc (Python allocations made while building it and still alive: the view).
3. Latency: pings POSTed to the real ingest API (gunicorn, `ingest_api/gunicorn_conf.py`);
   from each 202 until GET /v1/live shows the ping, p50 and p99. Side by side, a bare
   consumer notes when the same record becomes readable from Kafka (the baseline).

Everything runs on a throwaway Kafka and PostgreSQL (bench/stack.py).
"""

from __future__ import annotations

import argparse
import base64
import gc
import http.client
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from werkzeug.security import generate_password_hash

from bench.stack import throwaway_stack
from consumers.locations.service import LocationService
from consumers.locations.view import LiveView, Rules
from consumers.locations.web import StaffLogin, create_app
from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.credentials import staff_basic_auth
from gremio.records import CartPosition, FugitiveReport, Sale, now_utc
from gremio.runner import Envelope, Runner, decode
from gremio.settings import REPO_ROOT, Settings, get_settings
from gremio.stack.system import free_port
from gremio.tokens import cart_token
from gremio.web.server import HttpServer as LiveServer

CONSONANTS = "BCDFGHJKLPRSTVWXYZ"
# The baseline decodes every record with its pydantic model, as a plain consumer would; the
# service decodes positions with its fast decoder (consumers/locations/wire.py). A second
# bare consumer with the service's decoders shows the ratio without that advantage.
ACCEPTS = {"CartPosition": CartPosition, "FugitiveReport": FugitiveReport, "Sale": Sale}


def plates(n: int) -> list[str]:
    """`n` distinct new-format plates, always the same ones."""
    out = []
    for i in range(n):
        letters, digits = divmod(i, 100)
        word = ""
        for _ in range(4):
            letters, k = divmod(letters, len(CONSONANTS))
            word += CONSONANTS[k]
        out.append(f"{word}{digits:02d}")
    return out


def walk(plate: str, i: int, step: int, start: datetime) -> CartPosition:
    """Cart i's position at a step: a slow walk north (1 m per 5 s) inside Santiago."""
    lat = -33.60 + (i % 100) * 0.004 + step * 0.000009
    lon = -70.80 + (i // 100) * 0.004
    at = start + timedelta(seconds=5 * step)
    return CartPosition(id=uuid.uuid4(), plate=plate, lat=lat, lon=lon, recorded_at=at, received_at=now_utc())


def register(all_plates: list[str]) -> None:
    """Every bench cart is an approved member: the runs measure updates, not alert floods."""
    with (
        db.connect() as conn,
        conn.cursor().copy("copy members (rut, first_name, last_name, email, plate) from stdin") as copy,
    ):
        for n, plate in enumerate(all_plates):
            copy.write_row((f"bench-{n}", "Bench", plate, f"{plate.lower()}@example.cl", plate))


def produce_positions(carts: list[str], steps: int) -> int:
    start = now_utc() - timedelta(seconds=5 * steps)
    prod = gk.producer()
    batch = []
    for step in range(steps):
        for i, plate in enumerate(carts):
            pos = walk(plate, i, step, start)
            partition = t.position_partition(plate, t.LOCATIONS.partitions)
            batch.append(gk.Outgoing.of(pos, t.LOCATIONS.name, plate, partition))
    gk.produce_all(prod, batch, timeout=120)
    return len(batch)


# --- 1. throughput ----------------------------------------------------------------------------


def bare_consumer(settings: Settings, n: int, batch_size: int, accepts: Mapping[str, Any] = ACCEPTS) -> float:
    """Baseline: poll, decode each record into its model, commit each batch. Records/s."""
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"bench-bare-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": 16 * 1024 * 1024,
            }
        )
    )
    consumer.subscribe([t.LOCATIONS.name, t.SALES.name])
    count, first = 0, None
    try:
        while count < n:
            msgs = consumer.consume(batch_size, timeout=0.05)
            if msgs and first is None:
                first = time.perf_counter()
            for msg in msgs:
                if msg.error() is None:
                    decode(msg, accepts)
                    count += 1
            if msgs:
                consumer.commit(asynchronous=False)
        return count / (time.perf_counter() - first)
    finally:
        consumer.close()


class TimedService(LocationService):
    """The real service, noting when its first batch starts and its n-th record is done."""

    def __init__(self, settings: Settings, n: int) -> None:
        super().__init__(settings, group_id=f"bench-locations-{uuid.uuid4()}")
        self.n, self.count = n, 0
        self.first: float | None = None
        self.done = threading.Event()
        self.elapsed = 0.0

    def process(self, batch: list[Envelope]) -> Sequence[tuple[Envelope, str]] | None:
        if self.first is None:
            self.first = time.perf_counter()
        refused = super().process(batch)
        self.count += len(batch)
        if self.count >= self.n and not self.done.is_set():
            self.elapsed = time.perf_counter() - self.first
            self.done.set()
        return refused


def service_rate(settings: Settings, n: int) -> float:
    """Position updates/s through the service on the shared runner (view, alerts, commit)."""
    service = TimedService(settings, n).start()
    runner = Runner(service, settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        if not service.done.wait(600):
            raise RuntimeError(f"the service processed {service.count} of {n} records")
        return n / service.elapsed
    finally:
        runner.stop()
        thread.join(30)
        service.close()


# --- 2. memory --------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_view(n: int) -> LiveView:
    """A view with n live carts (two positions each) and n registered members."""
    start = now_utc()
    view = LiveView(Rules.from_settings())
    carts = plates(n)
    view.set_members({plate: f"Maestro {plate}" for plate in carts})
    for step in range(2):
        for i, plate in enumerate(carts):
            view.apply(walk(plate, i, step, start))
    return view


def view_memory(n: int = 10_000) -> dict[str, float]:
    """Memory held by a LiveView with n live carts: RSS growth, then tracemalloc."""
    gc.collect()
    rss_before = rss_bytes()
    view = build_view(n)
    gc.collect()
    rss = rss_bytes() - rss_before
    del view
    gc.collect()
    tracemalloc.start()
    view = build_view(n)
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(view.carts()) == n
    began = time.perf_counter()
    body = json.dumps(view.snapshot())
    snapshot_ms = (time.perf_counter() - began) * 1000
    return {
        "carts": n,
        "traced_mib": held / 2**20,
        "bytes_per_cart": held / n,
        "rss_growth_mib": rss / 2**20,
        "live_json_kib": len(body) / 1024,
        "live_json_ms": snapshot_ms,
        **live_build(view),
    }


def live_build(view: LiveView, tries: int = 7) -> dict[str, float]:
    """GET /v1/live through the real app (login checked, body built and encoded), median ms:
    the whole view, one area of about a tenth of the carts, and a page of 500."""
    password = secrets.token_urlsafe(24)
    app = create_app(view, login=StaffLogin("bench", generate_password_hash(password))).test_client()
    token = base64.b64encode(f"bench:{password}".encode()).decode()
    app.environ_base["HTTP_AUTHORIZATION"] = f"Basic {token}"
    # build_view's grid: lat -33.60..-33.204, lon -70.80..-70.404; this box holds 10 of its 100 rows.
    queries = {
        "live_ms": "",
        "live_area_ms": "?bbox=-70.80,-33.60,-70.404,-33.565",
        "live_page_ms": "?limit=500",
    }
    out: dict[str, float] = {}
    for name, query in queries.items():
        times, size = [], 0
        for _ in range(tries):
            began = time.perf_counter()
            response = app.get(f"/v1/live{query}")
            times.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, response.data[:200]
            size = len(response.data)
        out[name] = statistics.median(times)
        out[name.replace("_ms", "_kib")] = size / 1024
    return out


# --- 3. latency -------------------------------------------------------------------------------


def start_api(port: int) -> subprocess.Popen:
    env = {**os.environ, "API_PORT": str(port), "BIND_HOST": "127.0.0.1"}
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    proc = subprocess.Popen(
        [gunicorn, "-c", str(REPO_ROOT / "ingest_api" / "gunicorn_conf.py"), "ingest_api:create_app()"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("the ingest API did not become ready")


class Client:
    """A keep-alive HTTP connection that reconnects once if the server had closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, **kwargs: object) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, **kwargs)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError):
                # gunicorn drops keep-alive connections idle for 5 s (a slow, shared machine).
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


class ArrivalWatch(threading.Thread):
    """Baseline: a bare consumer at the end of `locations`, noting when each record id arrives."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.arrived: dict[str, float] = {}
        self.stopping = threading.Event()
        self.consumer = Consumer(
            settings.kafka_config(**{"group.id": f"bench-watch-{uuid.uuid4()}", "enable.auto.commit": False})
        )
        parts = []
        for p in range(t.LOCATIONS.partitions):
            tp = TopicPartition(t.LOCATIONS.name, p)
            parts.append(TopicPartition(t.LOCATIONS.name, p, self.consumer.get_watermark_offsets(tp, 10)[1]))
        self.consumer.assign(parts)

    def run(self) -> None:
        while not self.stopping.is_set():
            # poll(), not consume(n): consume waits for n records or the whole timeout.
            msg = self.consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                self.arrived[json.loads(msg.value())["id"]] = time.perf_counter()
        self.consumer.close()


def latency(settings: Settings, pings: int) -> dict[str, float]:
    carts = plates(1_010)[1_000:]  # ten carts of their own, registered with the rest
    service = LocationService(settings, group_id=f"bench-latency-{uuid.uuid4()}").start()
    server = LiveServer(create_app(service.view), "127.0.0.1", 0).start()
    runner = Runner(service, settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    runner.assigned.wait(60)
    watch = ArrivalWatch(settings)
    watch.start()
    api_port = free_port()
    api = start_api(api_port)
    to_board, to_kafka = [], []
    try:
        api_conn, live_conn = Client(api_port), Client(server.port)
        tokens = {plate: cart_token(plate, settings) for plate in carts}
        staff = staff_basic_auth(settings)  # the live service's staff login (STAFF_PASSWORD)
        for i in range(pings):
            plate = carts[i % len(carts)]
            # Standing still (no jump alerts); recorded_at tells this ping from the last.
            recorded_at = datetime.now(UTC).isoformat()
            spot = -33.45 + (i % len(carts)) * 0.001
            body = json.dumps({"plate": plate, "lat": spot, "lon": -70.66, "recorded_at": recorded_at})
            headers = {"Authorization": f"Bearer {tokens[plate]}", "Content-Type": "application/json"}
            status, answer = api_conn.request("POST", "/v1/locations", body=body, headers=headers)
            accepted = time.perf_counter()
            if status != 202:
                raise RuntimeError(f"POST /v1/locations: {status} {answer[:200]!r}")
            ping_id = json.loads(answer)["id"]
            while True:
                shown = json.loads(live_conn.request("GET", "/v1/live", headers=staff)[1])
                if any(c["plate"] == plate and c["recorded_at"] == _iso(recorded_at) for c in shown["carts"]):
                    to_board.append(time.perf_counter() - accepted)
                    break
                time.sleep(0.001)
            deadline = time.monotonic() + 10
            while ping_id not in watch.arrived and time.monotonic() < deadline:
                time.sleep(0.001)
            to_kafka.append(watch.arrived[ping_id] - accepted)
    finally:
        api.terminate()
        api.wait(30)
        watch.stopping.set()
        watch.join(10)
        runner.stop()
        thread.join(30)
        server.stop()
        service.close()
    return {
        "pings": pings,
        "board_p50_ms": _pct(to_board, 50),
        "board_p99_ms": _pct(to_board, 99),
        "kafka_p50_ms": _pct(to_kafka, 50),
        "kafka_p99_ms": _pct(to_kafka, 99),
    }


def _iso(value: str) -> str:
    return datetime.fromisoformat(value).isoformat()


def _pct(samples: list[float], q: int) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carts", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50, help="positions per cart")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pings", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # no request lines from the /v1/live poller

    print("memory with 10,000 live carts ...", flush=True)
    memory = view_memory(10_000)
    with throwaway_stack():
        settings = get_settings()
        carts = plates(args.carts)
        register(plates(max(args.carts, 1_010)))
        n = produce_positions(carts, args.steps)
        # The rebuild reads the last LIVE_TTL_SECONDS: make the window cover the whole data set.
        wide = settings.model_copy(update={"live_ttl_seconds": 3600.0})
        bare, bare_fast, served = [], [], []
        for round_ in range(args.rounds):
            bare.append(bare_consumer(settings, n, LocationService.batch_size))
            bare_fast.append(bare_consumer(settings, n, LocationService.batch_size, LocationService.accepts))
            served.append(service_rate(wide, n))
            print(
                f"round {round_ + 1}: bare {bare[-1]:,.0f}/s, bare with the service's decoder "
                f"{bare_fast[-1]:,.0f}/s, service {served[-1]:,.0f}/s",
                flush=True,
            )
        print(f"latency over {args.pings} pings through the API ...", flush=True)
        lat = latency(settings, args.pings)

    ratio = statistics.median(s / b for s, b in zip(served, bare, strict=True))
    ratio_fast = statistics.median(s / b for s, b in zip(served, bare_fast, strict=True))
    print()
    print(f"positions: {n:,} ({args.carts:,} carts x {args.steps} steps), {args.rounds} rounds")
    print(f"  bare decode-and-commit consumer: {statistics.median(bare):>9,.0f} records/s (median)")
    print(f"  location service:                {statistics.median(served):>9,.0f} updates/s (median)")
    print(f"  bare, with the service's decoder:  {statistics.median(bare_fast):>9,.0f} records/s (median)")
    print(f"  ratio service / bare (median of rounds): {ratio:.2f}")
    print(f"  ratio service / bare with the service's decoder: {ratio_fast:.2f}")
    print(
        f"memory, {memory['carts']:,} live carts: {memory['traced_mib']:.1f} MiB traced "
        f"({memory['bytes_per_cart']:,.0f} B/cart), RSS +{memory['rss_growth_mib']:.1f} MiB; "
        f"snapshot + json.dumps {memory['live_json_kib']:,.0f} KiB in {memory['live_json_ms']:.0f} ms"
    )
    print(
        f"GET /v1/live, {memory['carts']:,} carts, median of 7 through the app: whole view "
        f"{memory['live_kib']:,.0f} KiB in {memory['live_ms']:.1f} ms; "
        f"bbox of ~1/10 {memory['live_area_kib']:,.0f} KiB in {memory['live_area_ms']:.1f} ms; "
        f"limit=500 {memory['live_page_kib']:,.0f} KiB in {memory['live_page_ms']:.1f} ms"
    )
    print(
        f"latency, {lat['pings']} pings: 202 -> /v1/live p50 {lat['board_p50_ms']:.1f} ms, "
        f"p99 {lat['board_p99_ms']:.1f} ms; 202 -> readable in Kafka (bare consumer) "
        f"p50 {lat['kafka_p50_ms']:.1f} ms, p99 {lat['kafka_p99_ms']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
