"""One typed settings object, read once from the environment.

Every part of gremio (API, consumers, DAGs, the local stack, the simulator) takes its
configuration from here. The environment variable of a field is its name in upper case;
`.env.example` lists them all and a unit test keeps the two in step.
"""

from __future__ import annotations

import json
import os
import re
from datetime import date, time
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import AwareDatetime, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

# A secret shorter than this, or carrying one of these markers (the documentation's and the old
# defaults' placeholders), is refused: a guessable secret is no secret (docs/SECURITY.md).
MIN_SECRET_BYTES = 32
# What werkzeug.security.generate_password_hash makes: scrypt:N:r:p$salt$hex or pbkdf2:sha256:N$salt$hex.
WERKZEUG_HASH = re.compile(r"(scrypt(:\d+){0,3}|pbkdf2:[a-z0-9_]+(:\d+)?)\$[^$]+\$[0-9a-f]+")
# The service roles of the gremio database (sql/060_roles.sql; `gremio db-roles` gives them LOGIN).
DB_ROLES = {
    "stock": "gremio_stock",
    "locations": "gremio_locations",
    "airflow": "gremio_airflow",
    "monitor": "gremio_monitor",
}
DbRole = Literal["owner", "stock", "locations", "airflow", "monitor"]
PLACEHOLDER_MARKERS = (
    "change-me",
    "changeme",
    "change_me",
    "dev-only",
    "placeholder",
    "example",
    "<",
    "xxxx",
)


class SettingsError(SystemExit):
    """A setting is missing or refused: the process stops at start with one line naming it."""

    def __init__(self, line: str) -> None:
        super().__init__(f"gremio: {line}")


class Settings(BaseSettings):
    """Everything gremio can be told, with the guild's defaults."""

    # `.env` (what `gremio secrets` writes, or yours) and, read first, the local stack's own
    # `.local/secrets.env` that `make up` generates: see get_settings().
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
    # The local stack's redis-server (the API's shared rate-limit counters), on loopback.
    redis_port: int = 6380
    # Operations (docs/OPERATIONS.md, "Monitoring"): gremio's monitor (group lag, the broker's
    # replication, the daily report, Airflow's health; Alertmanager's webhook), Prometheus
    # (Debian's package) and Alertmanager (9093 is the Kafka controller's), all on loopback.
    monitor_port: int = 8005
    prometheus_port: int = 9090
    alertmanager_port: int = 9193
    # How often Prometheus scrapes and evaluates its rules, and the monitor collects.
    monitor_interval_seconds: float = Field(default=5.0, gt=0)
    # Drills only: the stack's copy of deploy/prometheus/rules.yml has every `for:` multiplied
    # by this (0.2: a 5-minute rule fires after one). The repository's file is the truth.
    alert_for_scale: float = Field(default=1.0, gt=0, le=1)
    # Airflow's api-server as the monitor reaches it (unset: the local stack's, on AIRFLOW_PORT).
    monitor_airflow_url: str | None = None
    # The monitor's Airflow login (a viewer; unset: the local stack's, in AIRFLOW_HOME/passwords.json).
    airflow_monitor_password: SecretStr | None = None
    # Alertmanager's bearer token for the monitor's webhook (`make up` generates it).
    alertmanager_webhook_token: SecretStr | None = None
    kafka_heap: str = "512m"
    # `make up-cluster` (docs/SCALING.md, "The cluster on one machine"): three Kafka nodes and
    # two instances of the API (behind nginx on API_PORT), stock and locations. Unset: the
    # topology `gremio up` last started, remembered in LOCAL_DIR/topology (single by default).
    topology: Literal["single", "cluster"] | None = None
    cluster_kafka_ports: list[int] = [9092, 9094, 9096]
    cluster_kafka_controller_ports: list[int] = [9093, 9095, 9097]
    cluster_api_ports: list[int] = [8010, 8011]  # the API instances nginx spreads requests over
    cluster_live_ports: list[int] = [8001, 8003]  # each location instance's map and /v1/live
    cluster_stock_metrics_ports: list[int] = [8002, 8004]
    # Each Celery worker's log server (Airflow's AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT), one per
    # worker: `make up-cluster` runs Airflow's CeleryExecutor with two workers (docs/SCALING.md).
    cluster_airflow_worker_log_ports: list[int] = [8795, 8796]
    # Replicas of each topic `gremio topics` creates: -1 is the brokers' default.replication.factor
    # (1 on the single local broker); 3 on a three-broker cluster (docs/SCALING.md).
    kafka_replication_factor: int = Field(default=-1, ge=-1, le=32)

    # --- Kafka authentication (docs/OPERATIONS.md, "Kafka principals and ACLs") -----------
    # PLAINTEXT: the local stack's loopback broker. The deployment's broker takes SASL only:
    # each service is its own principal (api, stock, locations, airflow; admin for the
    # operators' commands), with SCRAM-SHA-512 and the ACLs of gremio/kafka_access.py.
    kafka_security_protocol: str = Field(default="PLAINTEXT", pattern="^(PLAINTEXT|SASL_PLAINTEXT|SASL_SSL)$")
    kafka_sasl_mechanism: str = Field(
        default="SCRAM-SHA-512", pattern="^(SCRAM-SHA-512|SCRAM-SHA-256|PLAIN)$"
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # `gremio kafka-access` (as admin) gives each service principal its SCRAM password.
    kafka_admin_password: SecretStr | None = None
    kafka_api_password: SecretStr | None = None
    kafka_stock_password: SecretStr | None = None
    kafka_locations_password: SecretStr | None = None
    kafka_airflow_password: SecretStr | None = None
    kafka_monitor_password: SecretStr | None = None

    # --- credentials: no secret has a default (docs/SECURITY.md) --------------------------
    # Every SecretStr field is checked when it is set (not empty, >= 32 bytes, no placeholder)
    # and required where it is used (`require`). `make up` generates the local stack's own in
    # .local/secrets.env; `gremio secrets` writes a .env for docker compose.
    cart_token_secret: SecretStr | None = None
    # Cart tokens name the key that signed them (gremio/tokens.py). To rotate (docs/API.md): the
    # old secret and id move to CART_TOKEN_PREVIOUS_*, accepted until CART_TOKEN_PREVIOUS_VALID_UNTIL,
    # an ISO 8601 time with its offset (e.g. 2026-12-01T00:00:00-03:00); the new ones take their place.
    cart_token_key_id: str = Field(default="k1", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    cart_token_previous_secret: SecretStr | None = None
    cart_token_previous_key_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    cart_token_previous_valid_until: AwareDatetime | None = None
    postgres_user: str = "gremio"
    # The owner's password: migrations and the operators' commands; no service uses it.
    postgres_password: SecretStr | None = None
    postgres_db: str = "gremio"
    airflow_db_user: str = "airflow"
    airflow_db_password: SecretStr | None = None
    airflow_db: str = "airflow"
    # The service roles' passwords (gremio_stock, gremio_locations, gremio_airflow): `gremio
    # db-roles` sets them. Each service connects as its own role, never as the owner.
    pg_stock_password: SecretStr | None = None
    pg_locations_password: SecretStr | None = None
    pg_airflow_password: SecretStr | None = None
    pg_monitor_password: SecretStr | None = None
    # Which role this process connects as when DATABASE_URL is unset (the local stack builds
    # the URL): owner, stock, locations or airflow. A DATABASE_URL, when set, is used as given.
    db_role: DbRole = "owner"
    airflow_admin_user: str = "admin"
    # The staff login of the live map and GET /v1/live (consumers/locations/web.py): HTTP Basic
    # against a werkzeug password hash. `make up` keeps the clear login in
    # LOCAL_DIR/staff-login.json; `gremio secrets` writes the hash to .env (docs/OPERATIONS.md).
    staff_user: str = "staff"
    staff_password_hash: SecretStr | None = None
    # The clear password, for gremio's own clients (`gremio watch`, `gremio status`) where
    # LOCAL_DIR/staff-login.json is not.
    staff_password: SecretStr | None = None

    # --- ingest API ---------------------------------------------------------------------
    delivery_timeout_seconds: float = Field(default=5.0, gt=0)
    max_body_bytes: int = 16 * 1024
    # Proxies in front of the API whose X-Forwarded-For it believes: 0 (none) by default, so a
    # client cannot pick its own address; 1 behind `make up-cluster`'s nginx, which replaces
    # the header with the peer it accepted (gremio/stack/nginx.py).
    api_proxy_hops: int = Field(default=0, ge=0, le=5)
    max_batch_body_bytes: int = 256 * 1024
    max_batch_items: int = 500
    max_future_seconds: int = 300
    # How old a sale's sold_at (or a position's recorded_at) may be when the API gets it: a cart
    # offline over a long weekend (Fiestas Patrias can be 4-5 days) still sends its sales.
    sales_max_age_days: int = Field(default=7, ge=1)
    rate_limit_members: str = "20/minute"
    rate_limit_reports: str = "30/minute"
    # Per-client-IP counters live in each worker unless this points at shared storage: the
    # local stack sets redis://127.0.0.1:REDIS_PORT/0, compose redis://redis:6379/0 (docs/API.md).
    rate_limit_storage_uri: str = "memory://"
    # gunicorn gthread workers x threads, chosen by measurement (docs/BENCHMARKS.md).
    api_workers: int = 2
    api_threads: int = 8

    # --- stock replenishment (DESIGN §5) ----------------------------------------------
    stock_batch_size: int = Field(default=5, ge=1)
    stock_batch_flush_seconds: float = Field(default=2.0, gt=0)
    # When a backlog is waiting, up to this many consecutive batches (each still decided on
    # its own) are made durable together: one transaction, one produce flush, one commit.
    stock_max_batches_per_commit: int = Field(default=20, ge=1)
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
    # A day's report is due by this hour (the guild's zone) of the morning after the day; a
    # run that starts later than that (catch-up on a fresh stack, a scheduler that was down)
    # has SALES_REPORT_GRACE_MINUTES from its start instead. Past it, Airflow's deadline alert
    # raises `report_late` (plugins/deadlines.py, docs/SALES_DAILY.md "If the report is late").
    sales_report_deadline: time = time(6, 0)
    sales_report_grace_minutes: float = Field(default=60.0, ge=0)
    # members_monthly's first month (its runs catch up from here); earlier months: see docs/MEMBERSHIP.md.
    members_monthly_start_date: date = date(2026, 11, 1)
    # members_premium also runs every this many minutes (its safety net: it decides whatever is
    # still pending), and a premium application pending longer than PREMIUM_PENDING_ALERT_SECONDS
    # raises one `premium_pending` alert (docs/MEMBERSHIP.md).
    members_premium_sweep_minutes: int = Field(default=5, ge=1, le=59)
    premium_pending_alert_seconds: float = Field(default=60.0, gt=0)

    # --- simulator -----------------------------------------------------------------------
    simulate: bool = True
    simulate_carts: int = 20
    simulate_ping_seconds: float = 5.0

    # --- checks ---------------------------------------------------------------------------
    @field_validator(
        "cart_token_previous_secret",
        "cart_token_previous_key_id",
        "cart_token_previous_valid_until",
        mode="before",
    )
    @classmethod
    def _no_rotation_when_empty(cls, value: Any) -> Any:
        # Outside a rotation these are unset; docker compose passes them as "" (`${VAR:-}`).
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_weak_secrets(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            refused = weak_secret_reason(value.get_secret_value())
            if refused:
                raise ValueError(refused)
        return value

    @field_validator("staff_password_hash", mode="after")
    @classmethod
    def _werkzeug_hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not WERKZEUG_HASH.fullmatch(value.get_secret_value()):
            raise ValueError(
                "is not a werkzeug password hash (method$salt$hash, from generate_password_hash)"
            )
        return value

    def require(self, *names: str) -> None:
        """Stop with one line naming the first of these settings that is not set."""
        for name in names:
            if getattr(self, name) is None:
                raise SettingsError(
                    f"setting {name.upper()} is not set: `make up` generates the local stack's, "
                    "`gremio secrets` writes a .env (docs/SECURITY.md)"
                )

    def secret(self, name: str) -> str:
        """The value of a required secret setting (SettingsError naming it when unset)."""
        self.require(name)
        return getattr(self, name).get_secret_value()

    # --- derived values -------------------------------------------------------------------
    @property
    def airflow_url(self) -> str:
        return (self.monitor_airflow_url or f"http://127.0.0.1:{self.airflow_port}").rstrip("/")

    @property
    def bootstrap_servers(self) -> str:
        """KAFKA_BOOTSTRAP_SERVERS, or the local stack's broker (each node of its cluster)."""
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        ports = self.cluster_kafka_ports if self.is_cluster else [self.kafka_port]
        return ",".join(f"127.0.0.1:{port}" for port in ports)

    @property
    def topology_file(self) -> Path:
        return self.local_dir / "topology"

    @property
    def is_cluster(self) -> bool:
        """Whether the local stack is (or is to be) `make up-cluster`'s topology."""
        if self.topology is not None:
            return self.topology == "cluster"
        try:
            return self.topology_file.read_text().strip() == "cluster"
        except OSError:
            return False

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
        return self.role_db_url(self.db_role)

    def db_login(self, role: DbRole) -> tuple[str, str]:
        """The user name and password of a database role (SettingsError when its password is unset)."""
        if role == "owner":
            return self.postgres_user, self.secret("postgres_password")
        return DB_ROLES[role], self.secret(f"pg_{role}_password")

    def role_db_url(self, role: DbRole) -> str:
        """libpq URL of the application database as `role`: the local stack's, or DATABASE_URL's
        server and database with the role's user and password."""
        user, password = self.db_login(role)
        if not self.database_url:
            return _pg_url(user, password, self.postgres_port, self.postgres_db)
        if role == "owner":
            return self.database_url
        parts = urlsplit(self.database_url)
        host = parts.hostname or "127.0.0.1"
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{f'[{host}]' if ':' in host else host}"
        netloc += f":{parts.port}" if parts.port else ""
        return parts._replace(netloc=netloc).geturl()

    @property
    def airflow_db_url(self) -> str:
        """SQLAlchemy URL of Airflow's metadata database (same server as the app)."""
        parts = urlsplit(self.db_url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 5432
        user = quote(self.airflow_db_user, safe="")
        password = quote(self.secret("airflow_db_password"), safe="")
        return f"postgresql+psycopg2://{user}:{password}@{host}:{port}/{self.airflow_db}"

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """confluent-kafka client configuration for this deployment (with its SASL login)."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.kafka_security(), **overrides}

    def kafka_security(self) -> dict[str, str]:
        """The clients' security settings: none on PLAINTEXT, else security.protocol and sasl.*
        (SettingsError naming KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD when one is unset)."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        self.require("kafka_sasl_username")
        return {
            "security.protocol": self.kafka_security_protocol,
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": str(self.kafka_sasl_username),
            "sasl.password": self.secret("kafka_sasl_password"),
        }

    def airflow_connections(self) -> dict[str, str]:
        """The AIRFLOW_CONN_* variables: `kafka_default`, `kafka_members_watch` and `gremio_db`."""
        kafka = {
            "conn_type": "kafka",
            "extra": {
                "bootstrap.servers": self.bootstrap_servers,
                **self.kafka_security(),
                "group.id": "airflow-drain",
            },
        }
        # The members_premium AssetWatcher's trigger subscribes with the connection's own
        # settings: its own group, and from the start of `members` the first time, so
        # applications sent before the triggerer first ran are noticed too.
        members_watch = {
            "conn_type": "kafka",
            "extra": {
                "bootstrap.servers": self.bootstrap_servers,
                **self.kafka_security(),
                "group.id": "airflow-members-premium-watch",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": "false",
            },
        }
        return {
            "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(kafka),
            "AIRFLOW_CONN_KAFKA_MEMBERS_WATCH": json.dumps(members_watch),
            # The DAGs' database connection: the gremio_airflow role (sql/060_roles.sql).
            "AIRFLOW_CONN_GREMIO_DB": self.role_db_url("airflow"),
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


def weak_secret_reason(value: str) -> str | None:
    """Why this value cannot be a secret, or None when it can."""
    if not value.strip():
        return "is empty"
    if len(value.encode("utf-8")) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    lowered = value.lower()
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        return "is a placeholder from the documentation"
    return None


def _pg_url(user: str, password: str, port: int, db: str, host: str = "127.0.0.1") -> str:
    secret = quote(password, safe="")
    return f"postgresql://{quote(user, safe='')}:{secret}@{host}:{port}/{db}"


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def local_secrets_file() -> Path:
    """The local stack's generated secrets (`make up`), under LOCAL_DIR."""
    return Path(os.environ.get("LOCAL_DIR") or REPO_ROOT / ".local") / "secrets.env"


def load(**values: Any) -> Settings:
    """Settings from the environment, `.local/secrets.env` and `.env`, or SettingsError:
    one line naming the refused setting and why, never its value."""
    try:
        return Settings(_env_file=(local_secrets_file(), REPO_ROOT / ".env"), **values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"setting {name} {reason} (see .env.example and docs/SECURITY.md)") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use (SettingsError when one is refused)."""
    return load()


def env_names() -> set[str]:
    """Every environment variable the settings read."""
    return {name.upper() for name in Settings.model_fields}
