"""One typed settings object, read once from the environment.

Every part of gremio (API, consumers, DAGs, the local stack, the simulator) takes its
configuration from here. The environment variable of a field is its name in upper case;
`.env.example` lists them all and a unit test keeps the two in step.
"""

from __future__ import annotations

import json
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything gremio can be told, with the guild's defaults."""

    model_config = SettingsConfigDict(env_file=REPO_ROOT / ".env", extra="ignore", frozen=True)

    # --- where things are -------------------------------------------------------------
    # Unset means "the local stack": the broker and database that `gremio up` starts.
    kafka_bootstrap_servers: str | None = None
    database_url: str | None = None
    reports_dir: Path = REPO_ROOT / "reports"
    local_dir: Path = REPO_ROOT / ".local"
    # An existing Kafka install whose libs/ the local broker runs from, instead of the
    # jars Maven fetches into LOCAL_DIR (DESIGN §7).
    kafka_home: Path | None = None
    guild_timezone: str = "America/Santiago"

    # --- ports (the local stack binds loopback only; containers set BIND_HOST=0.0.0.0) ---
    bind_host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    postgres_port: int = 5433
    airflow_port: int = 8080
    # Airflow's log servers (the scheduler's task logs, the triggerer's), on loopback.
    airflow_worker_log_port: int = 8793
    airflow_trigger_log_port: int = 8794
    api_port: int = 8000
    live_port: int = 8001
    stock_metrics_port: int = 8002
    kafka_heap: str = "512m"
    # Replicas of each topic `gremio topics` creates: -1 is the brokers' default.replication.factor
    # (1 on the single local broker); 3 on a three-broker cluster (docs/SCALING.md).
    kafka_replication_factor: int = Field(default=-1, ge=-1, le=32)

    # --- credentials (local defaults; change them anywhere that is not a laptop) -------
    cart_token_secret: SecretStr = SecretStr("dev-only-cart-token-secret-change-me")
    postgres_user: str = "gremio"
    postgres_password: SecretStr = SecretStr("gremio")
    postgres_db: str = "gremio"
    airflow_db_user: str = "airflow"
    airflow_db_password: SecretStr = SecretStr("airflow")
    airflow_db: str = "airflow"
    airflow_admin_user: str = "admin"

    # --- ingest API ---------------------------------------------------------------------
    delivery_timeout_seconds: float = Field(default=5.0, gt=0)
    max_body_bytes: int = 16 * 1024
    max_batch_body_bytes: int = 256 * 1024
    max_batch_items: int = 500
    max_future_seconds: int = 300
    # How old a sale's sold_at (or a position's recorded_at) may be when the API gets it: a cart
    # offline over a long weekend (Fiestas Patrias can be 4-5 days) still sends its sales.
    sales_max_age_days: int = Field(default=7, ge=1)
    rate_limit_members: str = "20/minute"
    rate_limit_reports: str = "30/minute"
    # Per-client-IP counters live in each worker unless this points at shared storage
    # (e.g. redis://host:6379); see docs/API.md.
    rate_limit_storage_uri: str = "memory://"
    # gunicorn gthread workers x threads, chosen by measurement (docs/BENCHMARKS.md).
    api_workers: int = 2
    api_threads: int = 8

    # --- stock replenishment (DESIGN §5) ----------------------------------------------
    stock_batch_size: int = Field(default=5, ge=1)
    stock_batch_flush_seconds: float = Field(default=2.0, gt=0)
    stock_threshold: int = 20
    stock_refill_target: int = 100
    stock_order_multiple: int = Field(default=10, ge=1)
    stock_group_id: str = "stock-replenishment"
    # A killed instance's partitions move to the others after this long (librdkafka: 45 s).
    stock_session_timeout_seconds: float = Field(default=10.0, ge=1)
    # How long applied sale ids are remembered, to skip a redelivered or re-sent sale exactly.
    stock_dedupe_retention_hours: float = Field(default=48.0, gt=0)
    # Testing only: SIGKILL the service at this point of a batch ("after_db_commit" or
    # "after_produce") to prove that redelivery neither loses nor doubles an order.
    stock_test_crash_point: str = Field(default="", pattern="^(|after_db_commit|after_produce)$")

    # --- live locations (DESIGN §5) ---------------------------------------------------
    live_ttl_seconds: float = Field(default=60.0, gt=0)
    report_window_seconds: float = 600.0
    jump_speed_kmh: float = 30.0
    service_area_lat_min: float = -33.75
    service_area_lat_max: float = -33.15
    service_area_lon_min: float = -70.95
    service_area_lon_max: float = -70.40
    fugitive_match_radius_m: float = 100.0
    alert_suppress_seconds: float = 300.0
    members_refresh_seconds: float = 30.0
    live_group_id: str = "location-tracker"
    # A killed instance's partitions (and its carts) move on after this long (librdkafka: 45 s);
    # the broker refuses less than its group.min.session.timeout.ms, 6 s by default.
    live_session_timeout_seconds: float = Field(default=10.0, ge=6)

    # --- daily sales and membership (DESIGN §5) ---------------------------------------
    frequent_client_min_purchases: int = 2
    frequent_client_window_days: int = 30
    frequent_clients_max: int = 3
    # sales_daily catches up from here on a fresh stack: a recent day keeps the backlog short.
    sales_daily_start_date: date = date(2026, 11, 22)
    # members_monthly's first month (its runs catch up from here); earlier months: see docs/MEMBERSHIP.md.
    members_monthly_start_date: date = date(2026, 11, 1)

    # --- simulator -----------------------------------------------------------------------
    simulate: bool = True
    simulate_carts: int = 20
    simulate_ping_seconds: float = 5.0

    # --- derived values -------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def uses_local_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def uses_local_postgres(self) -> bool:
        return self.database_url is None

    @property
    def db_url(self) -> str:
        """libpq URL of the application database."""
        if self.database_url:
            return self.database_url
        return _pg_url(self.postgres_user, self.postgres_password, self.postgres_port, self.postgres_db)

    @property
    def airflow_db_url(self) -> str:
        """SQLAlchemy URL of Airflow's metadata database (same server as the app)."""
        parts = urlsplit(self.db_url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 5432
        user = quote(self.airflow_db_user, safe="")
        password = quote(self.airflow_db_password.get_secret_value(), safe="")
        return f"postgresql+psycopg2://{user}:{password}@{host}:{port}/{self.airflow_db}"

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """confluent-kafka client configuration for this deployment."""
        return {"bootstrap.servers": self.bootstrap_servers, **overrides}

    def airflow_connections(self) -> dict[str, str]:
        """The AIRFLOW_CONN_* variables: `kafka_default`, `kafka_members_watch` and `gremio_db`."""
        kafka = {
            "conn_type": "kafka",
            "extra": {"bootstrap.servers": self.bootstrap_servers, "group.id": "airflow-drain"},
        }
        # The members_premium AssetWatcher's trigger subscribes with the connection's own
        # settings: its own group, and from the start of `members` the first time, so
        # applications sent before the triggerer first ran are noticed too.
        members_watch = {
            "conn_type": "kafka",
            "extra": {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": "airflow-members-premium-watch",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": "false",
            },
        }
        return {
            "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(kafka),
            "AIRFLOW_CONN_KAFKA_MEMBERS_WATCH": json.dumps(members_watch),
            "AIRFLOW_CONN_GREMIO_DB": self.db_url,
        }

    def __repr_args__(self):
        for key, value in super().__repr_args__():
            yield key, (_mask_url(value) if key == "database_url" and value else value)

    def masked(self) -> dict[str, Any]:
        """The settings as a dict, secrets masked, for logs and `gremio settings`."""
        shown = self.model_dump(mode="json")
        for key in ("database_url",):
            if shown.get(key):
                shown[key] = _mask_url(shown[key])
        return shown


def _pg_url(user: str, password: SecretStr, port: int, db: str, host: str = "127.0.0.1") -> str:
    secret = quote(password.get_secret_value(), safe="")
    return f"postgresql://{quote(user, safe='')}:{secret}@{host}:{port}/{db}"


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


def env_names() -> set[str]:
    """Every environment variable the settings read."""
    return {name.upper() for name in Settings.model_fields}
