"""Prometheus and Alertmanager (Debian's packages) for the local stack, configured from the settings.

    write_configs(folder, settings)   # prometheus.yml, rules.yml, alertmanager.yml, the token file
    prometheus_command(folder, settings), alertmanager_command(folder, settings)

The scrape targets come from the same settings as the ports the services listen on (one
target per instance in the cluster profile), so the two cannot drift. The alert rules are
deploy/prometheus/rules.yml, copied with every `for:` multiplied by ALERT_FOR_SCALE (1 unless
a drill shortens them). Alertmanager sends every notification, and its resolution, to the
monitor's webhook with the bearer token in a 0600 file. Both listen on loopback only;
Alertmanager's gossip (for a highly available pair) is off: one instance.

docker compose uses compose_prometheus_config(), written to deploy/prometheus/compose/ and
checked against it by a test, with the services' names for hosts.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from gremio.credentials import write_private
from gremio.settings import REPO_ROOT, Settings

RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"
BEARER_FILE = "webhook-token"
DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?")


def binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if not found:
        package = "prometheus-alertmanager" if "alertmanager" in name else "prometheus"
        raise FileNotFoundError(f"{name} is missing: run deploy/os-packages.sh (Debian's {package})")
    return found


def ensure_installed() -> None:
    """Install Debian's prometheus and prometheus-alertmanager if missing (`make up`)."""
    from gremio.stack.system import apt_install

    missing = [
        package
        for command, package in (
            ("prometheus", "prometheus"),
            ("prometheus-alertmanager", "prometheus-alertmanager"),
        )
        if not shutil.which(command) and not Path(f"/usr/bin/{command}").exists()
    ]
    if missing:
        apt_install(missing)


def seconds(duration: str) -> int:
    match = DURATION.fullmatch(duration.strip())
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration this renderer knows: {duration!r}")
    h, m, s = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s


def rules(scale: float = 1.0, source: Path = RULES) -> dict[str, Any]:
    """deploy/prometheus/rules.yml, every `for:` multiplied by `scale` (at least 1 s)."""
    loaded = yaml.safe_load(source.read_text())
    if scale != 1.0:
        for group in loaded["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = f"{max(round(seconds(rule['for']) * scale), 1)}s"
    return loaded


def targets(settings: Settings, host: str = "127.0.0.1") -> dict[str, list[str]]:
    """Every scrape target, by job: one per instance of each service."""
    if settings.is_cluster:
        api, stock, live = (
            settings.cluster_api_ports,
            settings.cluster_stock_metrics_ports,
            settings.cluster_live_ports,
        )
    else:
        api, stock, live = [settings.api_port], [settings.stock_metrics_port], [settings.live_port]
    return {
        "api": [f"{host}:{port}" for port in api],
        "stock": [f"{host}:{port}" for port in stock],
        "locations": [f"{host}:{port}" for port in live],
        "monitor": [f"{host}:{settings.monitor_port}"],
        "prometheus": [f"{host}:{settings.prometheus_port}"],
        "alertmanager": [f"{host}:{settings.alertmanager_port}"],
    }


def prometheus_config(
    settings: Settings, jobs: dict[str, list[str]], alertmanager: str, rules_file: str
) -> dict:
    interval = f"{max(round(settings.monitor_interval_seconds), 1)}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [rules_file],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": hosts}]} for job, hosts in jobs.items()
        ],
    }


def alertmanager_config(webhook: str, token_file: str) -> dict:
    """One receiver, the monitor's webhook: every alert on its own (grouped by name and its
    subject), sent within seconds, repeated every 4 h while it fires, and once resolved."""
    return {
        "route": {
            "receiver": "gremio",
            "group_by": ["alertname", "job", "group", "instance"],
            "group_wait": "5s",
            "group_interval": "30s",
            "repeat_interval": "4h",
        },
        "receivers": [
            {
                "name": "gremio",
                "webhook_configs": [
                    {
                        "url": webhook,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials_file": token_file}},
                    }
                ],
            }
        ],
    }


def write_configs(folder: Path, settings: Settings) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "alertmanager-data").mkdir(exist_ok=True)
    (folder / "rules.yml").write_text(yaml.safe_dump(rules(settings.alert_for_scale), sort_keys=False))
    config = prometheus_config(
        settings, targets(settings), f"127.0.0.1:{settings.alertmanager_port}", str(folder / "rules.yml")
    )
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_private(folder / BEARER_FILE, settings.secret("alertmanager_webhook_token"))
    webhook = f"http://127.0.0.1:{settings.monitor_port}/v1/alertmanager"
    (folder / "alertmanager.yml").write_text(
        yaml.safe_dump(alertmanager_config(webhook, str(folder / BEARER_FILE)), sort_keys=False)
    )


def prometheus_command(folder: Path, settings: Settings) -> list[str]:
    return [
        binary("prometheus"),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        "--storage.tsdb.retention.time=2d",
        f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
    ]


def alertmanager_command(folder: Path, settings: Settings) -> list[str]:
    return [
        binary("prometheus-alertmanager"),
        f"--config.file={folder / 'alertmanager.yml'}",
        f"--storage.path={folder / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{settings.alertmanager_port}",
        "--cluster.listen-address=",  # no gossip: a single Alertmanager
    ]


def compose_prometheus_config() -> str:
    """deploy/prometheus/compose/prometheus.yml: the compose services by name, default ports.

    api, stock and locations run replicas behind one service name: Docker's DNS answers that
    name with every replica's address, so those jobs discover them (dns_sd_configs, type A)
    and scrape each. The location service's /metrics wants the staff login off loopback:
    basic auth, the password from the compose secret staff_password (`gremio secrets`)."""
    settings = Settings.model_construct()
    replicated = {
        "api": settings.api_port,
        "stock": settings.stock_metrics_port,
        "locations": settings.live_port,
    }
    jobs = {
        **{job: [f"{job}:{port}"] for job, port in replicated.items()},
        "monitor": [f"monitor:{settings.monitor_port}"],
        "prometheus": ["localhost:9090"],
        "alertmanager": ["alertmanager:9093"],
    }
    config = prometheus_config(settings, jobs, "alertmanager:9093", "/etc/prometheus/rules.yml")
    for scrape in config["scrape_configs"]:
        port = replicated.get(scrape["job_name"])
        if port is None:
            continue
        del scrape["static_configs"]
        scrape["dns_sd_configs"] = [{"names": [scrape["job_name"]], "type": "A", "port": port}]
        if scrape["job_name"] == "locations":
            scrape["basic_auth"] = {
                "username": settings.staff_user,
                "password_file": "/run/secrets/staff_password",
            }
    header = "# Generated by gremio.stack.prometheus.compose_prometheus_config(); tests/unit/test_prometheus_config.py checks it.\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def compose_alertmanager_config() -> str:
    config = alertmanager_config(
        "http://monitor:8005/v1/alertmanager", "/run/secrets/alertmanager_webhook_token"
    )
    header = "# Generated by gremio.stack.prometheus.compose_alertmanager_config(); tests/unit/test_prometheus_config.py checks it.\n"
    return header + yaml.safe_dump(config, sort_keys=False)
