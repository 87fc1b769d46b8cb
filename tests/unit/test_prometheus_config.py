"""Prometheus's and Alertmanager's configurations (gremio/stack/prometheus.py).

The compose files in deploy/prometheus/compose/ are what compose_prometheus_config() and
compose_alertmanager_config() render; the local stack's scrape targets follow the settings'
ports (one per instance in the cluster topology); and Debian's promtool (the same Prometheus
2.42 as compose's image) and amtool accept what is written.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from gremio.settings import REPO_ROOT, Settings
from gremio.stack import prometheus

COMPOSE_DIR = REPO_ROOT / "deploy" / "prometheus" / "compose"
REGENERATE = (
    '.venv/bin/python -c "from gremio.stack.prometheus import compose_{0}_config; '
    "print(compose_{0}_config(), end='')\" > deploy/prometheus/compose/{0}.yml"
)


def _tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        pytest.fail(
            f"{name} is missing: run deploy/os-packages.sh (Debian's prometheus packages)", pytrace=False
        )
    return found


@pytest.mark.parametrize("name", ["prometheus", "alertmanager"])
def test_the_compose_files_are_what_the_module_renders(name):
    rendered = getattr(prometheus, f"compose_{name}_config")()
    written = (COMPOSE_DIR / f"{name}.yml").read_text()
    assert written == rendered, f"deploy/prometheus/compose/{name}.yml is stale: {REGENERATE.format(name)}"


def _ports(jobs: dict[str, list[str]]) -> dict[str, set[int]]:
    return {job: {int(target.rsplit(":", 1)[1]) for target in hosts} for job, hosts in jobs.items()}


def test_the_local_targets_are_the_settings_ports():
    settings = Settings.model_construct(topology="single")
    jobs = prometheus.targets(settings)
    ports = _ports(jobs)
    assert ports["api"] == {settings.api_port}
    assert ports["locations"] == {settings.live_port}
    assert ports["stock"] == {settings.stock_metrics_port}
    assert ports["monitor"] == {settings.monitor_port}
    assert ports["prometheus"] == {settings.prometheus_port}
    assert ports["alertmanager"] == {settings.alertmanager_port}
    assert all(target.startswith("127.0.0.1:") for hosts in jobs.values() for target in hosts)


def test_the_cluster_targets_are_every_instance():
    settings = Settings.model_construct(topology="cluster")
    ports = _ports(prometheus.targets(settings))
    assert ports["api"] == set(settings.cluster_api_ports)
    assert ports["locations"] == set(settings.cluster_live_ports)
    assert ports["stock"] == set(settings.cluster_stock_metrics_ports)
    assert ports["monitor"] == {settings.monitor_port}


def test_compose_scrapes_every_replica_by_the_service_name():
    config = yaml.safe_load(prometheus.compose_prometheus_config())
    jobs = {scrape["job_name"]: scrape for scrape in config["scrape_configs"]}
    defaults = Settings.model_construct()
    for job, port in (
        ("api", defaults.api_port),
        ("stock", defaults.stock_metrics_port),
        ("locations", defaults.live_port),
    ):
        assert jobs[job]["dns_sd_configs"] == [{"names": [job], "type": "A", "port": port}]
        assert "static_configs" not in jobs[job]
    # The location service's /metrics wants the staff login off loopback.
    assert jobs["locations"]["basic_auth"] == {
        "username": defaults.staff_user,
        "password_file": "/run/secrets/staff_password",
    }
    assert not {"basic_auth"} & (set(jobs["api"]) | set(jobs["stock"]) | set(jobs["monitor"]))


def test_promtool_and_amtool_accept_the_compose_files():
    done = subprocess.run(
        [_tool("promtool"), "check", "config", "--syntax-only", str(COMPOSE_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [_tool("amtool"), "check-config", str(COMPOSE_DIR / "alertmanager.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("topology", ["single", "cluster"])
def test_promtool_and_amtool_accept_what_write_configs_writes(tmp_path, topology):
    settings = Settings.model_construct(
        topology=topology, alertmanager_webhook_token=SecretStr(secrets.token_urlsafe(32))
    )
    prometheus.write_configs(tmp_path, settings)
    done = subprocess.run(
        [_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [_tool("amtool"), "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    token = tmp_path / prometheus.BEARER_FILE
    assert token.read_text() == settings.secret("alertmanager_webhook_token")
    assert token.stat().st_mode & 0o777 == 0o600
