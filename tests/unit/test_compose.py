"""docker-compose.yaml, checked by parsing it (tests/integration/test_compose_cli.py loads it
with Docker's own compose CLI as well).

Service names, ports, images and environment names are cross-checked against the settings
module, the Kafka pom, the pinned Airflow version and the local stack's programs; and the
file ships no secret: each is required (`${VAR:?...}`), each service gets only its own, and
only the API, the live map, Airflow, Prometheus and Grafana are published, on 127.0.0.1.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from gremio.credentials import SECRETS
from gremio.settings import REPO_ROOT, Settings, env_names

TEXT = (REPO_ROOT / "docker-compose.yaml").read_text()
COMPOSE = yaml.safe_load(TEXT)
SERVICES = COMPOSE["services"]
# The defaults as written in the settings module, whatever this process's environment says.
DEFAULTS = Settings.model_construct(**{n: f.default for n, f in Settings.model_fields.items()})
GREMIO_SERVICES = ["gremio-init", "ops", "api", "stock", "locations", "monitor", "simulator"]
OBSERVABILITY = ["prometheus", "alertmanager", "grafana"]
AIRFLOW_SERVICES = [
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
]
SECRET_NAMES = {s.name for s in SECRETS} | {"STAFF_PASSWORD_HASH"}  # that one: write_deployment_staff_login
# ${NAME}, ${NAME:-default}, ${NAME:?message}, ...
INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?+])([^}]*))?\}")
SECRETISH = re.compile(r"SECRET|PASSWORD(?!S_FILE)|_KEY$|HASH|TOKEN")
_AIRFLOW_KEYS = {"AIRFLOW_DB_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_SECRET_KEY", "AIRFLOW_FERNET_KEY"}
_AIRFLOW_LOGINS = {"PG_AIRFLOW_PASSWORD", "KAFKA_AIRFLOW_PASSWORD"}
# Least privilege: the secrets each service may hold, and no others (docs/SECURITY.md).
SECRETS_OF: dict[str, set[str]] = {
    "kafka": {"KAFKA_ADMIN_PASSWORD"},
    "postgres": {"POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD"},
    "redis": set(),
    # The one-shot set-up: owner and Kafka admin, giving every service role and principal its password.
    "gremio-init": {
        "POSTGRES_PASSWORD",
        "KAFKA_ADMIN_PASSWORD",
        "PG_STOCK_PASSWORD",
        "PG_LOCATIONS_PASSWORD",
        "PG_AIRFLOW_PASSWORD",
        "PG_MONITOR_PASSWORD",
        "KAFKA_API_PASSWORD",
        "KAFKA_STOCK_PASSWORD",
        "KAFKA_LOCATIONS_PASSWORD",
        "KAFKA_AIRFLOW_PASSWORD",
        "KAFKA_MONITOR_PASSWORD",
    },
    "ops": {"POSTGRES_PASSWORD", "KAFKA_ADMIN_PASSWORD", "CART_TOKEN_SECRET"},
    "api": {"CART_TOKEN_SECRET", "KAFKA_API_PASSWORD"},
    "stock": {"PG_STOCK_PASSWORD", "KAFKA_STOCK_PASSWORD"},
    "locations": {"PG_LOCATIONS_PASSWORD", "KAFKA_LOCATIONS_PASSWORD", "STAFF_PASSWORD_HASH"},
    "monitor": {
        "PG_MONITOR_PASSWORD",
        "KAFKA_MONITOR_PASSWORD",
        "ALERTMANAGER_WEBHOOK_TOKEN",
        "AIRFLOW_MONITOR_PASSWORD",
    },
    "simulator": {"CART_TOKEN_SECRET"},
    **dict.fromkeys([*AIRFLOW_SERVICES, "airflow-worker"], _AIRFLOW_KEYS | _AIRFLOW_LOGINS),
    # airflow-init writes the monitor's Airflow login into the passwords file.
    "airflow-init": _AIRFLOW_KEYS | _AIRFLOW_LOGINS | {"AIRFLOW_MONITOR_PASSWORD"},
    # Prometheus's and Alertmanager's secrets are compose secrets (files): SECRET_FILES_OF.
    "prometheus": set(),
    "alertmanager": set(),
    "grafana": {"GRAFANA_ADMIN_PASSWORD"},
}
# The compose secrets (files `gremio secrets` writes beside .env, mode 0600) each service mounts.
SECRET_FILES = {
    "staff_password": "./staff-password",
    "alertmanager_webhook_token": "./alertmanager-webhook-token",
}
SECRET_FILES_OF = {"prometheus": {"staff_password"}, "alertmanager": {"alertmanager_webhook_token"}}
# Each service's Kafka principal (gremio/kafka_access.py) and PostgreSQL role (sql/060_roles.sql).
KAFKA_USER_OF = {
    "gremio-init": "admin",
    "ops": "admin",
    "api": "api",
    "stock": "stock",
    "locations": "locations",
    "monitor": "monitor",
    **dict.fromkeys([*AIRFLOW_SERVICES, "airflow-worker"], "airflow"),
}
DB_ROLE_OF = {
    "gremio-init": "gremio",
    "ops": "gremio",
    "stock": "gremio_stock",
    "locations": "gremio_locations",
    "monitor": "gremio_monitor",
    **dict.fromkeys([*AIRFLOW_SERVICES, "airflow-worker"], "gremio_airflow"),
}
PUBLISHED = {"api", "locations", "airflow-apiserver", "prometheus", "grafana"}


def _host_ports(service: str) -> set[int]:
    # "127.0.0.1:8001:8001", or "127.0.0.1:8001-8005:8001" for a service that scales out: the
    # first host port.
    return {int(str(p).split(":")[-2].split("-")[0]) for p in SERVICES[service].get("ports", [])}


def _default(value: str) -> str:
    """What compose makes of "${VAR:-default}" when VAR is unset."""
    found = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return found.group(1) if found else value


def _required(name: str) -> str:
    return f"${{{name}:?run make secrets}}"


def _secrets_in(value: object) -> set[str]:
    return {m.group(1) for m in INTERPOLATION.finditer(json.dumps(value)) if m.group(1) in SECRET_NAMES}


def _pinned(requirement: str) -> str:
    text = (REPO_ROOT / "requirements.txt").read_text()
    return re.search(rf"^{re.escape(requirement)}==(\S+)", text, flags=re.M).group(1)


def test_every_part_of_the_platform_has_a_service():
    assert set(GREMIO_SERVICES + AIRFLOW_SERVICES + OBSERVABILITY + ["kafka", "postgres", "redis"]) <= set(
        SERVICES
    )


def test_kafka_is_the_pom_version_with_the_sasl_properties_and_no_published_port():
    pom = (REPO_ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    kafka = SERVICES["kafka"]
    assert kafka["image"] == f"apache/kafka:{version}"
    # The broker runs deploy/kafka/server.properties (SASL, ACLs: tests/unit/test_kafka_access.py).
    assert "./deploy/kafka/server.properties:/etc/gremio/kafka/server.properties:ro" in kafka["volumes"]
    assert "ports" not in kafka


def test_postgres_is_not_published_and_airflow_gets_its_database():
    assert "ports" not in SERVICES["postgres"]
    mounts = " ".join(SERVICES["postgres"]["volumes"])
    assert "docker-entrypoint-initdb.d" in mounts


def test_the_airflow_database_script_embeds_no_password():
    """init-airflow.sh gets the password from the environment, as a psql variable: never in the
    SQL text (a quote in it would break out of the literal), never written in the script."""
    script = (REPO_ROOT / "deploy" / "postgres" / "init-airflow.sh").read_text()
    assert "<<'SQL'" in script  # the shell expands nothing in the SQL
    assert "password :'airflow_password'" in script
    assert '-v airflow_password="$AIRFLOW_DB_PASSWORD"' in script
    assert "${AIRFLOW_DB_PASSWORD:?" in script
    assert not re.search(r"password\s+'", script, flags=re.I)


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


def test_airflow_ships_no_admin_password_and_keeps_the_generated_one_on_a_volume():
    env = SERVICES["airflow-apiserver"]["environment"]
    # "user:role": the simple auth manager generates the password and writes it to this file,
    # for each user missing from it (the monitor's viewer is there: airflow-init writes it).
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,monitor:viewer"
    assert env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False") == "False"
    passwords = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert passwords == "/opt/airflow/auth/passwords.json"
    assert "airflow-auth:/opt/airflow/auth" in SERVICES["airflow-apiserver"]["volumes"]
    assert "airflow-auth" in COMPOSE["volumes"]
    # The image makes the directory, so that the new volume is the airflow user's.
    dockerfile = (REPO_ROOT / "deploy" / "airflow" / "Dockerfile").read_text()
    assert "mkdir -p /opt/airflow/auth" in dockerfile


@pytest.mark.parametrize("name", GREMIO_SERVICES + AIRFLOW_SERVICES)
def test_environment_names_are_the_settings_names(name):
    env = SERVICES[name]["environment"]
    unknown = {
        key for key in env if key not in env_names() and not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))
    }
    assert not unknown, f"{name} sets {sorted(unknown)}, which no setting reads"


def test_every_secret_is_required_and_none_has_a_default():
    """`${VAR:?run make secrets}` for every secret, anywhere in the file (anchors too): compose
    stops with "required variable VAR is missing a value: run make secrets"."""
    found = list(INTERPOLATION.finditer(json.dumps(COMPOSE)))  # every value, anchors too; no comments
    secretish = [m for m in found if SECRETISH.search(m.group(1))]
    assert secretish
    for match in secretish:
        assert match.group(0) == _required(match.group(1)), (
            f"{match.group(0)} must be {_required(match.group(1))}"
        )
    # What the file requires is what `gremio secrets` writes, and all of it is used.
    required = {m.group(1) for m in found if m.group(2) == ":?"}
    assert required == SECRET_NAMES
    # Anything else has a default, and it is no secret.
    assert {m.group(1) for m in found if m.group(2) != ":?"} == {"AIRFLOW_EXECUTOR"}


def _secret_values(name: str, service: dict) -> list[tuple[str, str]]:
    """(where, value) of each place a password or key is given in a service's environment."""
    places = []
    for key, value in service.get("environment", {}).items():
        value = str(value)
        if SECRETISH.search(key):
            places.append((key, value))
        for password in re.findall(r"://[^:/@]+:(.*?)@", value):
            places.append((f"{key} (URL)", password))
        if value.startswith("{"):
            extra = json.loads(value).get("extra", {})
            if "sasl.password" in extra:
                places.append((f"{key} (sasl.password)", extra["sasl.password"]))
    return places


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_password_or_key_is_written_in_the_file(name):
    for where, value in _secret_values(name, SERVICES[name]):
        assert INTERPOLATION.fullmatch(value), f"{name}: {where} is written in the file"
        assert value == _required(INTERPOLATION.fullmatch(value).group(1))


def test_each_service_gets_only_the_secrets_it_needs():
    assert set(SECRETS_OF) == set(SERVICES), "a new service needs its entry in SECRETS_OF"
    for name, service in SERVICES.items():
        assert _secrets_in(service) == SECRETS_OF[name], name


def test_the_api_never_gets_a_database_login():
    """DESIGN §1: the API never reads or writes the database."""
    for name in ("api", "simulator"):
        env = SERVICES[name]["environment"]
        assert not {"DATABASE_URL", "POSTGRES_PASSWORD", "AIRFLOW_CONN_GREMIO_DB"} & set(env), name
    assert SERVICES["api"]["environment"]["RATE_LIMIT_STORAGE_URI"] == "redis://redis:6379/0"
    assert SERVICES["api"]["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_logs_in_to_kafka_as_its_own_principal(name):
    env = SERVICES[name].get("environment", {})
    user = KAFKA_USER_OF.get(name)
    if user is None:
        assert "KAFKA_SASL_USERNAME" not in env and "KAFKA_SASL_PASSWORD" not in env
        return
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["KAFKA_SASL_USERNAME"] == user
    assert env["KAFKA_SASL_PASSWORD"] == _required(f"KAFKA_{user.upper()}_PASSWORD")
    for key in [k for k in env if k.startswith("AIRFLOW_CONN_KAFKA")]:
        extra = json.loads(env[key])["extra"]
        assert extra["bootstrap.servers"] == "kafka:19092"
        assert extra["security.protocol"] == "SASL_PLAINTEXT"
        assert extra["sasl.mechanism"] == "SCRAM-SHA-512"
        assert (extra["sasl.username"], extra["sasl.password"]) == (user, _required("KAFKA_AIRFLOW_PASSWORD"))


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_connects_to_postgres_as_its_own_role(name):
    env = SERVICES[name].get("environment", {})
    urls = {k: v for k, v in env.items() if k in ("DATABASE_URL", "AIRFLOW_CONN_GREMIO_DB")}
    role = DB_ROLE_OF.get(name)
    if role is None:
        assert not urls
        return
    assert urls
    for value in urls.values():
        user = re.match(r"postgresql://([^:]+):", value).group(1)
        assert user == role
        password = (
            "POSTGRES_PASSWORD" if role == "gremio" else f"PG_{role.removeprefix('gremio_').upper()}_PASSWORD"
        )
        assert value == f"postgresql://{role}:{_required(password)}@postgres:5432/gremio"


def test_only_the_api_the_live_map_airflow_prometheus_and_grafana_are_published_and_on_loopback():
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    assert published == PUBLISHED
    assert not published & {"kafka", "postgres", "redis", "monitor", "alertmanager"}
    for name in published:
        for port in SERVICES[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_the_init_service_sets_up_roles_topics_and_kafka_access():
    assert SERVICES["gremio-init"]["command"] == [
        "sh",
        "-c",
        "gremio migrate && gremio db-roles && gremio topics && gremio kafka-access",
    ]
    assert SERVICES["ops"]["profiles"] == ["ops"]


def test_service_ports_are_the_settings_ports():
    assert DEFAULTS.api_port in _host_ports("api")
    assert DEFAULTS.live_port in _host_ports("locations")
    assert _host_ports("prometheus") == {DEFAULTS.prometheus_port}
    assert _host_ports("grafana") == {3000}
    env = SERVICES["monitor"]["environment"]
    assert int(env["MONITOR_PORT"]) == DEFAULTS.monitor_port
    assert env["BIND_HOST"] == "0.0.0.0"  # reached by Prometheus and Alertmanager, not published


# --- observability (issue 18): the monitor, Prometheus, Alertmanager, Grafana --------------------


def test_the_monitor_runs_what_make_up_runs_and_reads_the_reports_only():
    monitor = SERVICES["monitor"]
    assert monitor["command"] == ["python", "-m", "gremio.monitor"]
    assert monitor["image"] == SERVICES["stock"]["image"]
    assert monitor["depends_on"] == SERVICES["stock"]["depends_on"]
    assert monitor["volumes"] == ["reports:/opt/gremio/reports:ro"]
    env = monitor["environment"]
    assert env["MONITOR_AIRFLOW_URL"] == "http://airflow-apiserver:8080"
    assert env["AIRFLOW_MONITOR_PASSWORD"] == _required("AIRFLOW_MONITOR_PASSWORD")
    assert env["ALERTMANAGER_WEBHOOK_TOKEN"] == _required("ALERTMANAGER_WEBHOOK_TOKEN")
    assert env["REPORTS_DIR"] == "/opt/gremio/reports"


def test_airflow_init_writes_the_monitors_airflow_login_and_keeps_the_admins():
    init = SERVICES["airflow-init"]
    assert init["command"][:2] == ["bash", "-c"]
    script = init["command"][2]
    assert script.index("airflow db migrate") < script.index("python - <<'PY'")
    assert "jq" not in script and "$" not in script  # compose would interpolate a `$`
    assert 'passwords["monitor"] = wanted' in script  # merged into what is there: admin's kept
    assert "airflow-auth:/opt/airflow/auth" in init["volumes"]
    assert init["environment"]["AIRFLOW_MONITOR_PASSWORD"] == _required("AIRFLOW_MONITOR_PASSWORD")
    # Only airflow-init has it: the Airflow components do not need the monitor's password.
    for name in [*AIRFLOW_SERVICES[1:], "airflow-worker"]:
        assert "AIRFLOW_MONITOR_PASSWORD" not in SERVICES[name]["environment"], name


def _airflow_init_script() -> str:
    """airflow-init's Python, as the shell's here-document hands it over."""
    script = SERVICES["airflow-init"]["command"][2]
    return script.split("<<'PY'\n", 1)[1].split("\nPY", 1)[0]


@pytest.mark.parametrize("before", [None, "", '{"admin": "generated1"}', '{"admin": "a", "monitor": "old"}'])
def test_the_airflow_init_script_sets_the_monitors_password_and_nothing_else(tmp_path, before):
    import os
    import subprocess
    import sys

    path = tmp_path / "passwords.json"
    if before is not None:
        path.write_text(before)
    env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(path),
        "AIRFLOW_MONITOR_PASSWORD": "the-monitors-password",  # pragma: allowlist secret
    }
    subprocess.run([sys.executable, "-c", _airflow_init_script()], env=env, check=True, capture_output=True)
    expected = {**json.loads(before or "{}"), "monitor": "the-monitors-password"}
    assert json.loads(path.read_text()) == expected
    assert path.stat().st_mode & 0o777 == 0o600


def test_prometheus_and_alertmanager_run_the_generated_configs_and_the_rules():
    prometheus, alertmanager = SERVICES["prometheus"], SERVICES["alertmanager"]
    assert prometheus["image"] == "prom/prometheus:v2.42.0"  # Debian's, whose promtool tests the rules
    assert alertmanager["image"] == "prom/alertmanager:v0.25.0"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert {
        "./deploy/prometheus/compose/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
        "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro",
    } <= set(prometheus["volumes"])
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert "--cluster.listen-address=" in alertmanager["command"]  # one instance, no gossip
    assert (
        "./deploy/prometheus/compose/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
        in alertmanager["volumes"]
    )
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/compose/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    jobs = {scrape["job_name"]: scrape for scrape in config["scrape_configs"]}
    # Every replica: Docker's DNS gives each one's address for the service name.
    for job in ("api", "stock", "locations"):
        (sd,) = jobs[job]["dns_sd_configs"]
        assert sd["names"] == [job] and sd["type"] == "A"
    assert jobs["locations"]["basic_auth"]["password_file"] == "/run/secrets/staff_password"
    assert jobs["monitor"]["static_configs"] == [{"targets": [f"monitor:{DEFAULTS.monitor_port}"]}]
    webhook = yaml.safe_load((REPO_ROOT / "deploy/prometheus/compose/alertmanager.yml").read_text())
    (receiver,) = webhook["receivers"]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == f"http://monitor:{DEFAULTS.monitor_port}/v1/alertmanager"
    credentials = hook["http_config"]["authorization"]["credentials_file"]
    assert credentials == "/run/secrets/alertmanager_webhook_token"


def test_compose_secrets_are_the_files_gremio_secrets_writes_and_each_service_mounts_its_own():
    from gremio.credentials import STAFF_CLEAR_LOGIN_FILE, WEBHOOK_BEARER_FILE

    assert {name: spec["file"] for name, spec in COMPOSE["secrets"].items()} == SECRET_FILES
    assert set(SECRET_FILES.values()) == {f"./{STAFF_CLEAR_LOGIN_FILE}", f"./{WEBHOOK_BEARER_FILE}"}
    for name, service in SERVICES.items():
        mounted = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        assert mounted == SECRET_FILES_OF.get(name, set()), name
    # Neither file may reach git or an image (both COPY the repository).
    ignored = set((REPO_ROOT / ".gitignore").read_text().split())
    assert {STAFF_CLEAR_LOGIN_FILE, WEBHOOK_BEARER_FILE} <= ignored


def test_grafana_has_its_admin_password_from_env_and_no_anonymous_access():
    grafana = SERVICES["grafana"]
    assert grafana["image"] == "grafana/grafana:11.3.0"
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == _required("GRAFANA_ADMIN_PASSWORD")
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert {
        "./deploy/grafana/provisioning/datasources:/etc/grafana/provisioning/datasources:ro",
        "./deploy/grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards:ro",
        "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro",
    } <= set(grafana["volumes"])
    for mount in grafana["volumes"]:
        if mount.startswith("./"):
            assert (REPO_ROOT / mount.split(":")[0]).is_dir(), mount


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


def test_the_celery_profile_adds_workers_that_share_the_airflow_setup():
    """`AIRFLOW_EXECUTOR=CeleryExecutor docker compose --profile celery up` (docs/SCALING.md)."""
    redis, worker = SERVICES["redis"], SERVICES["airflow-worker"]
    assert worker["profiles"] == ["celery"]
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
    # The platform itself starts without the profile; redis too (the API's rate limits).
    unprofiled = [name for name, service in SERVICES.items() if "profiles" not in service]
    assert "redis" in unprofiled and "airflow-worker" not in unprofiled
    assert "profiles" not in redis and "ports" not in redis


def test_the_images_build_context_leaves_the_secrets_out():
    """Both images COPY the repository: .dockerignore keeps `make secrets`' .env and staff login,
    and the local stack's .local/ (its secrets.env), out of the build context and the images."""
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".env", "staff-login.json", "**/staff-login.json", ".local/"} <= set(ignored)
    assert "!.env.example" in ignored
    for name in ("app", "airflow"):
        assert re.search(r"^COPY .*\. ", (REPO_ROOT / "deploy" / name / "Dockerfile").read_text(), re.M)
    assert {SERVICES[n]["build"]["context"] for n in ("api", "airflow-scheduler")} == {"."}


def test_the_images_build_context_leaves_the_compose_secret_files_out():
    """staff-password and alertmanager-webhook-token lie beside .env, in the build context."""
    from gremio.credentials import STAFF_CLEAR_LOGIN_FILE, WEBHOOK_BEARER_FILE

    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    for name in (STAFF_CLEAR_LOGIN_FILE, WEBHOOK_BEARER_FILE):
        assert {name, f"**/{name}"} <= ignored, f".dockerignore must keep {name} out of the images"
