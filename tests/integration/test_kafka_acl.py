"""The deployment's Kafka security, on a broker from the same jars with the same settings.

A SASL broker (KafkaBroker in SASL mode: the properties docker compose mounts, see
tests/unit/test_kafka_access.py) on free ports, set up as compose's gremio-init does it
(`gremio topics` and `gremio kafka-access`, as admin). Then, with real confluent-kafka clients
configured by the settings as each service is: an anonymous or wrongly logged-in client is
refused; the API cannot read `members`; stock cannot produce to `members`; and each principal
does its own job with its own login and consumer group.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from gremio import kafka as gk
from gremio import kafka_access
from gremio import topics as t
from gremio.settings import REPO_ROOT, Settings
from gremio.stack.kafka_broker import KafkaBroker, ensure_jars
from gremio.stack.system import free_port, wait_for_port

SERVICES = ("api", "stock", "locations", "airflow", "monitor")


class SaslBroker:
    def __init__(self, root: Path) -> None:
        self.admin_password = secrets.token_urlsafe(32)
        self.passwords = {name: secrets.token_urlsafe(32) for name in SERVICES}
        self.broker = KafkaBroker(
            root / "kafka",
            free_port(),
            free_port(),
            ensure_jars(REPO_ROOT / ".local"),
            sasl=True,
            admin_password=self.admin_password,
        )
        self.log = root / "kafka.log"
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers

    def env(self, user: str = "admin") -> dict[str, str]:
        """The settings a process logged in as `user` gets (compose's, on this broker)."""
        password = self.admin_password if user == "admin" else self.passwords[user]
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": password,
        }

    def settings(self, user: str = "admin") -> Settings:
        passwords = {f"kafka_{name}_password": pw for name, pw in self.passwords.items()}
        return Settings(
            _env_file=None,
            **{k.lower(): v for k, v in self.env(user).items()},
            kafka_admin_password=self.admin_password,
            **passwords,
        )

    def start(self) -> None:
        self.broker.prepare()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.broker.command(),
                env={**os.environ, **self.broker.env()},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for_port(self.broker.port, 90):
            raise RuntimeError(f"the SASL broker did not open its port; see {self.log}")
        gk.wait_for_broker(self.settings(), timeout=60)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # throwaway data: no clean shutdown needed
            self.proc.wait(10)


@pytest.fixture(scope="module")
def sasl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    broker = SaslBroker(tmp_path_factory.mktemp("sasl-kafka"))
    try:
        broker.start()
        gk.ensure_topics(settings=broker.settings())
        # `gremio kafka-access` as compose's gremio-init runs it: logged in as admin, with the
        # services' passwords in its environment.
        env = {
            **os.environ,
            **broker.env("admin"),
            **{f"KAFKA_{name.upper()}_PASSWORD": pw for name, pw in broker.passwords.items()},
        }
        done = subprocess.run(
            [sys.executable, "-m", "gremio.cli", "kafka-access"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "5 SCRAM user(s) set" in done.stdout
        yield broker
    finally:
        broker.stop()


# --- helpers -------------------------------------------------------------------------------------


def produce(settings: Settings, topic: str, count: int = 1, partition: int | None = None) -> list:
    """Produce with the services' own idempotent acks=all producer; the delivered messages."""
    records = [
        gk.Outgoing(topic, f"K{i}".encode(), json.dumps({"n": i}).encode(), [("type", b"Probe")], partition)
        for i in range(count)
    ]
    prod = gk.producer(settings, **{"message.timeout.ms": 10_000})
    return gk.produce_all(prod, records, timeout=20)


def consume(config: dict, topics: list[str], count: int, timeout: float = 30.0) -> list:
    """Subscribe in the config's group, read `count` records and commit them; errors raise."""
    consumer = Consumer({**config, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    got = []
    try:
        consumer.subscribe(topics)
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(msg)
        assert len(got) >= count, f"read {len(got)} of {count} from {topics}"
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def first_error(config: dict, partitions: list[TopicPartition], timeout: float = 15.0) -> KafkaError:
    """Read the assigned partitions until the first error about the topic, which is returned.

    The client also looks up its group's coordinator, which a principal without rights on
    that group is refused too (GROUP_AUTHORIZATION_FAILED), in whichever order the broker
    answers: that refusal is passed over, to wait for the fetch's own.
    """
    consumer = Consumer({**config, "enable.auto.commit": False})
    try:
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error():
                if msg.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    continue
                return msg.error()
            assert msg is None, "a record was read"
        raise AssertionError("no error within the timeout")
    finally:
        consumer.close()


# --- refused ---------------------------------------------------------------------------------------


def test_an_anonymous_client_is_refused(sasl):
    client = AdminClient({"bootstrap.servers": sasl.bootstrap_servers})
    with pytest.raises(KafkaException):
        client.list_topics(timeout=5)


@pytest.mark.parametrize("user", ["api", "nobody"])
def test_a_wrong_password_is_refused(sasl, user):
    errors: list[KafkaError] = []
    config = {
        "bootstrap.servers": sasl.bootstrap_servers,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": secrets.token_urlsafe(32),
        "error_cb": errors.append,
    }
    client = AdminClient(config)
    with pytest.raises(KafkaException):
        client.list_topics(timeout=2)
    client.poll(1)  # serves error_cb
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_the_api_cannot_read_members(sasl):
    produce(sasl.settings("api"), t.MEMBERS.name)  # something to read, were it allowed
    api = sasl.settings("api")
    err = first_error(api.kafka_config(**{"group.id": "api-probe"}), [TopicPartition(t.MEMBERS.name, 0, 0)])
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Nor through a consumer group.
    with pytest.raises(KafkaException) as refused:
        consume(api.kafka_config(**{"group.id": "api-members"}), [t.MEMBERS.name], 1, timeout=10)
    assert refused.value.args[0].code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    )


def test_the_stock_principal_cannot_produce_to_members(sasl):
    with pytest.raises(KafkaException) as refused:
        produce(sasl.settings("stock"), t.MEMBERS.name)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_service_cannot_use_another_services_group(sasl):
    produce(sasl.settings("api"), t.SALES.name)
    airflow = sasl.settings("airflow")
    with pytest.raises(KafkaException) as refused:
        consume(airflow.kafka_config(**{"group.id": airflow.stock_group_id}), [t.SALES.name], 1, timeout=10)
    assert refused.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED


# --- allowed: each principal's own job ----------------------------------------------------------


def test_the_api_produces_what_it_accepts_and_reads_the_revocations(sasl):
    api = sasl.settings("api")
    for topic in (t.MEMBERS, t.SALES, t.LOCATIONS, t.DEADLETTER):
        assert len(produce(api, topic.name)) == 1, topic.name
    # Its readiness check: the metadata names the topics it produces to.
    meta = gk.producer(api).list_topics(timeout=10).topics
    assert {t.MEMBERS.name, t.SALES.name, t.LOCATIONS.name} <= set(meta)
    # `gremio token revoke` writes as admin; every API worker reads by assignment, no group.
    plate = f"P{uuid.uuid4().hex[:6].upper()}"
    produce_key(sasl.settings("admin"), t.CART_REVOCATIONS.name, plate)
    group = f"{kafka_access.API_REVOCATIONS_GROUP_PREFIX}{uuid.uuid4().hex}"  # as ingest_api/revocations.py
    consumer = Consumer(api.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        consumer.assign(
            [TopicPartition(t.CART_REVOCATIONS.name, p, 0) for p in range(t.CART_REVOCATIONS.partitions)]
        )
        keys, deadline = set(), time.monotonic() + 20
        while plate.encode() not in keys and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert not msg.error(), msg.error()
                keys.add(msg.key())
        assert plate.encode() in keys
    finally:
        consumer.close()
    with pytest.raises(KafkaException):  # and cannot revoke by itself
        produce(api, t.CART_REVOCATIONS.name)


def produce_key(settings: Settings, topic: str, key: str) -> None:
    gk.produce_all(gk.producer(settings), [gk.Outgoing(topic, key.encode(), b"{}", [])], timeout=20)


def test_stock_reads_sales_in_its_group_and_writes_orders_and_dead_letters(sasl):
    produce(sasl.settings("api"), t.SALES.name)
    stock = sasl.settings("stock")
    # The runner's consumer settings: its group, manual commits.
    assert consume(stock.kafka_config(**{"group.id": stock.stock_group_id}), [t.SALES.name], 1)
    assert produce(stock, t.REPLENISHMENTS.name)
    assert produce(stock, t.DEADLETTER.name)


def test_locations_reads_positions_and_sales_and_writes_alerts(sasl):
    api = sasl.settings("api")
    produce(api, t.LOCATIONS.name, partition=1)
    produce(api, t.SALES.name)
    live = sasl.settings("locations")
    config = live.kafka_config(**{"group.id": live.live_group_id})
    got = consume(config, [t.LOCATIONS.name, t.SALES.name], 2)
    # Its rebuild on assignment: committed offsets and offsets by time.
    consumer = Consumer({**config, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(t.LOCATIONS.name, p, int(time.time() * 1000) - 60_000) for p in range(4)]
        assert all(p.error is None for p in consumer.offsets_for_times(parts, timeout=15))
        read = [TopicPartition(m.topic(), m.partition()) for m in got]
        assert all(p.offset >= 1 for p in consumer.committed(read, timeout=15))
    finally:
        consumer.close()
    assert produce(live, t.ALERTS.name)
    assert produce(live, t.DEADLETTER.name)


def test_airflow_drains_and_watches_with_its_connections(sasl):
    api = sasl.settings("api")
    produce(api, t.SALES.name)
    produce(api, t.MEMBERS.name, partition=t.MEMBERS_PREMIUM_PARTITION)
    conns = sasl.settings("airflow").airflow_connections()
    drain = json.loads(conns["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"]
    watch = json.loads(conns["AIRFLOW_CONN_KAFKA_MEMBERS_WATCH"])["extra"]
    assert drain["sasl.username"] == "airflow"
    # The drains, each in its own group (dags/), and the premium watcher in the connection's.
    assert consume({**drain, "group.id": "airflow-sales-daily"}, [t.SALES.name], 1)
    assert consume({**drain, "group.id": "airflow-members-monthly"}, [t.MEMBERS.name], 1)
    assert consume(watch, [t.MEMBERS.name], 1)
    assert produce(sasl.settings("airflow"), t.DEADLETTER.name)
    with pytest.raises(KafkaException):
        produce(sasl.settings("airflow"), t.SALES.name)


def test_the_monitor_sees_every_groups_lag_and_age_yet_reads_no_record(sasl):
    from gremio.monitor import Monitor

    api, stock = sasl.settings("api"), sasl.settings("stock")
    produce(api, t.SALES.name, count=3, partition=0)
    consume(stock.kafka_config(**{"group.id": stock.stock_group_id}), [t.SALES.name], 1)
    monitor_login = sasl.settings("monitor")
    monitor = Monitor(monitor_login)
    snap = monitor.refresh()
    assert set(monitor.errors) <= {"airflow", "reports"}, monitor.errors  # no Airflow here
    groups = {row.group for row in snap.lags}
    assert {
        stock.stock_group_id,
        stock.live_group_id,
        "airflow-sales-daily",
        "airflow-members-premium",
    } <= groups
    assert any(row.lag and row.age_seconds > 0 for row in snap.lags), snap.lags  # ages by offsets-by-time
    assert snap.end_offsets[(t.SALES.name, 0)] >= 3 and snap.brokers == 1
    # DESCRIBE only: not one record of sales (nor a member's RUT) can it read.
    err = first_error(
        monitor_login.kafka_config(**{"group.id": "monitor-probe"}), [TopicPartition(t.SALES.name, 0, 0)]
    )
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce(monitor_login, t.ALERTS.name)  # its ops alerts
    with pytest.raises(KafkaException):
        produce(monitor_login, t.SALES.name)


def test_kafka_access_is_idempotent_and_prunes_undeclared_acls(sasl):
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    admin = sasl.settings("admin")
    extra = AclBinding(
        ResourceType.TOPIC, t.MEMBERS.name, ResourcePatternType.LITERAL, "User:stock", "*",
        AclOperation.READ, AclPermissionType.ALLOW,
    )  # fmt: skip
    client = kafka_access.admin_client(admin)
    for future in client.create_acls([extra]).values():
        future.result()
    assert kafka_access.apply(admin) == {"users": 5, "created": 0, "deleted": 1}
    assert kafka_access.apply(admin) == {"users": 5, "created": 0, "deleted": 0}
    # Passwords set again are the same: the services still log in.
    assert produce(sasl.settings("stock"), t.REPLENISHMENTS.name)
