"""docker-compose.yaml, checked by parsing it: no Docker engine runs on the dev machines.

Service names, ports, images and environment names are cross-checked against the settings
module, the Kafka pom, the pinned Airflow version and the local stack's programs.
"""

from __future__ import annotations

import re

import pytest
import yaml

from gremio.settings import REPO_ROOT, Settings, env_names

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
# The defaults as written in the settings module, whatever this process's environment says.
DEFAULTS = Settings.model_construct(**{n: f.default for n, f in Settings.model_fields.items()})
GREMIO_SERVICES = ["gremio-init", "api", "stock", "locations", "simulator"]
AIRFLOW_SERVICES = [
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
]


def _host_ports(service: str) -> set[int]:
    # "8001:8001", or "8001-8005:8001" for a service that scales out: the first host port.
    return {int(str(p).split(":")[0].split("-")[0]) for p in SERVICES[service].get("ports", [])}


def _default(value: str) -> str:
    """What compose makes of "${VAR:-default}" when VAR is unset."""
    found = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return found.group(1) if found else value


def _pinned(requirement: str) -> str:
    text = (REPO_ROOT / "requirements.txt").read_text()
    return re.search(rf"^{re.escape(requirement)}==(\S+)", text, flags=re.M).group(1)


def test_every_part_of_the_platform_has_a_service():
    assert set(GREMIO_SERVICES + AIRFLOW_SERVICES + ["kafka", "postgres"]) <= set(SERVICES)


def test_kafka_is_the_pom_version_in_kraft_mode_on_the_settings_port():
    pom = (REPO_ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    kafka = SERVICES["kafka"]
    assert kafka["image"] == f"apache/kafka:{version}"
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert DEFAULTS.kafka_port in _host_ports("kafka")


def test_postgres_serves_the_settings_port_and_airflow_gets_its_database():
    assert DEFAULTS.postgres_port in _host_ports("postgres")
    mounts = " ".join(SERVICES["postgres"]["volumes"])
    assert "docker-entrypoint-initdb.d" in mounts


def test_airflow_is_the_pinned_version_with_dags_plugins_and_connections():
    dockerfile = (REPO_ROOT / "deploy" / "airflow" / "Dockerfile").read_text()
    assert f"apache/airflow:{_pinned('apache-airflow')}" in dockerfile
    for name in AIRFLOW_SERVICES:
        service = SERVICES[name]
        env = service["environment"]
        assert _default(env["AIRFLOW__CORE__EXECUTOR"]) == "LocalExecutor"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
        assert {"AIRFLOW_CONN_KAFKA_DEFAULT", "AIRFLOW_CONN_GREMIO_DB"} <= set(env)
        volumes = " ".join(service["volumes"])
        assert "./dags:/opt/airflow/dags" in volumes
        assert "./plugins:/opt/airflow/plugins" in volumes
    assert {"api-server", "scheduler", "dag-processor", "triggerer"} == {
        SERVICES[n]["command"][0] for n in AIRFLOW_SERVICES if n != "airflow-init"
    }
    assert DEFAULTS.airflow_port in _host_ports("airflow-apiserver")


@pytest.mark.parametrize("name", GREMIO_SERVICES + AIRFLOW_SERVICES)
def test_environment_names_are_the_settings_names(name):
    env = SERVICES[name]["environment"]
    unknown = {
        key for key in env if key not in env_names() and not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))
    }
    assert not unknown, f"{name} sets {sorted(unknown)}, which no setting reads"
    assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "CART_TOKEN_SECRET"} <= set(env)


def test_service_ports_are_the_settings_ports():
    assert DEFAULTS.api_port in _host_ports("api")
    assert DEFAULTS.live_port in _host_ports("locations")


def test_gremio_services_run_what_make_up_runs():
    from gremio.stack.local import programs

    local = {p.name: p.command for p in programs(DEFAULTS, None, None)}
    assert SERVICES["api"]["command"][1:] == [
        arg.replace(str(REPO_ROOT) + "/", "") for arg in local["api"][1:]
    ]
    assert SERVICES["stock"]["command"][1:] == local["stock"][1:]
    assert SERVICES["locations"]["command"][1:] == local["locations"][1:]


def test_consumers_scale_out_through_replicas():
    assert SERVICES["stock"]["deploy"]["replicas"] >= 2


def test_the_celery_profile_adds_a_queue_and_workers_that_share_the_airflow_setup():
    """`AIRFLOW_EXECUTOR=CeleryExecutor docker compose --profile celery up` (docs/SCALING.md)."""
    redis, worker = SERVICES["redis"], SERVICES["airflow-worker"]
    assert redis["profiles"] == ["celery"] and worker["profiles"] == ["celery"]
    assert worker["command"] == ["celery", "worker"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    env = worker["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert "@postgres:5432/airflow" in env["AIRFLOW__CELERY__RESULT_BACKEND"]
    # A worker runs the tasks, so it needs what the scheduler has: the same env, DAGs, plugins.
    assert env == SERVICES["airflow-scheduler"]["environment"]
    assert worker["volumes"] == SERVICES["airflow-scheduler"]["volumes"]
    assert worker["image"] == SERVICES["airflow-scheduler"]["image"]
    # The platform itself starts without the profile.
    unprofiled = [name for name, service in SERVICES.items() if "profiles" not in service]
    assert "redis" not in unprofiled and "airflow-worker" not in unprofiled
