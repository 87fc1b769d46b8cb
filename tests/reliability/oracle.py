"""The reliability tests' oracle: what the API acknowledged, checked against the topics and PostgreSQL.

Every 202 names an id and the topic, partition and offset where the broker stored the record.
The `Oracle` keeps them all (thread-safe, as the load comes from many client threads) and
every HTTP attempt besides, so a test can say afterwards: each acknowledged record is on the
topic where the API said, it is in PostgreSQL, and the expected effects (orders, alerts) are
there exactly once. `Carts` drives the real API as carts do, over keep-alive connections.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import Consumer, TopicPartition

from consumers.stock.rules import Rules, handle, order_id
from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import Sale
from gremio.settings import get_settings
from gremio.tokens import cart_token
from tests.support import Answer, new_plate, read_range


@dataclass(frozen=True, slots=True)
class Ack:
    """One record the API acknowledged (a 202, or one item of a batch's 202)."""

    id: uuid.UUID
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP request: when it was sent and answered, and how."""

    started: float
    ended: float
    status: int
    retry_after: str | None
    content_type: str | None


class Oracle:
    """Every acknowledgement and every attempt, from any number of client threads."""

    def __init__(self) -> None:
        self.acks: list[Ack] = []
        self.attempts: list[Attempt] = []
        self.tried: set[uuid.UUID] = set()  # ids of records refused with 503 (may have landed)
        self._lock = threading.Lock()

    def note(self, started: float, answer: Answer) -> None:
        attempt = Attempt(
            started,
            time.monotonic(),
            answer.status,
            answer.headers.get("Retry-After"),
            answer.headers.get("Content-Type"),
        )
        with self._lock:
            self.attempts.append(attempt)

    def acknowledged(self, result: Mapping[str, Any]) -> Ack:
        ack = Ack(uuid.UUID(result["id"]), result["topic"], result["partition"], result["offset"])
        with self._lock:
            self.acks.append(ack)
        return ack

    @property
    def ids(self) -> set[uuid.UUID]:
        return {ack.id for ack in self.acks}

    def statuses(self) -> Counter:
        return Counter(a.status for a in self.attempts)

    def on_topics(self) -> dict[uuid.UUID, bytes]:
        """Read every acknowledged offset back; fail unless each holds the id the API gave."""
        start: dict[tuple[str, int], int] = {}
        end: dict[tuple[str, int], int] = {}
        for ack in self.acks:
            key = (ack.topic, ack.partition)
            start[key] = min(start.get(key, ack.offset), ack.offset)
            end[key] = max(end.get(key, 0), ack.offset + 1)
        stored = {(m.topic(), m.partition(), m.offset()): m.value() for m in read_range(start, end, 120)}
        found: dict[uuid.UUID, bytes] = {}
        wrong = []
        for ack in self.acks:
            value = stored.get((ack.topic, ack.partition, ack.offset))
            if value is None or uuid.UUID(json.loads(value)["id"]) != ack.id:
                wrong.append(ack)
            else:
                found[ack.id] = value
        assert not wrong, f"{len(wrong)} acknowledged offsets do not hold their record, e.g. {wrong[:3]}"
        return found


def ids_in_table(table: str, ids: Iterable[uuid.UUID]) -> Counter:
    """How many rows of `table` (sales, member_applications...) carry each of these ids."""
    from psycopg import sql

    with db.connect() as conn:
        rows = conn.execute(
            sql.SQL("select id from {} where id = any(%s)").format(sql.Identifier(table)), (list(ids),)
        ).fetchall()
    return Counter(row[0] for row in rows)


# --- carts driving the real API ----------------------------------------------------------------


class Connection:
    """A keep-alive HTTP/1.1 connection to the API, opened again after any failure."""

    def __init__(self, base: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: Any, headers: Mapping[str, str]) -> Answer:
        payload = json.dumps(body).encode()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, payload, {"Content-Type": "application/json", **headers})
                response = self.conn.getresponse()
                answer = Answer(response.status, dict(response.headers), response.read())
                if response.will_close:
                    self.close()
                return answer
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    return Answer(0, {}, b"")
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Cart:
    """A cart's sales, as the stock rule sees them: stock runs down, and is refilled after it runs low."""

    plate: str
    rng: random.Random
    stock: int = 100
    low_for: int = 0
    sold: int = 0
    start: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(hours=2))

    def next_sale(self) -> dict[str, Any]:
        if self.low_for >= self.rng.randint(1, 3):  # the truck came
            self.stock, self.low_for = 100, 0
        quantity = self.rng.randint(1, 10)
        self.stock = max(0, self.stock - quantity)
        if self.stock < 20:
            self.low_for += 1
        self.sold += 1
        return {
            "plate": self.plate,
            "client": f"cliente-{self.rng.randrange(40)}",
            "quantity": quantity,
            "stock_remaining": self.stock,
            "sold_at": (self.start + timedelta(seconds=self.sold)).isoformat(),
            "location": {"lat": round(-33.44 + self.rng.uniform(-0.02, 0.02), 6), "lon": -70.65},
        }


def fleet(n: int, seed: int) -> list[Cart]:
    rng = random.Random(seed)
    plates: set[str] = set()
    while len(plates) < n:
        plates.add(new_plate(rng))
    return [Cart(plate, random.Random(f"{seed}-{plate}")) for plate in sorted(plates)]


class Carts:
    """Client threads sending the fleet's sales through the real API and noting every answer.

    Each thread owns some carts and sends each cart's sales in order, so a cart's sales sit
    on its partition in the order they were made. A 503 is retried with the same
    Idempotency-Key after its Retry-After, as a cart does; the record keeps its id.
    """

    def __init__(self, base: str, carts: Sequence[Cart], oracle: Oracle, threads: int = 8) -> None:
        self.base, self.carts, self.oracle = base, carts, oracle
        self.threads = threads
        self.stop = threading.Event()
        self.failures: list[str] = []
        self._workers: list[threading.Thread] = []

    def run(
        self, total: int, batch: int = 1, rate: float | None = None, until: Callable[[], bool] | None = None
    ) -> Carts:
        """Start sending `total` sales (or until `until()`), `batch` per request, at about `rate` sales/s."""
        per_thread = [self.carts[i :: self.threads] for i in range(self.threads)]
        quota = [total // self.threads + (1 if i < total % self.threads else 0) for i in range(self.threads)]
        for owned, count in zip(per_thread, quota, strict=True):
            pace = None if rate is None else batch * self.threads / rate
            worker = threading.Thread(target=self._send, args=(owned, count, batch, pace, until), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    @property
    def running(self) -> bool:
        return any(w.is_alive() for w in self._workers)

    def join(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.1, deadline - time.monotonic()))
        assert not self.running, "the client threads did not finish"
        assert not self.failures, self.failures[:5]

    def _send(
        self,
        owned: Sequence[Cart],
        count: int,
        batch: int,
        pace: float | None,
        until: Callable[[], bool] | None,
    ) -> None:
        conn = Connection(self.base)
        tokens = {cart.plate: f"Bearer {cart_token(cart.plate)}" for cart in owned}
        sent, turn, next_at = 0, 0, time.monotonic()
        try:
            while not self.stop.is_set() and (sent < count if until is None else not until()):
                cart = owned[turn % len(owned)]
                turn += 1
                size = batch if until is not None else min(batch, count - sent)
                sales = [cart.next_sale() for _ in range(size)]
                headers = {"Authorization": tokens[cart.plate], "Idempotency-Key": str(uuid.uuid4())}
                if batch == 1:
                    self._deliver(conn, "/v1/sales", sales[0], headers)
                else:
                    self._deliver(conn, "/v1/sales/batch", {"sales": sales}, headers)
                sent += size
                if pace is not None:
                    next_at += pace
                    time.sleep(max(0.0, next_at - time.monotonic()))
        except Exception as exc:  # a thread's failure must reach the test
            self.failures.append(repr(exc))
        finally:
            conn.close()

    def _deliver(self, conn: Connection, path: str, body: Any, headers: Mapping[str, str]) -> None:
        """Until a 202: anything but a 503 with Retry-After is a failure of the test."""
        while True:
            started = time.monotonic()
            answer = conn.post(path, body, headers)
            self.oracle.note(started, answer)
            if answer.status == 202:
                result = answer.json()
                for item in result.get("results", [result]):
                    if "id" not in item:
                        raise AssertionError(f"a batch item was refused: {item}")
                    self.oracle.acknowledged(item)
                return
            if answer.status != 503 or not answer.headers.get("Retry-After"):
                raise AssertionError(f"{path} answered {answer.status}: {answer.body[:500]!r}")
            if path == "/v1/sales":
                self.oracle.tried.add(_derived_id(headers["Idempotency-Key"], body))
            time.sleep(min(float(answer.headers["Retry-After"]), 2.0))


def _derived_id(key: str, body: dict) -> uuid.UUID:
    from gremio.records import SaleIn, request_id

    sale = SaleIn.model_validate(body)
    return request_id(key, "/v1/sales", sale, sale.plate)


# --- what the stock rule expects ----------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedOrder:
    id: uuid.UUID
    plate: str
    sale_id: uuid.UUID
    status: str
    delivered_by: uuid.UUID | None


def expected_orders(sales: Iterable[tuple[tuple[int, int], Sale]]) -> dict[uuid.UUID, ExpectedOrder]:
    """The orders the pure rule makes of these sales, taken in partition order ((partition, offset), sale)."""
    ordered = [sale for _, sale in sorted(sales, key=lambda item: item[0])]
    decision = handle(ordered, {}, Rules.from_settings(get_settings()), datetime.now(UTC))
    delivered = {d.order_id: d.sale_id for d in decision.delivered}
    return {
        order.sale_id: ExpectedOrder(
            order.id,
            order.plate,
            order.sale_id,
            "delivered" if order.id in delivered else "open",
            delivered.get(order.id),
        )
        for order in decision.opened
    }


def orders_in_table(plates: Sequence[str]) -> list[tuple]:
    """(sale_id, id, plate, status, delivered_by_sale_id) of these carts' orders."""
    with db.connect() as conn:
        return conn.execute(
            "select sale_id, id, plate, status, delivered_by_sale_id from replenishment_orders"
            " where plate = any(%s)",
            (list(plates),),
        ).fetchall()


def check_orders(expected: Mapping[uuid.UUID, ExpectedOrder], plates: Sequence[str]) -> None:
    """The table holds exactly the expected orders: none missing, none doubled, each in its state."""
    rows = orders_in_table(plates)
    by_sale = Counter(row[0] for row in rows)
    doubled = [sale for sale, n in by_sale.items() if n > 1]
    missing = sorted(set(expected) - set(by_sale), key=str)
    extra = sorted(set(by_sale) - set(expected), key=str)
    assert not doubled and not missing and not extra, (
        f"{len(missing)} orders missing, {len(extra)} unexpected, {len(doubled)} doubled "
        f"(of {len(expected)} expected)"
    )
    wrong = [row for row in rows if (row[1], row[3], row[4]) != (order_id(row[0]), *_state(expected[row[0]]))]
    assert not wrong, f"{len(wrong)} orders in the wrong state, e.g. {wrong[:3]}"


def _state(order: ExpectedOrder) -> tuple[str, uuid.UUID | None]:
    return order.status, order.delivered_by


# --- reading whole topics without keeping big values ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    """A record as read back: where it is, its key, headers, and its value's size and digest."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    size: int
    digest: str

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None


def digest(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()


def scan(start: Mapping[tuple[str, int], int], end: Mapping[tuple[str, int], int]) -> Iterator[Seen]:
    """Every record from `start` up to `end`, one at a time, values reduced to a digest (1 MB poison)."""
    wanted = {tp: (s, end[tp]) for tp, s in start.items() if end.get(tp, s) > s}
    if not wanted:
        return
    consumer = Consumer(
        get_settings().kafka_config(
            **{"group.id": f"probe-{uuid.uuid4()}", "enable.auto.commit": False, "fetch.max.bytes": 64 << 20}
        )
    )
    try:
        consumer.assign([TopicPartition(tp, p, s) for (tp, p), (s, _) in wanted.items()])
        remaining = sum(e - s for s, e in wanted.values())
        deadline = time.monotonic() + 300
        while remaining > 0:
            assert time.monotonic() < deadline, f"{remaining} records not readable"
            for msg in consumer.consume(200, timeout=0.5):
                if msg.error() or msg.offset() >= wanted[(msg.topic(), msg.partition())][1]:
                    continue
                remaining -= 1
                value = msg.value()
                yield Seen(
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.key(),
                    tuple(msg.headers() or ()),
                    len(value or b""),
                    digest(value),
                )
    finally:
        consumer.close()


def dead_letters(since: Mapping[tuple[str, int], int]) -> list[Seen]:
    """Everything dead-lettered since the marks `since` (a high_watermarks of `deadletter`)."""
    from tests.support import high_watermarks

    return list(scan(since, high_watermarks([t.DEADLETTER.name])))


def produce_raw(records: Sequence[tuple[str, bytes | None, bytes, list[tuple[str, bytes]], int | None]]):
    """Produce (topic, key, value, headers, partition) tuples in order; the acknowledged messages."""
    producer = gk.producer()
    delivered = []
    for start in range(0, len(records), 200):  # bounded memory with 1 MB values
        delivered += gk.produce_all(producer, records[start : start + 200], timeout=120)
    return delivered


def drain(topic: str, table: str, record: str, group_id: str, **options: Any) -> dict[str, Any]:
    """Run the drain operator (plugins/kafka_drain.py) as a DAG task would, in this process."""
    from kafka_drain import KafkaDrainOperator

    from gremio.sales_partitions import DRAIN_OPTIONS

    if table == "sales":  # partitioned by day, as the sales_daily DAG drains it
        options = {**DRAIN_OPTIONS, **options}

    op = KafkaDrainOperator(
        task_id=f"drain_{topic}", topic=topic, table=table, record=record, group_id=group_id, **options
    )
    return op.execute(context={})


# --- carts pinging their positions (the location service's load) -----------------------------------


@dataclass
class Walker:
    """A cart on the move: it pings (or, as a seller, sells) once a round, a few metres further on."""

    plate: str
    lat: float
    lon: float
    sells: bool = False
    quiet_after: int | None = None  # stops sending after this many rounds


class Pinger:
    """Rounds of positions, one a second, produced where the API puts them; every acknowledgement kept."""

    def __init__(self, walkers: Sequence[Walker], every: float = 1.0) -> None:
        self.walkers = list(walkers)
        self.every = every
        self.rounds = 0
        self.acked: list[Any] = []
        self.last: dict[str, Any] = {}  # plate -> the newest record sent
        self._jump: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Pinger:
        self._thread.start()
        return self

    def jump(self, *plates: str) -> None:
        """These carts move ~2 km in their next round: over any sane speed."""
        with self._lock:
            self._jump |= set(plates)

    def wait_rounds(self, n: int, timeout: float = 60) -> None:
        target = self.rounds + n
        deadline = time.monotonic() + timeout
        while self.rounds < target:
            assert not self._failure, self._failure
            assert time.monotonic() < deadline, "the pinger stalled"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._failure, self._failure

    def _run(self) -> None:
        from gremio.records import CartPosition
        from tests.support import routed

        producer = gk.producer()
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                with self._lock:
                    jumping, self._jump = self._jump, set()
                batch = []
                now = datetime.now(UTC)
                for walker in self.walkers:
                    if walker.quiet_after is not None and self.rounds >= walker.quiet_after:
                        continue
                    walker.lat += 0.02 if walker.plate in jumping else 0.00003  # 2.2 km, or ~3 m
                    at = {"lat": round(walker.lat, 6), "lon": walker.lon}
                    if walker.sells:
                        record: Any = Sale(
                            id=uuid.uuid4(), plate=walker.plate, client="cliente-1", quantity=1,
                            sold_at=now, stock_remaining=80, received_at=now, **at,
                        )  # fmt: skip
                    else:
                        record = CartPosition(
                            id=uuid.uuid4(), plate=walker.plate, recorded_at=now, received_at=now, **at
                        )
                    self.last[walker.plate] = record
                    batch.append(routed(record))
                self.acked += gk.produce_all(producer, batch)
                self.rounds += 1
                self._stop.wait(max(0.0, self.every - (time.monotonic() - began)))
        except BaseException as exc:  # reported by wait_rounds() and stop()
            self._failure.append(exc)
        finally:
            producer.flush(10)


def alerts_in_table(plates: Iterable[str]) -> list[tuple]:
    """(id, kind, plate) of these carts' alerts."""
    with db.connect() as conn:
        return conn.execute(
            "select id, kind, plate from alerts where plate = any(%s)", (list(plates),)
        ).fetchall()


def alerts_on_topic(probe: Any, plates: Iterable[str]) -> list[Any]:
    """The Alert records published for these carts since the probe's marks."""
    from gremio.records import Alert

    keys = {plate.encode() for plate in plates}
    return [Alert.from_bytes(m.value()) for m in probe.records(t.ALERTS.name) if m.key() in keys]


def check_alerts_once(expected: set[tuple[str, str]], plates: Iterable[str], probe: Any) -> dict[str, int]:
    """Each expected (kind, plate) alert exactly once in the table and once (by id) on the topic."""
    rows = alerts_in_table(plates)
    per_kind_plate = Counter((kind, plate) for _, kind, plate in rows)
    assert set(per_kind_plate) == expected, (
        f"missing {expected - set(per_kind_plate)}, unexpected {set(per_kind_plate) - expected}"
    )
    repeated = {k: n for k, n in per_kind_plate.items() if n > 1}
    assert not repeated, f"alerts repeated within the suppression window: {repeated}"
    published = alerts_on_topic(probe, plates)
    ids = {alert.id for alert in published}
    assert ids == {row[0] for row in rows}, "the topic's alerts are not the table's"
    return {
        "alerts": len(rows),
        "alert_records": len(published),
        "published_twice": len(published) - len(ids),
    }
