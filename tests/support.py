"""Helpers for tests that read what really landed on Kafka and in PostgreSQL, and that run the
real services (consumers, the API under gunicorn) as child processes to break them."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from gremio import kafka as gk
from gremio import topics as t
from gremio.settings import REPO_ROOT, get_settings
from gremio.stack.system import free_port

T = TypeVar("T")


_NOT_READY_YET = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


def _high_watermark(consumer: Consumer, tp: TopicPartition, timeout: float = 10.0) -> int:
    """A fresh broker may answer NOT_LEADER for a moment after creating a topic: retry that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=timeout)[1]
        except KafkaException as exc:
            if exc.args[0].code() not in _NOT_READY_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def high_watermarks(topics: Iterable[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer(get_settings().kafka_config(**{"group.id": f"probe-{uuid.uuid4()}"}))
    try:
        marks = {}
        meta = consumer.list_topics(timeout=10).topics
        for topic in topics:
            for partition in meta[topic].partitions:
                marks[(topic, partition)] = _high_watermark(consumer, TopicPartition(topic, partition))
        return marks
    finally:
        consumer.close()


def read_range(
    start: dict[tuple[str, int], int], end: dict[tuple[str, int], int], timeout: float = 30
) -> list[Message]:
    """Every record from `start` (inclusive) up to `end` (exclusive) offsets."""
    wanted = {tp: (s, end[tp]) for tp, s in start.items() if end.get(tp, s) > s}
    if not wanted:
        return []
    consumer = Consumer(
        get_settings().kafka_config(**{"group.id": f"probe-{uuid.uuid4()}", "enable.auto.commit": False})
    )
    try:
        consumer.assign([TopicPartition(tp, p, s) for (tp, p), (s, _) in wanted.items()])
        got: list[Message] = []
        remaining = sum(e - s for s, e in wanted.values())
        deadline = time.monotonic() + timeout
        while remaining > 0 and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    continue
                key = (msg.topic(), msg.partition())
                if msg.offset() < wanted[key][1]:
                    got.append(msg)
                    remaining -= 1
        if remaining > 0:
            raise AssertionError(f"{remaining} records not readable within {timeout} s")
        return got
    finally:
        consumer.close()


class TopicProbe:
    """Marks the topics' ends now; `records()` returns what was appended since."""

    def __init__(self, topics: Iterable[str] | None = None) -> None:
        self.topics = list(topics or [topic.name for topic in t.TOPICS])
        self.start = high_watermarks(self.topics)

    def records(self, topic: str | None = None) -> list[Message]:
        end = high_watermarks(self.topics)
        msgs = read_range(self.start, end)
        return [m for m in msgs if topic is None or m.topic() == topic]


def wait_for(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.2, what: str = "condition"
) -> T:
    """Poll until `predicate()` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def produce(
    topic: str,
    value: bytes,
    key: bytes | None = None,
    headers: list[tuple[str, Any]] | None = None,
    partition: int | None = None,
) -> Message:
    """Produce one record and wait for its acknowledgement."""
    prod = gk.producer()
    return gk.produce_all(prod, [(topic, key, value, headers or [], partition)])[0]


# --- plates and consumer groups ------------------------------------------------------------------

CONSONANTS = "BCDFGHJKLPRSTVWXYZ"


def new_plate(rng: random.Random | None = None) -> str:
    """A random new-format plate (four consonants, two digits): in practice, one no other test uses."""
    rng = rng or random.Random()
    return "".join(rng.choice(CONSONANTS) for _ in range(4)) + f"{rng.randrange(100):02d}"


def commit_at_end(group: str, topics: Iterable[str] = (t.SALES.name,)) -> dict[tuple[str, int], int]:
    """Commit `group`'s offsets at the current end of `topics`, so it reads only what follows."""
    ends = high_watermarks(topics)
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(tp, p, o) for (tp, p), o in ends.items()])
    admin = gk.admin()  # kept alive until the futures resolve
    for future in admin.alter_consumer_group_offsets([request]).values():
        future.result(timeout=60)
    return ends


def caught_up(group: str, topics: Iterable[str], timeout: float = 300) -> float:
    """Wait until `group` has committed every record now on `topics`; returns the seconds it took."""
    ends = high_watermarks(topics)
    started = time.monotonic()
    wait_for(
        # A partition never written to has nothing to commit: a consumer commits no offset for it.
        lambda: all(end == 0 or committed(group).get(tp, -1) >= end for tp, end in ends.items()),
        timeout=timeout,
        interval=0.5,
        what=f"{group} to commit up to {sum(ends.values())} records' ends",
    )
    return time.monotonic() - started


def committed(group: str) -> dict[tuple[str, int], int]:
    """`group`'s committed offsets."""
    admin = gk.admin()
    [future] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    return {(p.topic, p.partition): p.offset for p in future.result(timeout=60).topic_partitions}


# --- HTTP and Prometheus text ----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """An HTTP answer; status 0 when there was no answer at all (refused, reset, timed out)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None, timeout: float = 15
) -> Answer:
    """One request on a fresh connection; a JSON `body` is sent as application/json."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError(f"tests talk to loopback servers only, not {url}")
    request = urllib.request.Request(url, data, headers, method=method)  # noqa: S310 - loopback http only
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())
    except OSError:
        return Answer(0, {}, b"")


def staff_auth() -> dict[str, str]:
    """The staff login's Authorization header (the test stack's STAFF_PASSWORD): the live
    service's map and /v1/live need it (consumers/locations/web.py)."""
    from gremio.credentials import staff_basic_auth

    return staff_basic_auth(get_settings())


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples whose labels include `labels`; None when there are none."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total, found = total + float(value), True
    return total if found else None


# --- real processes: the consumer services and the API under gunicorn ---------------------------


class ServiceProcess:
    """`python -m MODULE` as a real child process in its own session, logging to a file."""

    name = "service"

    def __init__(self, module: str, log: Path, metrics_port: int, env: Mapping[str, str]) -> None:
        self.log = log
        self.metrics_port = metrics_port
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=REPO_ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float | None:
        """A metric's value summed over matching labels; None when it has no samples or no answer."""
        answer = http("GET", f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        return metric_value(answer.body.decode(), name, **labels) if answer.status == 200 else None

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit; its log:\n{self.output()[-5000:]}") from None

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, and its exit status once it has finished."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class StockProcess(ServiceProcess):
    """`python -m consumers.stock` in consumer group `group`, /metrics on a free port."""

    name = "stock service"

    def __init__(self, log: Path, group: str, **env: str) -> None:
        port = free_port()
        settings = {
            "DATABASE_URL": get_settings().role_db_url("stock"),  # its own role, as in make up
            "STOCK_GROUP_ID": group,
            "STOCK_METRICS_PORT": str(port),
            "STOCK_SESSION_TIMEOUT_SECONDS": "6",
        }
        super().__init__("consumers.stock", log, port, {**settings, **env})


class LocationsProcess(ServiceProcess):
    """`python -m consumers.locations` in consumer group `group`, /v1/live on a free port."""

    name = "location service"

    def __init__(self, log: Path, group: str, **env: str) -> None:
        port = free_port()
        settings = {
            "DATABASE_URL": get_settings().role_db_url("locations"),  # its own role, as in make up
            "LIVE_GROUP_ID": group, "LIVE_PORT": str(port), "LIVE_SESSION_TIMEOUT_SECONDS": "6",
        }  # fmt: skip
        super().__init__("consumers.locations", log, port, {**settings, **env})

    def live(self) -> dict[str, list[dict[str, Any]]] | None:
        """GET /v1/live, or None while the service does not answer."""
        url = f"http://127.0.0.1:{self.metrics_port}/v1/live"
        answer = http("GET", url, headers=staff_auth(), timeout=10)
        return answer.json() if answer.status == 200 else None

    def carts(self) -> dict[str, dict[str, Any]]:
        return {cart["plate"]: cart for cart in (self.live() or {"carts": []})["carts"]}


class Services:
    """The service processes one test started, numbered in its folder; `kill_all()` at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[ServiceProcess] = []

    def stock(self, group: str, **env: str) -> StockProcess:
        return self._add(StockProcess(self.folder / f"stock-{len(self.started)}.log", group, **env))

    def locations(self, group: str, **env: str) -> LocationsProcess:
        return self._add(LocationsProcess(self.folder / f"locations-{len(self.started)}.log", group, **env))

    def _add(self, process: ServiceProcess) -> Any:
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()


GUNICORN = Path(sys.executable).with_name("gunicorn")


class ApiServer:
    """The ingest API as `make up` runs it: gunicorn with the repo's config, on a free port.

    `env` overrides settings (API_WORKERS, DELIVERY_TIMEOUT_SECONDS, RATE_LIMIT_REPORTS...).
    Use it as a context manager: whatever is still running at the end is killed.
    """

    def __init__(self, log: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        settings = {
            "API_PORT": str(self.port),
            "BIND_HOST": "127.0.0.1",
            "API_WORKERS": "2",
            "API_THREADS": "4",
        }
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(GUNICORN), "-c", "ingest_api/gunicorn_conf.py", "ingest_api:create_app()"],
                cwd=REPO_ROOT, env={**os.environ, **settings, **env}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> ApiServer:
        """Until /readyz says 200; fails with gunicorn's log if it exits instead."""
        wait_for(
            lambda: self.get("/readyz").status == 200 or self.proc.poll() is not None,
            timeout=timeout,
            what="gunicorn's /readyz",
        )
        assert self.proc.poll() is None, self.output()[-5000:]
        return self

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Answer:
        return http("GET", self.base + path, headers=headers, timeout=5)

    def post(self, path: str, body: Any, headers: Mapping[str, str] | None = None) -> Answer:
        return http("POST", self.base + path, body, headers)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (in-flight requests finish, producers flush) and gunicorn's exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# --- approved members ----------------------------------------------------------------------------


class Members:
    """Plates a test registers as approved members (master "Maestra PLATE"); `remove()` at the end."""

    def __init__(self) -> None:
        self.plates: list[str] = []
        self._rng = random.Random()

    def __call__(self, *plates: str) -> None:
        from stdnum.cl import rut as stdnum_rut

        from gremio import db

        with db.connect() as conn:
            for plate in plates:
                body = str(self._rng.randrange(10_000_000, 25_000_000))
                rut = f"{body}-{stdnum_rut.calc_check_digit(body)}"
                conn.execute(
                    "insert into members (rut, first_name, last_name, email, plate) values (%s, %s, %s, %s, %s)",
                    (rut, "Maestra", plate, f"{plate.lower()}@example.cl", plate),
                )
                self.plates.append(plate)

    def remove(self) -> None:
        from gremio import db

        with db.connect() as conn:
            conn.execute("delete from members where plate = any(%s)", (self.plates,))


def routed(
    record: Any, locations: str = t.LOCATIONS.name, sales: str = t.SALES.name
) -> tuple[str, bytes, bytes, list[tuple[str, bytes]], int | None]:
    """Where the contract puts a Sale, FugitiveReport or CartPosition, as the API produces it:
    (topic, key, value, headers, partition) for `gk.produce_all`."""
    from gremio import records as r

    headers = [("type", record.type_name.encode())]
    if isinstance(record, r.Sale):
        return (sales, record.plate.encode(), record.to_bytes(), headers, None)
    if isinstance(record, r.FugitiveReport):
        return (locations, str(record.id).encode(), record.to_bytes(), headers, t.FUGITIVE_PARTITION)
    partition = t.position_partition(record.plate, t.LOCATIONS.partitions)
    return (locations, record.plate.encode(), record.to_bytes(), headers, partition)


def assignments(group: str) -> list[set[tuple[str, int]]]:
    """The (topic, partition) sets the group's members hold now, one set per member (poll it)."""
    admin = gk.admin()  # kept alive until the future resolves
    [future] = admin.describe_consumer_groups([group]).values()
    try:
        members = future.result(timeout=60).members
    except KafkaException as exc:
        if exc.args[0].retriable() or exc.args[0].code() == KafkaError.COORDINATOR_LOAD_IN_PROGRESS:
            return []  # a fresh broker is still loading its group coordinator: ask again
        raise
    return [{(p.topic, p.partition) for p in m.assignment.topic_partitions} for m in members]


# --- PostgreSQL and Airflow, seen from a fault test --------------------------------------------------


def waits_on_lock(application_name: str) -> bool:
    """Whether a session of that name (the drain's is "drain TOPIC") is waiting for a lock now.

    From pg_locks: pg_stat_activity hides another role's wait events (the drain connects as
    gremio_airflow, the test as the owner), but not its application_name or its locks."""
    from gremio import db

    with db.connect() as conn:
        return bool(
            conn.execute(
                "select 1 from pg_stat_activity a join pg_locks l on l.pid = a.pid"
                " where a.application_name = %s and not l.granted",
                (application_name,),
            ).fetchone()
        )


def task_result(dag_id: str, run_id: str, task_id: str) -> Any:
    """What a task of a run returned (its `return_value` XCom), decoded."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
        )
    return json.loads(value) if isinstance(value, str) else value


def task_tries(dag_id: str, run_id: str, task_id: str) -> list[tuple[int, str]]:
    """(try number, state) of each try of a task in a run: the archived ones, then the last."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session

    where = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id}
    with create_session() as session:
        history = session.query(TaskInstanceHistory.try_number, TaskInstanceHistory.state).filter_by(**where)
        final = session.query(TaskInstance.try_number, TaskInstance.state).filter_by(**where).one()
        return [
            *((n, str(s)) for n, s in history.order_by(TaskInstanceHistory.try_number)),
            (final[0], str(final[1])),
        ]


def make_topic(name: str, partitions: int) -> str:
    """A topic of this test's own (its records' key is a plate); returns its name."""
    gk.ensure_topics([t.Topic(name, partitions, "plate", "Sale", "test")])
    return name


def make_table(name: str, like: str) -> str:
    """A table of this test's own, shaped like `like` (keys, defaults, indexes), that the drain's
    role (gremio_airflow) may load as it loads `like`; returns its name."""
    from psycopg import sql

    from gremio import db

    with db.connect() as conn:
        conn.execute(
            sql.SQL("create table {} (like {} including all)").format(
                sql.Identifier(name), sql.Identifier(like)
            )
        )
        conn.execute(sql.SQL("grant select, insert on {} to gremio_airflow").format(sql.Identifier(name)))
    return name


# --- what tests measured ----------------------------------------------------------------------------


class Figures:
    """What a suite's tests measured (counts, seconds): test-artifacts/<kind>/<test>.json, and a
    "<kind> figures" section at the end of the pytest run (tests/reliability, tests/cluster)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.folder = REPO_ROOT / "test-artifacts" / kind
        self.noted: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def record(self, test_name: str) -> Iterator[dict[str, Any]]:
        noted: dict[str, Any] = {}
        yield noted
        if noted:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / (re.sub(r"[^\w.\[\]-]+", "_", test_name) + ".json")
            path.write_text(json.dumps(noted, indent=2, default=str) + "\n")
            self.noted[test_name] = noted

    def summary(self, terminalreporter: Any) -> None:
        if self.noted:
            terminalreporter.section(f"{self.kind} figures")
            for name, noted in self.noted.items():
                terminalreporter.write_line(f"{name}: {json.dumps(noted, default=str)}")


# --- nginx in front of API instances ---------------------------------------------------------------


class Nginx:
    """Debian's nginx as gremio/stack/nginx.py configures it, on a free loopback port, in front
    of `upstream_ports` (ApiServer ports). Use it as a context manager: stopped at the end."""

    def __init__(self, folder: Path, upstream_ports: Iterable[int]) -> None:
        from gremio.stack import nginx
        from gremio.stack.testing import Server

        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        nginx.write_config(folder, self.port, list(upstream_ports))
        self.server = Server("nginx", nginx.command(folder), folder / "logs" / "nginx.out")

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(signal.SIGTERM, timeout=10)

    def start(self) -> Nginx:
        from gremio.stack.system import wait_for_port

        self.server.start()
        assert wait_for_port(self.port, 30), self.output()
        return self

    def output(self) -> str:
        """What nginx said: its stdout/stderr and its error log."""
        return "\n".join(
            path.read_text(errors="replace")
            for path in (self.server.log, self.folder / "logs" / "error.log")
            if path.exists()
        )

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Answer:
        return http("GET", self.base + path, headers=headers, timeout=10)

    def post(self, path: str, body: Any, headers: Mapping[str, str] | None = None) -> Answer:
        return http("POST", self.base + path, body, headers)
