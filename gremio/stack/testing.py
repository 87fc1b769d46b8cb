"""Throwaway Kafka and PostgreSQL on free ports, for `make test` and the benchmarks.

The same launcher code as `gremio up` (KafkaBroker, PostgresCluster), without the process
manager: each server is a child process in its own session, so tests can stop, kill and
restart them to inject faults.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from werkzeug.security import generate_password_hash

from gremio.settings import REPO_ROOT, Settings
from gremio.stack.kafka_broker import KafkaBroker, ensure_jars
from gremio.stack.postgres import PostgresCluster, bin_dir, service_user
from gremio.stack.system import free_port, wait_for_port

# Fresh random secrets per throwaway stack: the settings refuse short or placeholder ones.
APP = ("gremio", secrets.token_urlsafe(32), "gremio")
AIRFLOW = ("airflow", secrets.token_urlsafe(32), "airflow")
CART_TOKEN_SECRET = secrets.token_urlsafe(32)
# The live map's staff login (consumers/locations/web.py): the service checks the hash, gremio's
# clients and the tests send the clear password (STAFF_PASSWORD).
STAFF_USER = "staff"
STAFF_PASSWORD = secrets.token_urlsafe(32)
STAFF_PASSWORD_HASH = generate_password_hash(STAFF_PASSWORD)
# The services' database roles (sql/060_roles.sql), given LOGIN by `gremio db-roles`.
ROLE_PASSWORDS = {role: secrets.token_urlsafe(32) for role in ("stock", "locations", "airflow", "monitor")}
WEBHOOK_TOKEN = secrets.token_urlsafe(32)


def stop_group(proc: subprocess.Popen, sig: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> None:
    """Stop a process started with start_new_session=True, its whole group; SIGKILL it if it
    outstays `timeout`."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


@dataclass
class Server:
    name: str
    command: list[str]
    log: Path
    user: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        if self.proc and self.proc.poll() is None:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        cmd = ["runuser", "-u", self.user, "--", *self.command] if self.user else self.command
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> None:
        """Stop the whole process group; SIGKILL it if it outstays `timeout`."""
        if self.proc:
            stop_group(self.proc, sig, timeout)

    @property
    def running(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


class ThrowawayStack:
    """A broker and a database on free ports under `root`, and the environment to reach them."""

    def __init__(self, root: Path, local_dir: Path | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)  # the postgres OS user must reach its data folder below
        self.local_dir = local_dir or REPO_ROOT / ".local"  # the jar cache is shared
        self.kafka_port = free_port()
        self.controller_port = free_port()
        self.pg_port = free_port()
        self.log_ports = (free_port(), free_port())  # Airflow's log servers, if a test starts one
        self._kafka: KafkaBroker | None = None
        self._pg: PostgresCluster | None = None
        self.kafka: Server | None = None
        self.postgres: Server | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def database_url(self, role: tuple[str, str, str] = APP) -> str:
        user, password, database = role
        return f"postgresql://{user}:{password}@127.0.0.1:{self.pg_port}/{database}"

    def env(self) -> dict[str, str]:
        """Settings that point every gremio part at this stack."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "DATABASE_URL": self.database_url(),
            "POSTGRES_PORT": str(self.pg_port),
            "POSTGRES_PASSWORD": APP[1],
            "AIRFLOW_DB_PASSWORD": AIRFLOW[1],
            **{f"PG_{role.upper()}_PASSWORD": password for role, password in ROLE_PASSWORDS.items()},
            "CART_TOKEN_SECRET": CART_TOKEN_SECRET,
            "ALERTMANAGER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "STAFF_USER": STAFF_USER,
            "STAFF_PASSWORD": STAFF_PASSWORD,
            "STAFF_PASSWORD_HASH": STAFF_PASSWORD_HASH,
            "REPORTS_DIR": str(self.root / "reports"),
            "LOCAL_DIR": str(self.root / "local"),
            "AIRFLOW_WORKER_LOG_PORT": str(self.log_ports[0]),
            "AIRFLOW_TRIGGER_LOG_PORT": str(self.log_ports[1]),
        }

    def settings(self) -> Settings:
        return Settings(**{k.lower(): v for k, v in self.env().items()})

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        libs = ensure_jars(self.local_dir)
        self._kafka = KafkaBroker(
            self.root / "kafka", self.kafka_port, self.controller_port, libs, heap="512m"
        )
        self._kafka.prepare()
        self.kafka = Server("kafka", self._kafka.command(), self.root / "logs" / "kafka.log")
        self._pg = PostgresCluster(self.root / "pg", self.pg_port, bin_dir(), service_user())
        self._pg.prepare()
        self.postgres = Server(
            "postgres", self._pg.command(), self.root / "logs" / "postgres.log", self._pg.user
        )
        self.start_postgres()
        self._pg.ensure_database(*APP, createrole=True)  # as `make up`: the owner creates the roles
        self._pg.ensure_database(*AIRFLOW)
        self.start_kafka()

    def start_kafka(self, timeout: float = 90.0) -> None:
        assert self.kafka
        self.kafka.start()
        if not wait_for_port(self.kafka_port, timeout):
            raise RuntimeError(f"test Kafka did not open port {self.kafka_port}; see {self.kafka.log}")
        from gremio.kafka import wait_for_broker

        wait_for_broker(self.settings(), timeout=timeout)

    def stop_kafka(self, sig: signal.Signals = signal.SIGTERM) -> None:
        assert self.kafka
        self.kafka.stop(sig)

    def start_postgres(self, timeout: float = 60.0) -> None:
        assert self.postgres and self._pg
        self.postgres.start()
        self._pg.wait_ready(timeout)

    def stop_postgres(self, sig: signal.Signals = signal.SIGINT) -> None:
        assert self.postgres
        self.postgres.stop(sig)

    def stop(self) -> None:
        for server in (self.kafka, self.postgres):
            if server:
                server.stop(signal.SIGINT if server.name == "postgres" else signal.SIGTERM, timeout=30)
