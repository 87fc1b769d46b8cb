"""nginx (Debian's package, 1.22) in front of N ingest API instances, on loopback.

    write_config(folder, listen_port, [api_port_1, api_port_2], settings)
    command(folder)   # nginx -p FOLDER -c FOLDER/nginx.conf -g 'daemon off;'

nginx runs in the foreground (`daemon off`, so supervisor or a test owns the process) with
everything under `folder`: the pid file, the error log and every temp path. Nothing it
writes is root's (`/run`, `/var/log/nginx`, `/var/lib/nginx` are never touched), and it
never needs Debian's `nginx.service`, which os-packages.sh leaves stopped. Graceful stop:
SIGQUIT (in-flight requests finish); SIGTERM is nginx's fast stop.

**Retries: the next instance on connection errors only.** `proxy_next_upstream error
timeout` sends a request to the other instance when nginx could not reach this one
(refused, reset before any answer, connect timeout), which is what a killed or stopped
instance looks like. nginx never passes a POST on once it has been sent to an instance
(no `non_idempotent`): if the instance dies after reading it, the sale may already be on
the broker, and only the client can retry it safely, with its Idempotency-Key (the same
record id, docs/API.md "Idempotency"). Neither are answers retried here (no `http_502`,
`http_503`...): the API's 503 means the broker did not acknowledge in time, the same broker
the other instance writes to, and its 429 and 4xx are the client's to read. So a client
sees a 502 only when its request was already in an instance that died, or when no instance
is up; either way it retries with the same key.

**The client's address.** `X-Forwarded-For` is set to the address of the peer nginx
accepted, *replacing* whatever the client sent (not `$proxy_add_x_forwarded_for`, which
appends to a client-supplied list an API would then have to pick apart): so one proxy hop,
and its value cannot be spoofed. `X-Real-IP` carries the same, `X-Forwarded-Proto` the
scheme, `Host` the client's Host. The API trusts exactly that one hop with
`API_PROXY_HOPS=1` (werkzeug's `ProxyFix(x_for=1)`), so its per-client rate limits see clients rather
than nginx; see docs/SCALING.md, "Two API instances behind nginx".

**Limits and timeouts**, from the API's settings: bodies up to MAX_BATCH_BODY_BYTES (the
largest the API takes, /v1/sales/batch; the API refuses a single record over MAX_BODY_BYTES
itself with its own 413 problem), held in memory (no temp files); the upstream read timeout
a little over gunicorn's worker timeout (30 s), so a slow broker gets the API's 503 rather
than nginx's 504; a short connect timeout (loopback: a dead instance refuses at once), after
which the instance is skipped for FAIL_TIMEOUT seconds. Upstream connections are kept alive
for less than gunicorn's keep-alive (5 s), so nginx never reuses one gunicorn has closed.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from gremio.settings import REPO_ROOT, Settings, get_settings

CONFIG = "nginx.conf"
STOPSIGNAL = "QUIT"  # graceful: for supervisor's stopsignal
CONNECT_TIMEOUT = 2  # s; loopback, a dead instance refuses at once
FAIL_TIMEOUT = 5  # s an instance is skipped after a failed connection
UPSTREAM_READ_TIMEOUT = 35  # s; gunicorn's worker timeout is 30 (ingest_api/gunicorn_conf.py)
UPSTREAM_KEEPALIVE = 4  # s; under gunicorn's keepalive = 5
# Each *_temp_path directive and its folder, one level under the prefix (the official image's
# /var/cache/nginx layout, so the compose file's nginx needs no folder made for it).
TEMP_DIRS = {
    "client_body": "client_temp",
    "proxy": "proxy_temp",
    "fastcgi": "fastcgi_temp",
    "uwsgi": "uwsgi_temp",
    "scgi": "scgi_temp",
}
# docker-compose.cluster.yaml's nginx (the official image) runs this file: `compose_config()`,
# and tests/unit/test_nginx_config.py checks it is up to date.
COMPOSE_CONFIG = REPO_ROOT / "deploy" / "nginx" / "cluster.conf"


def nginx_bin() -> str:
    """Debian's nginx (os-packages.sh installs it); PATH first, then /usr/sbin."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError("nginx is not installed: run deploy/os-packages.sh (apt-get install nginx)")
    return found


def ensure_installed() -> str:
    """nginx_bin(), installing Debian's package first if it is missing (`make up-cluster`),
    with the package's own service stopped again, as deploy/os-packages.sh leaves it."""
    try:
        return nginx_bin()
    except FileNotFoundError:
        from gremio.stack.system import apt_install, can_install

        apt_install(["nginx"])
        prefix = can_install() or []
        if shutil.which("systemctl") and Path("/run/systemd/system").is_dir():
            subprocess.run([*prefix, "systemctl", "disable", "--now", "nginx"], capture_output=True)
        elif Path("/run/nginx.pid").is_file():
            subprocess.run([*prefix, nginx_bin(), "-s", "quit"], capture_output=True)
        return nginx_bin()


def command(folder: Path) -> list[str]:
    """The foreground nginx serving `folder`'s config (write_config first)."""
    folder = Path(folder).resolve()
    return [nginx_bin(), "-p", f"{folder}/", "-c", str(folder / CONFIG), "-g", "daemon off;"]


def config(
    folder: Path,
    listen_port: int,
    upstream_ports: Sequence[int | str],
    settings: Settings | None = None,
    listen_host: str = "127.0.0.1",
    *,
    user: str | None = None,
    error_log: str | None = None,
) -> str:
    """nginx.conf's text: `listen_host:listen_port` proxied to each upstream: a port on
    127.0.0.1, or a host:port (compose's `api:8000`, every replica the name resolves to).
    `user` and `error_log` default to this machine's (_user_line, folder/logs/error.log)."""
    if not upstream_ports:
        raise ValueError("nginx needs at least one API instance behind it")
    settings = settings or get_settings()
    folder = Path(folder).resolve()
    body_limit = max(settings.max_body_bytes, settings.max_batch_body_bytes)
    servers = "\n".join(
        f"        server {f'127.0.0.1:{up}' if isinstance(up, int) else up} max_fails=1 fail_timeout={FAIL_TIMEOUT}s;"
        for up in upstream_ports
    )
    temp = "\n".join(f"    {name}_temp_path {folder / sub};" for name, sub in TEMP_DIRS.items())
    user_line = f"user {user};\n" if user else _user_line()
    return f"""# written by gremio/stack/nginx.py; run: nginx -p {folder}/ -c {folder / CONFIG} -g 'daemon off;'
{user_line}worker_processes 1;
pid {folder / "nginx.pid"};
error_log {error_log or folder / "logs" / "error.log"} warn;

events {{
    worker_connections 1024;
}}

http {{
{temp}
    access_log off;  # the API counts every request in /metrics, as gunicorn keeps no access log
    server_tokens off;
    client_max_body_size {body_limit};
    client_body_buffer_size {body_limit};  # bodies stay in memory, never in temp files
    client_header_timeout 10s;
    client_body_timeout 10s;
    send_timeout 10s;
    keepalive_timeout 30s;  # carts reuse their connections

    upstream gremio_api {{
{servers}
        keepalive 32;
        keepalive_timeout {UPSTREAM_KEEPALIVE}s;
    }}

    server {{
        listen {listen_host}:{listen_port};

        location / {{
            proxy_pass http://gremio_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;  # replaces the client's: one hop
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout {CONNECT_TIMEOUT}s;
            proxy_send_timeout 10s;
            proxy_read_timeout {UPSTREAM_READ_TIMEOUT}s;
            # Another instance on connection errors; never a POST already sent (module docstring).
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries {len(upstream_ports)};
            proxy_next_upstream_timeout {CONNECT_TIMEOUT * len(upstream_ports) + 1}s;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


def write_config(
    folder: Path,
    listen_port: int,
    upstream_ports: Sequence[int],
    settings: Settings | None = None,
    listen_host: str = "127.0.0.1",
) -> Path:
    """`folder`/nginx.conf, with the logs/ and temp/ folders it names; returns the config's path."""
    folder = Path(folder).resolve()
    for sub in ("logs", *TEMP_DIRS.values()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # Workers run as nobody (_user_line): they must reach the temp folders nginx chowns to them.
        folder.chmod(0o755)
    path = folder / CONFIG
    path.write_text(config(folder, listen_port, upstream_ports, settings, listen_host))
    return path


def compose_config() -> str:
    """deploy/nginx/cluster.conf: the official image's nginx on :8000 in front of every `api`
    replica, with the settings' defaults, its error log on stderr (`docker compose logs`)."""
    return config(
        Path("/var/cache/nginx"), 8000, ["api:8000"], Settings.model_construct(),
        listen_host="0.0.0.0", user="nginx", error_log="stderr",  # noqa: S104 - in its container; published on 127.0.0.1 only
    )  # fmt: skip


def _user_line() -> str:
    """As root, workers run as `nobody` and its own group (nginx's default, `nobody nobody`,
    names a group Debian does not have: nogroup). Otherwise no `user` line: nginx can only
    run as whoever started it, and says so if told otherwise."""
    if os.geteuid() != 0:
        return ""
    nobody = pwd.getpwnam("nobody")
    return f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};\n"
