"""Stock replenishment benchmark: the service's throughput and its 202-to-order latency.

    .venv/bin/python -m bench.stock [--sales 3000] [--rounds 7] [--batch-sizes 5] [--max-batches 20]
                                    [--duration 20] [--rate 500]
                                    [--only throughput|latency] [--source api|producer] [--instances 1 2]

1. Throughput, as a ratio to a bare consumer on the same data in the same run. Both read
   the same `sales` records from the start, each in a fresh group, and commit
   synchronously:
   * baseline: a bare confluent-kafka consumer that only decodes each record (the
     runner's `decode`, pydantic) and commits every STOCK_BATCH_SIZE records;
   * gremio: `StockService` on its runner (consumers/stock/runner.py): decode, then per
     run of up to STOCK_MAX_BATCHES_PER_COMMIT batches waiting (each batch decided on its
     own), one PostgreSQL transaction, the `replenishments` records and the outbox mark,
     then one commit. `--max-batches 1` gives one transaction and commit per batch.
   Each is timed from its first batch in hand to its last batch done (group joins are
   left out). Short rounds alternate, baseline then gremio, so that each pair sees the
   same load on the shared machine; the figure is the median of the pairs' ratios.
   gremio's tables are emptied before each of its rounds, so every round does the same
   work, and the orders made are checked against the pure rule. `--batch-sizes 5 50`
   shows what the batch size costs.
2. Latency from the API's 202 to the order row, p50 and p99, at a trickle and at --rate
   sales/s: real gunicorn (`ingest_api/gunicorn_conf.py`) and a real `python -m
   consumers.stock`; a trigger on replenishment_orders NOTIFYs each committed row to a
   listener, whose receipt time minus the 202's is the latency. `--source producer`
   skips the API and starts the clock at the producer's delivery acknowledgement.

Everything runs on a throwaway Kafka and PostgreSQL (bench/stack.py).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from confluent_kafka import Consumer

from bench.stack import throwaway_stack
from consumers.stock.rules import Rules, handle
from consumers.stock.runner import StockRunner
from consumers.stock.service import StockService
from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import Sale
from gremio.runner import Envelope, decode
from gremio.settings import REPO_ROOT, get_settings
from gremio.stack.system import free_port

CONSONANTS = "BCDFGHJKLPRSTVWXYZ"


def plates(count: int, rng: random.Random) -> list[str]:
    found: set[str] = set()
    while len(found) < count:
        found.add("".join(rng.choices(CONSONANTS, k=4)) + f"{rng.randrange(100):02d}")
    return sorted(found)


def day_of_sales(count: int, carts: int, seed: int = 7) -> list[Sale]:
    """Sales of `carts` carts, interleaved: each cart sells 1-5 units at a time, runs low,
    sells a few more while the truck comes, and is refilled to about 100."""
    rng = random.Random(seed)
    stock = {plate: rng.randrange(30, 120) for plate in plates(carts, rng)}
    low_since: dict[str, int] = {}
    start = datetime.now(UTC) - timedelta(hours=10)
    sales = []
    for i in range(count):
        plate = rng.choice(list(stock))
        if plate in low_since and low_since[plate] >= rng.randrange(2, 6):
            stock[plate] = rng.randrange(95, 120)  # the truck came
            del low_since[plate]
        stock[plate] = max(0, stock[plate] - rng.randrange(1, 6))
        if stock[plate] < 20:
            low_since[plate] = low_since.get(plate, 0) + 1
        at = start + timedelta(milliseconds=100 * i)
        sale = Sale(
            id=uuid.uuid4(), plate=plate, client=f"cliente-{rng.randrange(500)}",
            quantity=rng.randrange(1, 6), sold_at=at, stock_remaining=stock[plate],
            lat=-33.45, lon=-70.66, received_at=at,
        )  # fmt: skip
        sales.append(sale)
    return sales


def expected_orders(sales: list[Sale]) -> int:
    """How many orders the pure rule opens for these sales, starting from empty tables."""
    return len(handle(sales, {}, Rules.from_settings(get_settings()), datetime.now(UTC)).opened)


def sale_record(sale: Sale) -> gk.Outgoing:
    return gk.Outgoing.of(sale, t.SALES.name, sale.plate)


# --- 1. throughput ----------------------------------------------------------------------------


@dataclass
class Run:
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def bare_consumer(total: int, batch_size: int) -> Run:
    """Decode and commit, nothing else: the floor any consumer of these records pays."""
    consumer = Consumer(
        get_settings().kafka_config(
            **{
                "group.id": f"bench-bare-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": 16 * 1024 * 1024,
            }
        )
    )
    consumer.subscribe([t.SALES.name])
    accepts = {"Sale": Sale}
    seen, started = 0, None
    try:
        while seen < total:
            msgs = consumer.consume(num_messages=batch_size, timeout=1.0)
            if not msgs:
                continue
            started = started or time.perf_counter()
            for msg in msgs:
                if msg.error() is None:
                    decode(msg, accepts)
                    seen += 1
            consumer.commit(asynchronous=False)
        return Run(seen, time.perf_counter() - (started or 0))
    finally:
        consumer.close()


class TimedService(StockService):
    """The real service, noting when its first batch started and its last one ended."""

    def __init__(self) -> None:
        super().__init__(group_id=f"bench-stock-{uuid.uuid4()}")
        self.done = 0
        self.started: float | None = None
        self.ended = 0.0

    def process(self, batch: list[Envelope]) -> Sequence[tuple[Envelope, str]] | None:
        self.started = self.started or time.perf_counter()
        refused = super().process(batch)
        self.done += len(batch)
        self.ended = time.perf_counter()
        return refused


def stock_service(total: int) -> Run:
    service = TimedService()
    runner = StockRunner(service)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        while service.done < total:
            if not thread.is_alive():
                raise RuntimeError("the stock service stopped")
            time.sleep(0.05)
    finally:
        runner.stop()
        thread.join(60)
        service.close()
    return Run(service.done, service.ended - (service.started or 0))


def empty_tables() -> None:
    with db.connect() as conn:
        conn.execute("truncate replenishment_orders, cart_stock, replenishment_sales")


def order_count() -> int:
    with db.connect() as conn:
        return conn.execute("select count(*) from replenishment_orders").fetchone()[0]


def throughput(count: int, carts: int, rounds: int, batch_sizes: list[int], max_batches: list[int]) -> None:
    """Alternate baseline and gremio in short rounds; each pair ran under the same load."""
    sales = day_of_sales(count, carts)
    want = expected_orders(sales)
    gk.produce_all(gk.producer(), [sale_record(s) for s in sales], timeout=120)
    print(
        f"\n{count:,} sales of {carts} carts ({want} orders by the rule); {rounds} rounds of "
        "baseline then gremio; the ratio is the median of the rounds' ratios\n"
    )
    print(
        "| batch size | batches per commit (at most) | baseline: decode + commit | gremio: StockService "
        "| gremio / baseline (range) |"
    )
    print("|---|---|---|---|---|")
    for size, most in [(size, most) for size in batch_sizes for most in max_batches]:
        os.environ["STOCK_BATCH_SIZE"] = str(size)
        os.environ["STOCK_MAX_BATCHES_PER_COMMIT"] = str(most)
        get_settings.cache_clear()
        pairs: list[tuple[Run, Run]] = []
        for _ in range(rounds):
            bare = bare_consumer(count, size)
            empty_tables()
            pairs.append((bare, stock_service(count)))
            made = order_count()
            if made != want:
                raise AssertionError(f"the service made {made} orders, the rule says {want}")
        ratios = sorted(g.rate / b.rate for b, g in pairs)
        b_rate = statistics.median(b.rate for b, _ in pairs)
        g_rate = statistics.median(g.rate for _, g in pairs)
        print(
            f"| {size} | {most} | {b_rate:,.0f} sales/s | {g_rate:,.0f} sales/s "
            f"| **{statistics.median(ratios):.2f}** ({ratios[0]:.2f}-{ratios[-1]:.2f}) |",
            flush=True,
        )
    os.environ.pop("STOCK_BATCH_SIZE", None)
    os.environ.pop("STOCK_MAX_BATCHES_PER_COMMIT", None)
    get_settings.cache_clear()
    print(
        f"\nEvery gremio round made {want} orders, as the pure rule says. Load average (1 min) "
        f"at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."
    )


# --- 2. latency from the 202 to the order row ------------------------------------------------------


class OrderWatch:
    """LISTENs for committed order rows (a bench-only trigger) and notes when each arrived."""

    def __init__(self) -> None:
        with db.connect(autocommit=True) as conn:
            conn.execute(
                """
                create or replace function bench_order_inserted() returns trigger as $$
                begin perform pg_notify('bench_orders', new.sale_id::text); return new; end
                $$ language plpgsql;
                drop trigger if exists bench_order_inserted on replenishment_orders;
                create trigger bench_order_inserted after insert on replenishment_orders
                    for each row execute function bench_order_inserted();
                """
            )
        self.seen: dict[uuid.UUID, float] = {}
        self._stop = threading.Event()
        self._conn = db.connect(autocommit=True)
        self._conn.execute("listen bench_orders")
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            for note in self._conn.notifies(timeout=0.2):
                self.seen[uuid.UUID(note.payload)] = time.time()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


@contextlib.contextmanager
def stock_process(log: Path) -> Iterator[int]:
    """`python -m consumers.stock` running; yields its metrics port."""
    port = free_port()
    env = {**os.environ, "STOCK_METRICS_PORT": str(port)}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumers.stock"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Traffic:
    """Sales of many carts, each cart's in order: four above the threshold, then one below."""

    carts: list[str]
    cycle: tuple[int, ...] = (60, 50, 40, 30, 15)
    sent: dict[uuid.UUID, float] = field(default_factory=dict)  # sale id -> time of the 202
    low: set[uuid.UUID] = field(default_factory=set)
    errors: int = 0
    first_error: str = ""

    def body(self, cart_index: int, step: int) -> dict:
        return {
            "plate": self.carts[cart_index],
            "client": f"cliente-{step % 40}",
            "quantity": 1 + step % 4,
            "stock_remaining": self.cycle[step % len(self.cycle)],
            "location": {"lat": -33.45, "lon": -70.66},
        }


class ApiSender:
    """POST /v1/sales through the real API; the clock starts at the 202.

    http.client with one keep-alive connection per thread: the lightest client in the
    standard library, so that the sender takes as little of the shared CPU as it can.
    """

    def __init__(self, base: str) -> None:
        from gremio.tokens import cart_token

        self.address = urlsplit(base)
        self.token = cart_token
        self.local = threading.local()

    def send(self, body: dict) -> tuple[uuid.UUID, float] | str:
        """The sale's id and when its 202 came, or what went wrong."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(
                self.address.hostname, self.address.port, timeout=30
            )
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token(body['plate'])}"}
        try:
            conn.request("POST", "/v1/sales", json.dumps(body), headers)
            resp = conn.getresponse()
            text = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            return f"{type(exc).__name__}: {exc}"
        at = time.time()
        if resp.status != 202:
            return f"{resp.status} {text[:300]!r}"
        return uuid.UUID(json.loads(text)["id"]), at


class ProducerSender:
    """Produce the Sale directly; the clock starts at the broker's acknowledgement."""

    def __init__(self) -> None:
        self.local = threading.local()

    def send(self, body: dict) -> tuple[uuid.UUID, float] | str:
        producer = getattr(self.local, "producer", None)
        if producer is None:
            producer = self.local.producer = gk.producer()
        now = datetime.now(UTC)
        loc = body["location"]
        sale = Sale(
            id=uuid.uuid4(), plate=body["plate"], client=body["client"], quantity=body["quantity"],
            sold_at=now, stock_remaining=body["stock_remaining"], lat=loc["lat"], lon=loc["lon"],
            received_at=now,
        )  # fmt: skip
        gk.produce_all(producer, [sale_record(sale)])
        return sale.id, time.time()


def drive(
    sender: ApiSender | ProducerSender, traffic: Traffic, rate: float, duration: float, threads: int
) -> float:
    """Send at `rate` sales/s for `duration` s (open loop, each cart owned by one thread); returns the achieved rate."""
    per_thread = rate / threads
    started = time.monotonic()
    counts = [0] * threads

    def work(k: int) -> None:
        mine = list(range(k, len(traffic.carts), threads))
        step = 0
        while True:
            due = started + counts[k] / per_thread
            if due - started >= duration:
                return
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            cart = mine[counts[k] % len(mine)]
            body = traffic.body(cart, step)
            result = sender.send(body)
            counts[k] += 1
            if counts[k] % len(mine) == 0:
                step += 1
            if isinstance(result, str):
                traffic.errors += 1
                traffic.first_error = traffic.first_error or result
                continue
            sale_id, at = result
            traffic.sent[sale_id] = at
            if body["stock_remaining"] < 20:
                traffic.low.add(sale_id)

    workers = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / max(duration, time.monotonic() - started)


@dataclass
class Latency:
    offered: float
    achieved: float
    orders: int
    missing: int
    p50_ms: float
    p99_ms: float
    errors: int
    batch_ms: float = 0.0  # the services' mean time per batch (gremio_stock_batch_seconds)
    load: float = 0.0  # the machine's 1-minute load average at the end


def batch_totals(ports: list[int]) -> tuple[float, float]:
    """Batches made and seconds spent in them, summed over the instances' /metrics."""
    count = seconds = 0.0
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        count += float(re.findall(r"^gremio_stock_batch_seconds_count (\S+)$", text, re.M)[0])
        seconds += float(re.findall(r"^gremio_stock_batch_seconds_sum (\S+)$", text, re.M)[0])
    return count, seconds


def measured(run: Callable[[], Latency], ports: list[int]) -> Latency:
    """A latency run, with the services' mean batch time over it and the machine's load."""
    count, seconds = batch_totals(ports)
    result = run()
    after_count, after_seconds = batch_totals(ports)
    batch_ms = 1000 * (after_seconds - seconds) / max(1.0, after_count - count)
    return replace(result, batch_ms=batch_ms, load=os.getloadavg()[0])


def measure_latency(
    sender: ApiSender | ProducerSender,
    watch: OrderWatch,
    rate: float,
    duration: float,
    carts: int,
    threads: int,
    cycle: tuple[int, ...] = Traffic.cycle,
) -> Latency:
    traffic = Traffic(plates(carts, random.Random()), cycle)
    achieved = drive(sender, traffic, rate, duration, threads)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not traffic.low <= watch.seen.keys():
        time.sleep(0.2)
    got = sorted((watch.seen[s] - traffic.sent[s]) * 1000 for s in traffic.low if s in watch.seen)
    if not got:
        raise RuntimeError(f"no order rows seen ({traffic.errors} errors, first: {traffic.first_error})")
    return Latency(
        rate,
        achieved,
        len(got),
        len(traffic.low) - len(got),
        statistics.median(got),
        got[min(len(got) - 1, int(len(got) * 0.99))],
        traffic.errors,
    )


@contextlib.contextmanager
def api_server(tmp: Path) -> Iterator[str]:
    """The real API under gunicorn with its own config (the API benchmark's launcher); its URL."""
    from bench.api import CONF, server

    settings = get_settings()
    with server(
        "ingest_api:create_app()", CONF, settings.api_workers, settings.api_threads, tmp / "api.log"
    ) as served:
        yield served.url


def wait_for_members(group: str, members: int, timeout: float = 90) -> None:
    """Until `members` instances hold partitions in the group."""
    admin = gk.admin()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            [future] = admin.describe_consumer_groups([group]).values()
            found = future.result().members
            if len(found) == members and all(m.assignment.topic_partitions for m in found):
                return
        time.sleep(0.5)
    raise TimeoutError(f"{members} members of {group} not assigned after {timeout:.0f} s")


def latency(rate: float, duration: float, source: str, instances: list[int], tmp: Path) -> None:
    watch = OrderWatch()
    trickle = 2.0
    # Enough carts to spread the load, few enough that each goes round its cycle often.
    carts = min(200, max(32, int(rate * duration) // 25))
    results: list[tuple[int, str, Latency]] = []
    try:
        with contextlib.ExitStack() as stack:
            sender = ApiSender(stack.enter_context(api_server(tmp))) if source == "api" else ProducerSender()
            for count in instances:
                with contextlib.ExitStack() as services:
                    ports = [
                        services.enter_context(stock_process(tmp / f"stock-{count}-{i}.log"))
                        for i in range(count)
                    ]
                    wait_for_members(get_settings().stock_group_id, count)
                    measure_latency(sender, watch, 10, 3, 4, 2, cycle=(50, 10))  # warm-up: connections, plans
                    # Every other trickle sale is low, so that a short run still yields some orders.
                    trickled = measured(
                        lambda: measure_latency(sender, watch, trickle, duration, 2, 1, cycle=(50, 10)), ports
                    )
                    results.append((count, "trickle", trickled))
                    loaded_run = measured(
                        lambda: measure_latency(sender, watch, rate, duration, carts, 32), ports
                    )
                    results.append((count, "load", loaded_run))
    finally:
        watch.close()
    start = "the API's 202" if source == "api" else "the producer's acknowledgement (no API)"
    print(f"\nLatency from {start} to the committed order row ({duration:.0f} s per run)\n")
    print(
        "| stock instances | traffic | offered | achieved | orders | p50 | p99 | missing | errors "
        "| mean batch | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for count, name, r in results:
        print(
            f"| {count} | {name} | {r.offered:,.0f} sales/s | {r.achieved:,.0f} sales/s | {r.orders} "
            f"| {r.p50_ms:,.0f} ms | {r.p99_ms:,.0f} ms | {r.missing} | {r.errors} | {r.batch_ms:.1f} ms "
            f"| {r.load:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=3000, help="sales for the throughput runs")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[5],
        help="STOCK_BATCH_SIZE values for the throughput runs",
    )
    parser.add_argument(
        "--max-batches",
        type=int,
        nargs="+",
        default=[get_settings().stock_max_batches_per_commit],
        help="STOCK_MAX_BATCHES_PER_COMMIT values for the throughput runs (1: a commit per batch)",
    )
    parser.add_argument("--carts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rate", type=float, default=500, help="sales/s of the loaded latency run")
    parser.add_argument("--duration", type=float, default=20, help="seconds per latency run")
    parser.add_argument("--only", choices=("throughput", "latency"))
    parser.add_argument("--source", choices=("api", "producer"), default="api")
    parser.add_argument(
        "--instances", type=int, nargs="+", default=[1, 2], help="stock service instances per latency run"
    )
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gremio-bench-stock-"))
    print(
        f"# stock replenishment benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores (shared)"
    )
    with throwaway_stack():
        if args.only in (None, "throughput"):
            throughput(args.sales, args.carts, args.rounds, args.batch_sizes, args.max_batches)
        if args.only in (None, "latency"):
            empty_tables()
            latency(args.rate, args.duration, args.source, args.instances, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
