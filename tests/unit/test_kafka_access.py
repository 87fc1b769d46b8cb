"""The Kafka principals' declaration, the clients' SASL settings and the compose broker's file."""

from __future__ import annotations

import json
import re

import pytest
from confluent_kafka.admin import AclOperation, ResourceType

from gremio import kafka_access
from gremio import topics as t
from gremio.credentials import SECRETS
from gremio.settings import REPO_ROOT, Settings, SettingsError
from gremio.stack.kafka_broker import COMPOSE_PROPERTIES, KafkaBroker, compose_server_properties

PASSWORD = "p" * 40  # pragma: allowlist secret


def _settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


def test_the_compose_broker_runs_what_the_acl_test_runs():
    assert COMPOSE_PROPERTIES.read_text() == compose_server_properties(), (
        "deploy/kafka/server.properties is stale: .venv/bin/python -m gremio.stack.kafka_broker"
        " > deploy/kafka/server.properties"
    )


def test_the_sasl_broker_has_no_anonymous_door(tmp_path):
    props = KafkaBroker(tmp_path, 1, 2, tmp_path, sasl=True).server_properties().splitlines()
    assert "allow.everyone.if.no.acl.found=false" in props
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in props
    assert "super.users=User:admin" in props
    protocol_map = next(line for line in props if line.startswith("listener.security.protocol.map="))
    assert ":PLAINTEXT" not in protocol_map  # every listener authenticates
    assert not any("password=" in line and "${env:" not in line for line in props)  # no secret in the file


def test_the_default_broker_stays_plaintext(tmp_path):
    props = KafkaBroker(tmp_path, 1, 2, tmp_path).server_properties()
    assert "listeners=PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2" in props
    assert "sasl" not in props and "authorizer" not in props


def test_plaintext_clients_carry_no_login():
    assert _settings(kafka_bootstrap_servers="b:1").kafka_config() == {"bootstrap.servers": "b:1"}


def test_sasl_clients_log_in_everywhere():
    s = _settings(
        kafka_bootstrap_servers="b:1",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="stock",
        kafka_sasl_password=PASSWORD,
        database_url="postgresql://u:p@db/g",
    )
    login = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "stock",
        "sasl.password": PASSWORD,
    }
    assert s.kafka_config(**{"group.id": "g"}) == {"bootstrap.servers": "b:1", **login, "group.id": "g"}
    conns = s.airflow_connections()
    for name in ("AIRFLOW_CONN_KAFKA_DEFAULT", "AIRFLOW_CONN_KAFKA_MEMBERS_WATCH"):
        assert login.items() <= json.loads(conns[name])["extra"].items()


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"kafka_sasl_password": PASSWORD}, "KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_username": "api"}, "KAFKA_SASL_PASSWORD"),
    ],
)
def test_a_sasl_client_without_its_login_stops_naming_the_setting(values, named):
    s = _settings(kafka_security_protocol="SASL_PLAINTEXT", **values)
    with pytest.raises(SettingsError, match=named):
        s.kafka_config()


def _grants(name: str) -> set[tuple[str, str, str]]:
    (principal,) = [p for p in kafka_access.principals(_settings()) if p.name == name]
    return {(g.operation.name, g.resource.name, g.name) for g in principal.grants}


def test_the_api_reads_only_the_revocations_and_writes_what_it_accepts():
    api = _grants("api")
    assert {g for g in api if g[0] != "WRITE"} == {
        ("READ", "TOPIC", "cart_revocations"),
        # Its revocation readers' coordinator lookup, without joining or committing.
        ("DESCRIBE", "GROUP", kafka_access.API_REVOCATIONS_GROUP_PREFIX),
    }
    source = (REPO_ROOT / "ingest_api" / "revocations.py").read_text()
    assert f'f"{kafka_access.API_REVOCATIONS_GROUP_PREFIX}' in source
    assert {g[2] for g in api if g[0] == "WRITE"} == {"members", "sales", "locations", "deadletter"}


def test_only_the_api_writes_the_intake_topics_and_nobody_but_admin_writes_revocations():
    for principal in kafka_access.principals(_settings()):
        written = {g.name for g in principal.grants if g.operation == AclOperation.WRITE}
        if principal.name != "api":
            assert not written & {"members", "sales", "locations"}, principal.name
        assert "cart_revocations" not in written


def test_every_grant_names_a_declared_topic_or_a_group():
    for principal in kafka_access.principals(_settings()):
        for grant in principal.grants:
            assert grant.resource in (ResourceType.TOPIC, ResourceType.GROUP)
            if grant.resource == ResourceType.TOPIC:
                assert grant.name in t.BY_NAME


def test_the_services_groups_follow_their_settings():
    s = _settings(stock_group_id="stock-x", live_group_id="live-x")
    groups = {
        p.name: {g.name for g in p.grants if g.resource == ResourceType.GROUP}
        for p in kafka_access.principals(s)
    }
    assert groups == {
        "api": {kafka_access.API_REVOCATIONS_GROUP_PREFIX},
        "stock": {"stock-x"},
        "locations": {"live-x"},
        "airflow": {"airflow-"},
        "monitor": {"stock-x", "live-x", "airflow-"},  # DESCRIBE only: offsets, never a join
    }


def test_the_monitor_only_describes_and_writes_alerts():
    [monitor] = [p for p in kafka_access.principals(_settings()) if p.name == "monitor"]
    operations = {(g.operation, g.resource) for g in monitor.grants}
    assert operations == {
        (AclOperation.DESCRIBE, ResourceType.TOPIC),
        (AclOperation.DESCRIBE, ResourceType.GROUP),
        (AclOperation.WRITE, ResourceType.TOPIC),
    }
    assert {g.name for g in monitor.grants if g.operation == AclOperation.WRITE} == {"alerts"}


def test_every_airflow_consumer_group_has_the_airflow_prefix():
    found = set()
    for path in [*(REPO_ROOT / "dags").glob("*.py"), REPO_ROOT / "gremio" / "settings.py"]:
        # A task group's group_id is Airflow's, not Kafka's.
        found |= set(re.findall(r'(?<!task_group\()group[._]id["=:\s]+"([^"]+)"', path.read_text()))
    found -= {"stock-replenishment", "location-tracker"}  # the settings' service defaults
    assert found, "no group ids found: did the DAGs change shape?"
    assert all(g.startswith(kafka_access.AIRFLOW_GROUP_PREFIX) for g in found), found


def test_every_principal_password_is_a_setting_and_generated():
    generated = {s.name for s in SECRETS}
    for principal in kafka_access.principals(_settings()):
        assert principal.password_setting in Settings.model_fields
        assert principal.password_setting.upper() in generated
    assert "KAFKA_ADMIN_PASSWORD" in generated


def test_airflow_writes_alerts_and_deadletter_only():
    """members_premium's sweep raises `premium_pending` alerts; nothing else of airflow's writes."""
    [airflow] = [p for p in kafka_access.principals(_settings()) if p.name == "airflow"]
    assert {g.name for g in airflow.grants if g.operation == AclOperation.WRITE} == {"alerts", "deadletter"}
    assert {
        g.name
        for g in airflow.grants
        if g.operation == AclOperation.READ and g.resource == ResourceType.TOPIC
    } == {
        "sales",
        "members",
    }
