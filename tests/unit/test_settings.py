"""The settings object: defaults from DESIGN, and .env.example in step with it."""

from __future__ import annotations

import re

from gremio.settings import REPO_ROOT, Settings, env_names


def _example_names() -> set[str]:
    text = (REPO_ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def test_env_example_lists_every_setting():
    missing = env_names() - _example_names()
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_example_lists_nothing_unknown():
    airflow = {"AIRFLOW_CONN_KAFKA_DEFAULT", "AIRFLOW_CONN_KAFKA_MEMBERS_WATCH", "AIRFLOW_CONN_GREMIO_DB"}
    unknown = _example_names() - env_names() - airflow
    assert not unknown, f".env.example has {sorted(unknown)} that no setting reads"


def test_rule_defaults_are_the_designs(monkeypatch):
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    assert (s.stock_batch_size, s.stock_batch_flush_seconds, s.stock_threshold) == (5, 2.0, 20)
    assert (s.stock_refill_target, s.stock_order_multiple) == (100, 10)
    assert s.live_ttl_seconds == 60
    assert s.report_window_seconds == 600
    assert s.jump_speed_kmh == 30
    assert (s.service_area_lat_min, s.service_area_lat_max) == (-33.75, -33.15)
    assert (s.service_area_lon_min, s.service_area_lon_max) == (-70.95, -70.40)
    assert s.fugitive_match_radius_m == 100
    assert s.alert_suppress_seconds == 300
    assert (s.frequent_client_min_purchases, s.frequent_client_window_days, s.frequent_clients_max) == (
        2,
        30,
        3,
    )
    assert (s.max_body_bytes, s.max_batch_body_bytes, s.max_batch_items) == (16 * 1024, 256 * 1024, 500)
    assert s.delivery_timeout_seconds == 5
    assert s.guild_timezone == "America/Santiago"
    assert (s.kafka_port, s.postgres_port, s.airflow_port, s.api_port, s.live_port) == (
        9092,
        5433,
        8080,
        8000,
        8001,
    )


def test_unset_addresses_mean_the_local_stack(monkeypatch):
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    assert s.uses_local_kafka and s.uses_local_postgres
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.db_url == "postgresql://gremio:gremio@127.0.0.1:5433/gremio"
    assert s.airflow_db_url == "postgresql+psycopg2://airflow:airflow@127.0.0.1:5433/airflow"


def test_environment_overrides_and_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:s3cret@db.example:5432/g")  # pragma: allowlist secret
    monkeypatch.setenv("CART_TOKEN_SECRET", "topsecret")
    monkeypatch.setenv("STOCK_THRESHOLD", "25")
    s = Settings(_env_file=None)
    assert s.stock_threshold == 25
    assert not s.uses_local_postgres
    shown = repr(s) + str(s.masked())
    assert "s3cret" not in shown
    assert "topsecret" not in shown


def test_airflow_connections_point_at_the_same_services(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:1234")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/g")
    conns = Settings(_env_file=None).airflow_connections()
    assert '"bootstrap.servers": "broker:1234"' in conns["AIRFLOW_CONN_KAFKA_DEFAULT"]
    assert conns["AIRFLOW_CONN_GREMIO_DB"] == "postgresql://u:p@db:5432/g"
