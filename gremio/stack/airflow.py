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


def admin_password(settings: Settings) -> str:
    """The admin's password, kept where Airflow's simple auth manager reads it."""
    path = home(settings) / "passwords.json"
    if path.exists():
        known = json.loads(path.read_text())
        if settings.airflow_admin_user in known:
            return known[settings.airflow_admin_user]
    password = secrets.token_urlsafe(12)
    write_private(path, json.dumps({settings.airflow_admin_user: password}))
    return password


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
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_admin_user}:admin",
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
    }


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
