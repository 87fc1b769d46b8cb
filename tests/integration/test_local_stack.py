"""`gremio up | status | down` for real, on free ports in a private folder.

This is what `make up` does on a newcomer's machine, minus the downloads: Kafka, PostgreSQL,
Airflow's four components, the API and both consumers under supervisord.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gremio.settings import REPO_ROOT, env_names
from gremio.stack.kafka_broker import ensure_jars
from gremio.stack.system import free_port
from tests.support import http, wait_for

GREMIO = [sys.executable, "-m", "gremio.cli"]
PORTS = (
    "KAFKA_PORT",
    "KAFKA_CONTROLLER_PORT",
    "POSTGRES_PORT",
    "AIRFLOW_PORT",
    "API_PORT",
    "LIVE_PORT",
    "STOCK_METRICS_PORT",
    "REDIS_PORT",
    "MONITOR_PORT",
    "PROMETHEUS_PORT",
    "ALERTMANAGER_PORT",
)


def private_env(root: Path, ports: tuple[str, ...] = PORTS) -> dict[str, str]:
    """An environment for a private local stack in `root`: its own folder, free `ports`."""
    root.chmod(0o755)  # the postgres OS user must reach its data folder below
    libs = root / "local" / "kafka" / "libs"
    libs.parent.mkdir(parents=True)
    # The jar cache, filled first when this is the clone's first broker.
    libs.symlink_to(ensure_jars(REPO_ROOT / ".local"))
    env = {k: v for k, v in os.environ.items() if k not in env_names() and not k.startswith("AIRFLOW")}
    env.update({name: str(free_port()) for name in ports})
    env.update(LOCAL_DIR=str(root / "local"), REPORTS_DIR=str(root / "reports"), SIMULATE="0")
    # The drills' alert rules: every `for:` a fifth (a 5-minute lag rule fires after one).
    env["ALERT_FOR_SCALE"] = "0.2"
    return env


@pytest.fixture
def local_env():
    """An environment for a private local stack: its own folder, its own free ports."""
    root = Path(tempfile.mkdtemp(prefix="gremio-up-"))
    env = private_env(root)
    yield env
    subprocess.run([*GREMIO, "down"], env=env, capture_output=True, timeout=300)
    shutil.rmtree(root, ignore_errors=True)


def _gremio(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*GREMIO, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _our_processes(env: dict[str, str]) -> list[str]:
    marker = env["LOCAL_DIR"]
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (proc / "stat").read_text().split()[2]
            except OSError:
                continue
            if marker in cmd and state != "Z":
                found.append(cmd)
    return found


def test_a_taken_port_is_named_with_its_setting_and_nothing_starts(local_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(local_env["POSTGRES_PORT"])))
        busy.listen()
        result = _gremio(local_env, "up", timeout=120)
    assert result.returncode != 0
    assert f"port {local_env['POSTGRES_PORT']} is already in use" in result.stderr
    assert "POSTGRES_PORT" in result.stderr
    assert not (Path(local_env["LOCAL_DIR"]) / "supervisor").exists()
    assert _our_processes(local_env) == []


def test_up_twice_status_and_down_leave_nothing_behind(local_env):
    first = _gremio(local_env, "up")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for part in ("kafka", "postgres", "redis", "airflow", "api", "stock", "locations"):
        assert part in first.stdout
    assert "unhealthy" not in first.stdout
    assert "login admin /" in first.stdout

    second = _gremio(local_env, "up")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "already up" in second.stdout

    _hostile_reports_leave_it_healthy(local_env)
    _secrets_are_its_own_and_a_stolen_carts_token_is_revoked(local_env)
    status = _gremio(local_env, "status", "--wait", "120")
    assert status.returncode == 0, status.stdout
    assert "unhealthy" not in status.stdout, status.stdout
    _airflow_requires_a_login(local_env, first.stdout)
    _a_stopped_service_and_its_lag_reach_the_alerts_topic_and_watch(local_env)
    assert _our_processes(local_env), "the stack runs detached from the command that started it"

    down = _gremio(local_env, "down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert "leftover" not in down.stdout, down.stdout
    assert _our_processes(local_env) == []


def _hostile_reports_leave_it_healthy(env: dict[str, str]) -> None:
    """Issue 12 as a new user found it: a NUL in an anonymous report's description once took
    the location service down for good. Now it is a 422, and markup is a report like any other."""
    api, live = f"http://127.0.0.1:{env['API_PORT']}", f"http://127.0.0.1:{env['LIVE_PORT']}"
    for text in ("sin logo\x00", "carro\u202e", "\x1b[2J"):
        answer = http("POST", api + "/v1/reports", {"lat": -33.44, "lon": -70.65, "description": text})
        assert answer.status == 422 and answer.json()["errors"][0]["field"] == "description", answer.body
    shown = "[/b] =1+1 '; drop table sales;--"
    answer = http("POST", api + "/v1/reports", {"lat": -33.44, "lon": -70.65, "description": shown})
    assert answer.status == 202, answer.body

    assert http("GET", live + "/v1/live").status == 401  # the staff login, kept by `make up`:
    login = json.loads((Path(env["LOCAL_DIR"]) / "staff-login.json").read_text())
    staff = {
        "Authorization": "Basic " + base64.b64encode(f"{login['user']}:{login['password']}".encode()).decode()
    }

    def on_the_board() -> bool:
        board = http("GET", live + "/v1/live", headers=staff)
        return board.status == 200 and shown in {r["description"] for r in board.json()["reports"]}

    wait_for(on_the_board, timeout=60, what="the report on /v1/live")


def _secrets_are_its_own_and_a_stolen_carts_token_is_revoked(env: dict[str, str]) -> None:
    """Issue 14 as a new user tries it: the stack made its own secrets (0600), a weak secret
    stops a command with one line naming it, and `gremio token revoke` turns that cart's next
    request into a 401 within 10 s, while a token issued afterwards works."""
    local = Path(env["LOCAL_DIR"])
    for private in ("secrets.env", "staff-login.json"):
        assert (local / private).stat().st_mode & 0o777 == 0o600, private
    weak = _gremio({**env, "CART_TOKEN_SECRET": "short"}, "token", "BBCL12", timeout=60)
    assert weak.returncode != 0 and weak.stdout == ""
    assert weak.stderr.strip().count("\n") == 0 and "CART_TOKEN_SECRET" in weak.stderr, weak.stderr

    api = f"http://127.0.0.1:{env['API_PORT']}"
    ping = {"plate": "BBCL12", "lat": -33.44, "lon": -70.65}

    def send(token: str) -> int:
        return http("POST", api + "/v1/locations", ping, headers={"Authorization": f"Bearer {token}"}).status

    stolen = _gremio(env, "token", "BBCL12", timeout=60).stdout.strip()
    assert send(stolen) == 202
    revoked = _gremio(env, "token", "revoke", "BBCL12", timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    wait_for(lambda: send(stolen) == 401, timeout=10, what="the revoked token refused")
    answer = http("POST", api + "/v1/locations", ping, headers={"Authorization": f"Bearer {stolen}"})
    assert "revoked" in answer.json()["detail"]
    fresh = _gremio(env, "token", "BBCL12", timeout=60).stdout.strip()
    assert fresh != stolen and send(fresh) == 202


def _airflow_requires_a_login(env: dict[str, str], up_output: str) -> None:
    """Airflow's UI and REST API answer nobody without a token, and the printed login gets one."""
    base = f"http://127.0.0.1:{env['AIRFLOW_PORT']}"
    user, password = re.search(r"login (\S+) / (\S+)", up_output).groups()
    for path in ("/api/v2/dags", "/ui/config"):  # the REST API, and the UI's own API
        assert http("GET", base + path).status == 401, path
    assert http("GET", base + "/auth/token").status == 403  # no all-admins shortcut
    assert http("POST", base + "/auth/token", {"username": user, "password": password + "x"}).status == 401
    login = http("POST", base + "/auth/token", {"username": user, "password": password})
    assert login.status == 201, login.body
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert http("GET", base + "/ui/config", headers=bearer).status == 200

    def listed() -> set[str]:
        dags = http("GET", base + "/api/v2/dags", headers=bearer)
        assert dags.status == 200, dags.body
        return {dag["dag_id"] for dag in dags.json()["dags"]}

    # The real dag-processor imported every DAG, with the plugins they share (kafka_drain, dag_defaults).
    wanted = {"sales_daily", "members_monthly", "members_premium"}
    wait_for(lambda: wanted <= listed(), timeout=180, what="the DAGs listed to the logged-in admin")


def _a_stopped_service_and_its_lag_reach_the_alerts_topic_and_watch(env: dict[str, str]) -> None:
    """Issue 18 as an operator tries it: Prometheus scrapes every part; stop the stock service
    (through the process manager) while sales flow, and Alertmanager's notifications reach the
    `alerts` topic as `ops` alerts, and `gremio watch`: the service down, then its lag growing."""
    from confluent_kafka import Consumer, TopicPartition

    prometheus = f"http://127.0.0.1:{env['PROMETHEUS_PORT']}"
    active = http("GET", prometheus + "/api/v1/targets?state=active").json()["data"]["activeTargets"]
    jobs = {target["labels"]["job"]: target["health"] for target in active}
    assert jobs == dict.fromkeys(("api", "stock", "locations", "monitor", "prometheus", "alertmanager"), "up")

    consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{env['KAFKA_PORT']}", "group.id": "drill-reader"})
    ends = [
        TopicPartition("alerts", p, consumer.get_watermark_offsets(TopicPartition("alerts", p))[1])
        for p in (0, 1)
    ]
    consumer.assign(ends)
    plate = "BBCL12"
    token = _gremio(env, "token", plate, timeout=60).stdout.strip()
    api = f"http://127.0.0.1:{env['API_PORT']}"
    sale = {
        "plate": plate,
        "client": "drill",
        "quantity": 1,
        "stock_remaining": 80,
        "location": {"lat": -33.44, "lon": -70.65},
    }
    supervisorctl = [
        str(Path(sys.executable).parent / "supervisorctl"),
        "-c",
        str(Path(env["LOCAL_DIR"]) / "supervisor" / "supervisord.conf"),
    ]
    subprocess.run([*supervisorctl, "stop", "stock"], check=True, capture_output=True, timeout=60)
    seen: list[dict] = []

    def notified(name: str) -> bool:
        http("POST", api + "/v1/sales", sale, headers={"Authorization": f"Bearer {token}"})  # sales flow
        for msg in consumer.consume(50, timeout=1):
            if not msg.error():
                seen.append(json.loads(msg.value()))
        return any(
            a["kind"] == "ops" and name in a["detail"] and a["detail"].startswith("firing") for a in seen
        )

    try:
        wait_for(
            lambda: notified("GremioServiceDown"), timeout=120, interval=0.5, what="the service-down alert"
        )
        assert any("stock" in a["detail"] for a in seen if "GremioServiceDown" in a["detail"]), seen
        wait_for(
            lambda: notified("GremioConsumerLagGrowing"), timeout=180, interval=0.5, what="the lag alert"
        )
        watch = _gremio(env, "watch", "--once", timeout=60)
        assert watch.returncode == 0 and "GremioServiceDown" in watch.stdout, watch.stdout[-3000:]
    finally:
        consumer.close()
        subprocess.run([*supervisorctl, "start", "stock"], capture_output=True, timeout=60)
