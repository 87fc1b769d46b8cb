"""docker-compose.yaml loaded by Docker's own compose CLI (`config` needs no engine).

The CLI is built once from the Go module proxy into .local/tools (gremio/stack/compose_cli.py).
Every profile loads with the secrets `gremio secrets` writes, and stops, naming each missing
secret, without them. The resolved file (what `docker compose up` would run) gives each
service only its own secrets, and publishes nothing but loopback ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gremio.credentials import read_env_file
from gremio.settings import REPO_ROOT
from gremio.stack import compose_cli
from tests.unit.test_compose import PUBLISHED, SECRET_NAMES, SECRETS_OF

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
CLUSTER = (COMPOSE_FILE, REPO_ROOT / "docker-compose.cluster.yaml")  # the cluster topology, merged
PROFILES = sorted(
    {p for s in yaml.safe_load(COMPOSE_FILE.read_text())["services"].values() for p in s.get("profiles", [])}
)


@pytest.fixture(autouse=True)
def _services():
    """Overrides the integration tests' autouse broker and database: compose config needs neither."""


@pytest.fixture(scope="session")
def compose() -> Path:
    started = time.monotonic()
    try:
        path = compose_cli.ensure()
    except compose_cli.ComposeCliError as exc:
        pytest.fail(str(exc), pytrace=False)
    record = compose_cli.build_record() or {}
    took = time.monotonic() - started
    print(
        f"\ndocker compose {compose_cli.VERSION}: {path} (built in {record.get('seconds', '?')} s; now {took:.1f} s)"
    )
    return path


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .env as `make secrets` writes it (the real command, in a directory of its own)."""
    path = tmp_path_factory.mktemp("compose-env") / ".env"
    gremio = Path(sys.executable).with_name("gremio")
    subprocess.run([str(gremio), "secrets", "--env-file", str(path)], check=True, capture_output=True)
    return path


def _config(
    compose: Path,
    env_file: Path,
    *args: str,
    profiles: list[str] = (),
    files: tuple[Path, ...] = (COMPOSE_FILE,),
) -> subprocess.CompletedProcess:
    """`docker-compose config` on the repository's file (or `files`, merged in order), with only
    `env_file` for variables: a clean environment, and --env-file so that no .env of the
    repository is read."""
    command = [str(compose), *(arg for f in files for arg in ("-f", str(f))), "--env-file", str(env_file)]
    for profile in profiles:
        command += ["--profile", profile]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)}
    return subprocess.run(
        [*command, "config", *args], env=env, cwd=env_file.parent, capture_output=True, text=True, timeout=60
    )


def _resolved(compose: Path, env_file: Path, files: tuple[Path, ...] = (COMPOSE_FILE,)) -> dict:
    done = _config(compose, env_file, "--format", "json", profiles=PROFILES, files=files)
    assert done.returncode == 0, done.stderr
    # compose escapes a `$` of a value as `$$` in its output.
    return json.loads(done.stdout.replace("$$", "$"))


def test_the_file_has_the_profiles_the_docs_name():
    assert {"demo", "celery", "ops"} <= set(PROFILES)


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_every_profile_loads_with_the_secrets_make_secrets_writes(compose, env_file, profile):
    done = _config(compose, env_file, "--quiet", profiles=[profile] if profile else [])
    assert done.returncode == 0, done.stderr
    assert "variable is not set" not in done.stderr, done.stderr


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_without_secrets_every_profile_stops_naming_each_missing_one(compose, tmp_path, profile):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = _config(compose, empty, "--quiet", profiles=[profile] if profile else [])
    assert done.returncode != 0
    for name in SECRET_NAMES:
        assert f"required variable {name} is missing a value: run make secrets" in done.stderr


@pytest.mark.parametrize("missing", sorted(SECRET_NAMES))
def test_one_missing_secret_stops_it_and_is_named(compose, env_file, tmp_path, missing):
    lines = [line for line in env_file.read_text().splitlines() if not line.startswith(f"{missing}=")]
    partial = tmp_path / "partial.env"
    partial.write_text("\n".join(lines) + "\n")
    done = _config(compose, partial, "--quiet", profiles=PROFILES)
    assert done.returncode != 0
    named = {name for name in SECRET_NAMES if f"required variable {name} " in done.stderr}
    assert named == {missing}, done.stderr


def test_the_repository_env_file_is_never_what_these_tests_read(compose, env_file, tmp_path):
    """With --env-file, a .env beside the compose file is not read (so a developer's own .env
    cannot make the tests above pass or fail)."""
    (tmp_path / "docker-compose.yaml").write_text(COMPOSE_FILE.read_text())
    (tmp_path / ".env").write_text(env_file.read_text())
    empty = tmp_path / "empty.env"
    empty.write_text("")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    base = [str(compose), "-f", str(tmp_path / "docker-compose.yaml")]
    loaded = subprocess.run([*base, "config", "--quiet"], env=env, capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr  # the .env beside it, when no --env-file is given
    done = subprocess.run(
        [*base, "--env-file", str(empty), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "CART_TOKEN_SECRET" in done.stderr


def test_each_resolved_service_holds_only_its_own_secrets(compose, env_file):
    values = {name: value for name, value in read_env_file(env_file).items() if name in SECRET_NAMES}
    assert set(values) == SECRET_NAMES
    services = _resolved(compose, env_file)["services"]
    assert set(services) == set(SECRETS_OF)
    for name, service in services.items():
        text = json.dumps(service)
        held = {
            secret for secret, value in values.items() if value in text or json.dumps(value)[1:-1] in text
        }
        assert held == SECRETS_OF[name], f"{name} holds {sorted(held)}"


def test_the_resolved_values_are_the_secrets_themselves(compose, env_file):
    """Interpolation keeps each value whole: the staff hash's `$` stays (single-quoted in .env),
    and the URLs and the Airflow connections' JSON carry the passwords as written."""
    values = read_env_file(env_file)
    services = _resolved(compose, env_file)["services"]
    assert services["locations"]["environment"]["STAFF_PASSWORD_HASH"] == values["STAFF_PASSWORD_HASH"]
    api = services["api"]["environment"]
    assert "DATABASE_URL" not in api
    assert api["KAFKA_SASL_PASSWORD"] == values["KAFKA_API_PASSWORD"]
    assert api["CART_TOKEN_SECRET"] == values["CART_TOKEN_SECRET"]
    stock = services["stock"]["environment"]
    assert (
        stock["DATABASE_URL"]
        == f"postgresql://gremio_stock:{values['PG_STOCK_PASSWORD']}@postgres:5432/gremio"
    )
    scheduler = services["airflow-scheduler"]["environment"]
    extra = json.loads(scheduler["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"]
    assert (extra["sasl.username"], extra["sasl.password"]) == ("airflow", values["KAFKA_AIRFLOW_PASSWORD"])
    assert scheduler["AIRFLOW__CORE__FERNET_KEY"] == values["AIRFLOW_FERNET_KEY"]


def test_the_resolved_file_publishes_only_loopback_ports(compose, env_file):
    services = _resolved(compose, env_file)["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == PUBLISHED
    for name in published:
        for port in services[name]["ports"]:
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"
    assert not {"kafka", "postgres", "redis"} & published


def test_gremio_accepts_each_containers_resolved_settings(compose, env_file, tmp_path):
    """What each gremio and Airflow container gets passes the settings' checks (secrets' length,
    the staff hash's form, the Kafka protocol), read from its environment alone."""
    services = _resolved(compose, env_file)["services"]
    check = "from gremio.settings import Settings; Settings(_env_file=None)"
    for name, service in services.items():
        if service.get("image") not in ("gremio-app:latest", "gremio-airflow:latest"):
            continue
        env = {**service["environment"], "PATH": os.environ.get("PATH", ""), "LOCAL_DIR": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-c", check], env=env, capture_output=True, text=True, cwd=REPO_ROOT
        )
        assert done.returncode == 0, f"{name}: {done.stderr.strip().splitlines()[-1:]}"


# --- the cluster topology: docker-compose.cluster.yaml merged over the base file -------------------


@pytest.fixture(scope="module")
def cluster(compose, env_file) -> dict:
    return _resolved(compose, env_file, files=CLUSTER)["services"]


def test_the_cluster_has_three_kraft_nodes_of_one_quorum(cluster):
    nodes = [cluster[name]["environment"] for name in ("kafka", "kafka-2", "kafka-3")]
    assert [n["KAFKA_NODE_ID"] for n in nodes] == ["1", "2", "3"]
    assert [n["KAFKA_ADVERTISED_HOST"] for n in nodes] == ["kafka", "kafka-2", "kafka-3"]
    assert len({n["KAFKA_CLUSTER_ID"] for n in nodes}) == 1
    (voters,) = {n["KAFKA_INITIAL_CONTROLLERS"] for n in nodes}
    assert [v.split(":")[0] for v in voters.split(",")] == ["1@kafka", "2@kafka-2", "3@kafka-3"]
    volumes = [
        {v["source"] for v in cluster[name]["volumes"] if v["type"] == "volume"}
        for name in ("kafka", "kafka-2", "kafka-3")
    ]
    assert len(set().union(*volumes)) == 3, "each node its own data volume"
    assert {"kafka", "kafka-2", "kafka-3"} <= set(cluster["gremio-init"]["depends_on"])
    assert cluster["gremio-init"]["environment"]["KAFKA_REPLICATION_FACTOR"] == "3"


def test_every_kafka_client_in_the_cluster_gets_the_whole_bootstrap_list(cluster):
    everyone = {"kafka:19092", "kafka-2:19092", "kafka-3:19092"}
    clients = 0
    for name, service in cluster.items():
        env = service.get("environment") or {}
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            clients += 1
            assert set(env["KAFKA_BOOTSTRAP_SERVERS"].split(",")) == everyone, name
        for conn in ("AIRFLOW_CONN_KAFKA_DEFAULT", "AIRFLOW_CONN_KAFKA_MEMBERS_WATCH"):
            if conn in env:
                assert set(json.loads(env[conn])["extra"]["bootstrap.servers"].split(",")) == everyone, name
    assert clients >= 10


def test_the_cluster_runs_two_of_each_behind_nginx_and_the_celery_executor(cluster):
    for name in ("api", "stock", "locations", "airflow-worker"):
        assert cluster[name]["deploy"]["replicas"] == 2, name
    assert not cluster["api"].get("ports"), "the API instances are reached through nginx only"
    assert cluster["simulator"]["command"][-1] == "http://nginx:8000"
    assert cluster["api"]["environment"]["API_PROXY_HOPS"] == "1"
    assert [(p["host_ip"], p["published"], p["target"]) for p in cluster["nginx"]["ports"]] == [
        ("127.0.0.1", "8000", 8000)
    ]
    mounted = {
        v["source"].removeprefix(str(REPO_ROOT) + "/"): v["target"] for v in cluster["nginx"]["volumes"]
    }
    assert mounted == {"deploy/nginx/cluster.conf": "/var/cache/nginx/nginx.conf"}
    for name, service in cluster.items():
        if name.startswith("airflow-"):
            assert service["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name


def test_the_cluster_publishes_only_loopback_and_gives_each_service_only_its_secrets(cluster, env_file):
    for name, service in cluster.items():
        for port in service.get("ports") or []:
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"
    assert {name for name, service in cluster.items() if service.get("ports")} == {
        "nginx",
        "locations",
        "airflow-apiserver",
        "prometheus",
        "grafana",
    }
    values = {name: value for name, value in read_env_file(env_file).items() if name in SECRET_NAMES}
    wanted = {**SECRETS_OF, "kafka-2": SECRETS_OF["kafka"], "kafka-3": SECRETS_OF["kafka"], "nginx": set()}
    assert set(cluster) == set(wanted)
    for name, service in cluster.items():
        text = json.dumps(service)
        held = {
            secret for secret, value in values.items() if value in text or json.dumps(value)[1:-1] in text
        }
        assert held == wanted[name], f"{name} holds {sorted(held)}"


def test_gremio_accepts_each_cluster_containers_resolved_settings(cluster, tmp_path):
    check = "from gremio.settings import Settings; s = Settings(_env_file=None); print(s.bootstrap_servers)"
    for name, service in cluster.items():
        if service.get("image") != "gremio-app:latest":
            continue
        env = {**service["environment"], "PATH": os.environ.get("PATH", ""), "LOCAL_DIR": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-c", check], env=env, capture_output=True, text=True, cwd=REPO_ROOT
        )
        assert done.returncode == 0, f"{name}: {done.stderr.strip().splitlines()[-1:]}"
        if "KAFKA_BOOTSTRAP_SERVERS" in service["environment"]:
            assert done.stdout.strip().count(",") == 2, name


# --- the compose secrets: files `gremio secrets` writes beside .env ----------------------------------


def test_make_secrets_writes_the_compose_secret_files_beside_the_env_file(env_file):
    """Alertmanager's bearer token and the staff password (Prometheus's scrape of the location
    service), each alone in a 0600 file, the same values as .env's and staff-login.json's."""
    from werkzeug.security import check_password_hash

    from gremio.credentials import STAFF_CLEAR_LOGIN_FILE, STAFF_LOGIN_FILE, WEBHOOK_BEARER_FILE

    values = read_env_file(env_file)
    token, staff = env_file.parent / WEBHOOK_BEARER_FILE, env_file.parent / STAFF_CLEAR_LOGIN_FILE
    for path in (token, staff):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert token.read_text() == values["ALERTMANAGER_WEBHOOK_TOKEN"]
    login = json.loads((env_file.parent / STAFF_LOGIN_FILE).read_text())
    assert staff.read_text() == login["password"]
    assert check_password_hash(values["STAFF_PASSWORD_HASH"], staff.read_text())


def test_make_secrets_again_keeps_the_files_in_step(env_file, tmp_path):
    """A second run (every secret there already) writes both files again from what is kept."""
    from gremio.credentials import STAFF_CLEAR_LOGIN_FILE, WEBHOOK_BEARER_FILE

    copy = tmp_path / ".env"
    copy.write_text(env_file.read_text())
    (tmp_path / "staff-login.json").write_text((env_file.parent / "staff-login.json").read_text())
    gremio = Path(sys.executable).with_name("gremio")
    subprocess.run([str(gremio), "secrets", "--env-file", str(copy)], check=True, capture_output=True)
    assert copy.read_text() == env_file.read_text()
    for name in (WEBHOOK_BEARER_FILE, STAFF_CLEAR_LOGIN_FILE):
        assert (tmp_path / name).read_text() == (env_file.parent / name).read_text(), name


def test_the_resolved_compose_secrets_are_the_files_beside_the_compose_file(compose, env_file):
    resolved = _resolved(compose, env_file)
    files = {name: Path(spec["file"]) for name, spec in resolved["secrets"].items()}
    assert files == {
        "staff_password": REPO_ROOT / "staff-password",
        "alertmanager_webhook_token": REPO_ROOT / "alertmanager-webhook-token",
    }
    services = resolved["services"]
    mounted = {
        name: {(s["source"], s.get("target")) for s in service.get("secrets", [])}
        for name, service in services.items()
        if service.get("secrets")
    }
    assert mounted == {
        "prometheus": {("staff_password", "/run/secrets/staff_password")},
        "alertmanager": {("alertmanager_webhook_token", "/run/secrets/alertmanager_webhook_token")},
    }
