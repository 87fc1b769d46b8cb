"""The settings object: defaults from DESIGN, and .env.example in step with it."""

from __future__ import annotations

import re

import pytest

from gremio.credentials import SECRETS, ensure_local_secrets, read_env_file, write_deployment_env
from gremio.settings import REPO_ROOT, Settings, SettingsError, env_names, load, weak_secret_reason


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
    owner, airflow = "o" * 32, "a" * 32
    s = Settings(_env_file=None, postgres_password=owner, airflow_db_password=airflow)
    assert s.uses_local_kafka and s.uses_local_postgres
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.db_url == f"postgresql://gremio:{owner}@127.0.0.1:5433/gremio"
    assert s.airflow_db_url == f"postgresql+psycopg2://airflow:{airflow}@127.0.0.1:5433/airflow"


def test_environment_overrides_and_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:s3cret@db.example:5432/g")  # pragma: allowlist secret
    monkeypatch.setenv("CART_TOKEN_SECRET", "topsecret-topsecret-topsecret-topsecret")
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
    monkeypatch.setenv("PG_AIRFLOW_PASSWORD", "a/" * 16)
    conns = Settings(_env_file=None).airflow_connections()
    assert '"bootstrap.servers": "broker:1234"' in conns["AIRFLOW_CONN_KAFKA_DEFAULT"]
    # Same server and database, as the DAGs' own role.
    assert conns["AIRFLOW_CONN_GREMIO_DB"] == "postgresql://gremio_airflow:" + "a%2F" * 16 + "@db:5432/g"


def test_each_process_picks_its_database_role(monkeypatch):
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    passwords = {
        "postgres_password": "o" * 32,
        "pg_stock_password": "s" * 32,
        "pg_locations_password": "l" * 32,
    }
    s = Settings(_env_file=None, db_role="stock", **passwords)
    assert s.db_url == f"postgresql://gremio_stock:{'s' * 32}@127.0.0.1:5433/gremio"
    assert s.role_db_url("owner") == f"postgresql://gremio:{'o' * 32}@127.0.0.1:5433/gremio"
    assert Settings(_env_file=None, db_role="locations", **passwords).db_url.startswith(
        "postgresql://gremio_locations:"
    )
    with pytest.raises(SettingsError, match="PG_AIRFLOW_PASSWORD is not set"):
        _ = Settings(_env_file=None, db_role="airflow", **passwords).db_url
    # A DATABASE_URL is used as given, whatever DB_ROLE says.
    given = "postgresql://gremio_stock:x@db:5432/g"  # pragma: allowlist secret
    assert Settings(_env_file=None, db_role="locations", database_url=given, **passwords).db_url == given


# --- secrets (issue 14) ---------------------------------------------------------------------

WEAK = {
    "": "is empty",
    "   ": "is empty",
    "s3cr3t": "is shorter than 32 bytes",
    "dev-only-cart-token-secret-change-me": "is a placeholder",
    "change-me-shared-by-every-airflow-component": "is a placeholder",
    "<generate with gremio secrets, 32 bytes or more>": "is a placeholder",
}


@pytest.mark.parametrize(("value", "reason"), WEAK.items())
def test_weak_secrets_stop_the_process_with_one_line_naming_the_setting(monkeypatch, value, reason):
    monkeypatch.setenv("CART_TOKEN_SECRET", value)
    with pytest.raises(SettingsError) as refused:
        load()
    line = str(refused.value)
    assert line.startswith("gremio: setting CART_TOKEN_SECRET ") and reason in line
    assert "\n" not in line
    if value.strip():
        assert value not in line  # the refused value is never echoed


def test_a_missing_secret_is_named_where_it_is_needed(monkeypatch):
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    with pytest.raises(SettingsError, match=r"^gremio: setting CART_TOKEN_SECRET is not set"):
        s.secret("cart_token_secret")
    with pytest.raises(SettingsError, match="POSTGRES_PASSWORD is not set"):
        _ = s.db_url


def test_every_secret_setting_is_generated_somewhere():
    """A SecretStr field nobody generates would make `make up` or compose fail on a fresh clone."""
    secret_fields = {
        name.upper() for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
    }
    generated = {s.name for s in SECRETS}
    optional = {"CART_TOKEN_PREVIOUS_SECRET"}  # only during a rotation (docs/SECURITY.md)
    # The staff login's: made from staff-login.json by `make up` and `gremio secrets`
    # (credentials.ensure_staff_login); STAFF_PASSWORD only for clients of other deployments.
    optional |= {"STAFF_PASSWORD_HASH", "STAFF_PASSWORD"}
    # A Kafka client's login: compose sets it to its principal's KAFKA_<NAME>_PASSWORD.
    optional |= {"KAFKA_SASL_PASSWORD"}
    assert secret_fields - optional <= generated


def test_generated_files_are_private_fresh_and_kept(tmp_path):
    env = tmp_path / ".env"
    first = write_deployment_env(env)
    assert set(first) == {s.name for s in SECRETS}
    assert env.stat().st_mode & 0o777 == 0o600
    values = read_env_file(env)
    assert all(weak_secret_reason(values[name]) is None for name in first)
    assert len(set(values.values())) == len(values)  # each one its own
    assert write_deployment_env(env) == []  # a second run changes nothing
    assert read_env_file(env) == values
    local = ensure_local_secrets(tmp_path / "local")
    assert "CART_TOKEN_SECRET" in local and "AIRFLOW_JWT_SECRET" not in local
    assert (
        read_env_file(tmp_path / "local" / "secrets.env")["CART_TOKEN_SECRET"] != values["CART_TOKEN_SECRET"]
    )


def test_the_repository_ships_no_usable_secret():
    """.env.example and docker-compose.yaml hold no value the settings would accept as a secret."""
    example = (REPO_ROOT / ".env.example").read_text()
    for line in example.splitlines():
        name, _, value = line.lstrip("# ").partition("=")
        if name in {s.name for s in SECRETS} and value:
            assert weak_secret_reason(value), f".env.example ships a usable {name}"
