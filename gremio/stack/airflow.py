"""Airflow 3.3 for the local stack: its environment, metadata database and health."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

from gremio.credentials import write_private
from gremio.settings import REPO_ROOT, Settings

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def home(settings: Settings) -> Path:
    return settings.local_dir / "airflow"


def _secrets(airflow_home: Path) -> dict[str, str]:
    """Keys every Airflow component must share, made once per AIRFLOW_HOME."""
    path = airflow_home / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    airflow_home.mkdir(parents=True, exist_ok=True)
    made = {
        "jwt_secret": secrets.token_urlsafe(32),
        "secret_key": secrets.token_urlsafe(32),
        "fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    write_private(path, json.dumps(made))
    return made


MONITOR_USER = "monitor"  # a viewer: the monitor reads the DAG runs' durations (gremio/monitor.py)


def admin_password(settings: Settings) -> str:
    """The admin's password, kept where Airflow's simple auth manager reads it (with the
    monitor's, a viewer's)."""
    return _passwords(settings)[settings.airflow_admin_user]


def monitor_password(settings: Settings) -> str:
    return _passwords(settings)[MONITOR_USER]


def _passwords(settings: Settings) -> dict[str, str]:
    path = home(settings) / "passwords.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    wanted = (settings.airflow_admin_user, MONITOR_USER)
    if not all(user in known for user in wanted):
        known = {**{user: secrets.token_urlsafe(12) for user in wanted}, **known}
        write_private(path, json.dumps(known))
    return known


def environment(settings: Settings, airflow_home: Path | None = None) -> dict[str, str]:
    """Everything Airflow's processes need, as environment variables."""
    airflow_home = airflow_home or home(settings)
    keys = _secrets(airflow_home)
    base_url = f"http://127.0.0.1:{settings.airflow_port}"
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": settings.guild_timezone,
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_admin_user}:admin,{MONITOR_USER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.airflow_db_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.airflow_worker_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.airflow_trigger_log_port),
        **settings.airflow_connections(),
        **(celery_environment(settings) if settings.is_cluster else {}),
    }


# `make up-cluster` only: a task whose worker died stops heartbeating (every
# [workers] min_heartbeat_interval, 5 s); after this many seconds without one the scheduler
# fails that try and the task's retries start a new one, on whichever worker takes it.
# Airflow's default (300 s) waits five minutes; 30 s is six missed heartbeats, so a slow
# API server under load does not fail a live task.
HEARTBEAT_TIMEOUT = 30
CELERY_CONCURRENCY = 2  # task slots per worker: gremio's DAGs run a few tasks at a time


def celery_environment(settings: Settings) -> dict[str, str]:
    """The CeleryExecutor: its queue in the stack's redis-server (db 1; db 0 holds the API's
    rate limits), task results in Airflow's own PostgreSQL database (same login)."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": celery_broker_url(settings),
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + settings.airflow_db_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CELERY_CONCURRENCY),
        # Said, not defaulted (Airflow warns at every start otherwise): a message a dead worker
        # had taken goes back on the queue after a day; its try is long retried by then, and
        # the task SDK refuses to run a try that is no longer queued.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    }


def celery_broker_url(settings: Settings) -> str:
    return f"redis://127.0.0.1:{settings.redis_port}/1"


def worker_command(index: int) -> list[str]:
    """One Celery worker, named worker-N@<host> (supervisor's `%` is escaped when written)."""
    return [
        airflow_bin(), "celery", "worker", "--concurrency", str(CELERY_CONCURRENCY),
        "--celery-hostname", f"worker-{index}@%h",
    ]  # fmt: skip


def ping_workers(settings: Settings, timeout: float = 3.0) -> dict[str, bool]:
    """Celery's own `inspect ping` over the broker: each live worker's name (worker-N@host),
    answering. Raises redis.RedisError at once when redis is down (Celery would retry)."""
    import redis
    from celery import Celery

    with redis.Redis(host="127.0.0.1", port=settings.redis_port, db=1, socket_timeout=timeout) as client:
        client.ping()
    app = Celery("gremio-status", broker=celery_broker_url(settings))
    try:
        replies = app.control.ping(timeout=timeout)
    finally:
        app.close()
    return {name: reply.get("ok") == "pong" for answer in replies for name, reply in answer.items()}


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade Airflow's metadata database (idempotent)."""
    subprocess.run(
        [airflow_bin(), "db", "migrate"],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def health(settings: Settings, timeout: float = 10.0) -> dict:
    """Airflow's own health report (/api/v2/monitor/health), or raise OSError."""
    url = f"http://127.0.0.1:{settings.airflow_port}/api/v2/monitor/health"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def unhealthy_parts(report: dict) -> list[str]:
    """The components Airflow's health report does not call healthy."""
    return sorted(
        name
        for name, part in report.items()
        if isinstance(part, dict) and part.get("status") not in ("healthy", None)
    )
