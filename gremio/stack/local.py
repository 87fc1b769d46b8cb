"""`gremio up | down | status`: the whole platform on one machine (DESIGN §7)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gremio import credentials, db, db_roles
from gremio import kafka as gk
from gremio import topics as t
from gremio.settings import REPO_ROOT, Settings
from gremio.stack import airflow as af
from gremio.stack import nginx
from gremio.stack import prometheus as prom
from gremio.stack.kafka_broker import KafkaBroker, ensure_jars
from gremio.stack.kafka_cluster import KafkaCluster, leadership
from gremio.stack.postgres import PostgresCluster, bin_dir, service_user
from gremio.stack.supervisor import Program, Supervisor, group_pss_kib
from gremio.stack.system import StackError, check_ports_free

log = logging.getLogger(__name__)

PYTHON = sys.executable
BIN = Path(sys.executable).parent


def kafka_broker(settings: Settings, libs: Path | None = None) -> KafkaBroker:
    return KafkaBroker(
        data_dir=settings.local_dir / "kafka" / "node",
        port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        libs=libs or settings.local_dir / "kafka" / "libs",
        heap=settings.kafka_heap,
    )


def kafka_cluster(settings: Settings, libs: Path | None = None) -> KafkaCluster:
    """`make up-cluster`'s three KRaft nodes (CLUSTER_KAFKA_PORTS, CLUSTER_KAFKA_CONTROLLER_PORTS)."""
    return KafkaCluster(
        root=settings.local_dir / "kafka" / "cluster",
        ports=tuple(settings.cluster_kafka_ports),
        controller_ports=tuple(settings.cluster_kafka_controller_ports),
        libs=libs or settings.local_dir / "kafka" / "libs",
        heap=settings.kafka_heap,
    )


def postgres_cluster(settings: Settings, bindir: Path | None = None) -> PostgresCluster:
    return PostgresCluster(
        root=settings.local_dir / "pg",
        port=settings.postgres_port,
        bindir=bindir or Path("/usr/lib/postgresql/bin"),
        user=service_user(),
    )


def kafka_programs(settings: Settings, kafka: KafkaBroker | KafkaCluster) -> list[Program]:
    """The broker's process, or one per node of the cluster (kafka-1, kafka-2, kafka-3)."""
    if isinstance(kafka, KafkaBroker):
        return [Program("kafka", kafka.command(), priority=10, stopwaitsecs=60, startsecs=5)]
    # Stopped together, the last node of the quorum cannot finish a controlled shutdown (no
    # controller left to hand its partitions to) and waits until killed: 20 s, not 60. A
    # killed node loses nothing acknowledged (the page cache survives the process).
    return [
        Program(f"kafka-{node.node_id}", node.command(), priority=10, stopwaitsecs=20, startsecs=5)
        for node in kafka.nodes
    ]


def programs(
    settings: Settings, kafka: KafkaBroker | KafkaCluster | None, pg: PostgresCluster | None
) -> list[Program]:
    """Every process of the local stack, in start order (without Kafka and PostgreSQL if None)."""
    progs: list[Program] = []
    if kafka:
        progs += kafka_programs(settings, kafka)
    if pg:
        progs.append(Program("postgres", pg.command(), priority=10, user=pg.user, stopsignal="INT"))
    progs.append(Program("redis", redis_command(settings), priority=10))
    airflow = af.airflow_bin()
    for component in af.COMPONENTS:
        progs.append(
            Program(
                f"airflow-{component}", [airflow, component], priority=50, stopwaitsecs=60,
                environment={"DB_ROLE": "airflow"},
            )
        )  # fmt: skip
    if settings.is_cluster:  # the CeleryExecutor's workers, each with its own log server
        for i, port in enumerate(settings.cluster_airflow_worker_log_ports, 1):
            env = {"DB_ROLE": "airflow", "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port)}
            progs.append(
                Program(
                    f"airflow-worker-{i}", af.worker_command(i), priority=55, stopwaitsecs=60, environment=env
                )
            )
    api = [
        str(BIN / "gunicorn"),
        "-c",
        str(REPO_ROOT / "ingest_api" / "gunicorn_conf.py"),
        "ingest_api:create_app()",
    ]
    # Each service connects as its own database role (sql/060_roles.sql), never as the owner.
    stock, locations = [PYTHON, "-m", "consumers.stock"], [PYTHON, "-m", "consumers.locations"]
    if not settings.is_cluster:
        progs += [
            Program("api", api, priority=60),
            Program("stock", stock, priority=60, environment={"DB_ROLE": "stock"}),
            Program("locations", locations, priority=60, environment={"DB_ROLE": "locations"}),
        ]
    else:  # two of each, in their groups; the API's behind nginx on API_PORT
        for i, port in enumerate(settings.cluster_api_ports, 1):
            progs.append(
                Program(
                    f"api-{i}", api, priority=60, environment={"API_PORT": str(port), "API_PROXY_HOPS": "1"}
                )
            )
        progs.append(
            Program("nginx", nginx.command(nginx_dir(settings)), priority=65, stopsignal=nginx.STOPSIGNAL)
        )
        replicas = (
            ("stock", stock, "STOCK_METRICS_PORT", settings.cluster_stock_metrics_ports),
            ("locations", locations, "LIVE_PORT", settings.cluster_live_ports),
        )
        for name, command, port_setting, ports in replicas:
            for i, port in enumerate(ports, 1):
                env = {"DB_ROLE": name, port_setting: str(port)}
                progs.append(Program(f"{name}-{i}", command, priority=60, environment=env))
    # Operations: the monitor (lag, replication, reports; Alertmanager's webhook), Prometheus
    # scraping every instance, Alertmanager (docs/OPERATIONS.md, "Monitoring").
    folder = prometheus_dir(settings)
    progs += [
        Program("monitor", [PYTHON, "-m", "gremio.monitor"], priority=60, environment={"DB_ROLE": "monitor"}),
        Program("prometheus", prom.prometheus_command(folder, settings), priority=65),
        Program("alertmanager", prom.alertmanager_command(folder, settings), priority=65),
    ]
    if settings.simulate:
        progs.append(Program("simulator", [PYTHON, "-m", "gremio.cli", "simulate"], priority=70))
    return progs


def prometheus_dir(settings: Settings) -> Path:
    return settings.local_dir / "prometheus"


def nginx_dir(settings: Settings) -> Path:
    return settings.local_dir / "nginx"


def redis_command(settings: Settings) -> list[str]:
    """Debian's redis-server for the API's shared rate-limit counters: loopback only, protected
    mode, no persistence (`--save` alone: no snapshots; counters are minutes long)."""
    return [
        "redis-server", "--bind", "127.0.0.1", "--port", str(settings.redis_port),
        "--protected-mode", "yes", "--save", "--appendonly", "no",
        "--dir", str(settings.local_dir / "redis"),
    ]  # fmt: skip


def _ports(settings: Settings) -> list[tuple[int, str]]:
    ports = [
        (settings.airflow_port, "AIRFLOW_PORT"),
        (settings.airflow_worker_log_port, "AIRFLOW_WORKER_LOG_PORT"),
        (settings.airflow_trigger_log_port, "AIRFLOW_TRIGGER_LOG_PORT"),
        (settings.api_port, "API_PORT"),
        (settings.live_port, "LIVE_PORT"),
        (settings.stock_metrics_port, "STOCK_METRICS_PORT"),
        (settings.redis_port, "REDIS_PORT"),
        (settings.monitor_port, "MONITOR_PORT"),
        (settings.prometheus_port, "PROMETHEUS_PORT"),
        (settings.alertmanager_port, "ALERTMANAGER_PORT"),
    ]
    if settings.is_cluster:
        ports = [(p, n) for p, n in ports if n not in ("API_PORT", "LIVE_PORT", "STOCK_METRICS_PORT")]
        ports.append((settings.api_port, "API_PORT"))  # nginx
        names = ("cluster_api_ports", "cluster_live_ports", "cluster_stock_metrics_ports")
        for name in (*names, "cluster_airflow_worker_log_ports"):
            ports += [(port, name.upper()) for port in getattr(settings, name)]
    if settings.uses_local_kafka and settings.is_cluster:
        for name in ("cluster_kafka_ports", "cluster_kafka_controller_ports"):
            ports += [(port, name.upper()) for port in getattr(settings, name)]
    elif settings.uses_local_kafka:
        ports += [
            (settings.kafka_port, "KAFKA_PORT"),
            (settings.kafka_controller_port, "KAFKA_CONTROLLER_PORT"),
        ]
    if settings.uses_local_postgres:
        ports.append((settings.postgres_port, "POSTGRES_PORT"))
    return ports


# --- up --------------------------------------------------------------------------------------


def up(settings: Settings) -> int:
    sup = Supervisor(settings.local_dir)
    if sup.running():
        running = settings.model_copy(update={"topology": None})
        if running.is_cluster != settings.is_cluster:
            shape = "the cluster" if running.is_cluster else "a single broker"
            raise StackError(f"gremio is already up as {shape}: `make down` first to change the topology")
        print("gremio is already up; making sure every part is started.")
        env = _stack_env(settings)
        os.environ.update(env)
        for prog in programs(settings, None, None):
            sup.start(prog.name)
        return report(settings, wait=60)

    check_ports_free(_ports(settings))  # before anything starts: nothing half-started
    (settings.local_dir / "redis").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    settings.topology_file.write_text(("cluster" if settings.is_cluster else "single") + "\n")
    kafka: KafkaBroker | KafkaCluster | None = None
    pg = None
    if settings.uses_local_kafka:
        libs = ensure_jars(settings.local_dir)
        kafka = kafka_cluster(settings, libs) if settings.is_cluster else kafka_broker(settings, libs)
        kafka.prepare()
    if settings.is_cluster:
        nginx.ensure_installed()
        nginx.write_config(nginx_dir(settings), settings.api_port, settings.cluster_api_ports, settings)
    if settings.uses_local_postgres:
        pg = postgres_cluster(settings, bin_dir())
        pg.prepare()
    prom.ensure_installed()
    prom.write_configs(prometheus_dir(settings), settings)
    progs = programs(settings, kafka, pg)
    sup.write(progs)
    env = _stack_env(settings)
    os.environ.update(env)
    sup.start_daemon(env)
    try:
        _start(settings, sup, progs, kafka, pg, env)
    except BaseException:
        print(f"gremio: start-up failed; stopping what was started. Logs: {sup.log_dir}", file=sys.stderr)
        sup.shutdown()
        raise
    print(f"started in {time.monotonic() - started:.0f} s")
    return report(settings, wait=180)


def _stack_env(settings: Settings) -> dict[str, str]:
    # The staff login, made on the first run and kept (.local/staff-login.json, 0600); the live
    # service gets its hash. The API counts its rate limits in the stack's redis-server.
    login_file = settings.local_dir / credentials.STAFF_LOGIN_FILE
    login = credentials.ensure_staff_login(login_file, settings.staff_user)
    shared_limits = {}
    if "rate_limit_storage_uri" not in settings.model_fields_set:  # unless set on purpose
        shared_limits["RATE_LIMIT_STORAGE_URI"] = f"redis://127.0.0.1:{settings.redis_port}/0"
    return {
        **af.environment(settings),
        **shared_limits,
        "STAFF_USER": login["user"],
        "STAFF_PASSWORD_HASH": credentials.staff_password_hash(login["password"]),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "GREMIO_LOG_FORMAT": "plain",
    }


def _start(
    settings: Settings,
    sup: Supervisor,
    progs: list[Program],
    kafka: KafkaBroker | KafkaCluster | None,
    pg: PostgresCluster | None,
    env: dict[str, str],
) -> None:
    brokers = [prog.name for prog in kafka_programs(settings, kafka)] if kafka else []
    for name in brokers:
        sup.start(name)
    if pg:
        sup.start("postgres")
        pg.wait_ready(timeout=60)
        pg.ensure_database(
            settings.postgres_user,
            settings.secret("postgres_password"),
            settings.postgres_db,
            createrole=True,
        )
        pg.ensure_database(
            settings.airflow_db_user, settings.secret("airflow_db_password"), settings.airflow_db
        )
    db.wait_for_db(settings, timeout=60)
    applied = db.migrate(settings)
    print(f"database: {len(applied)} migration(s) applied")
    print("database roles: " + ", ".join(db_roles.ensure_logins(settings)) + " can log in")
    gk.wait_for_broker(settings, timeout=90)
    done = gk.ensure_topics(settings=settings)
    print("topics: " + ", ".join(f"{name} {what}" for name, what in done.items()))
    print("airflow: migrating its metadata database (the first time takes a minute)")
    af.migrate(env)
    af.admin_password(settings)
    for prog in progs:
        if prog.name not in (*brokers, "postgres"):
            sup.start(prog.name)


# --- status ------------------------------------------------------------------------------------


@dataclass
class Check:
    part: str
    healthy: bool
    detail: str


def checks(settings: Settings) -> list[Check]:
    sup = Supervisor(settings.local_dir)
    states = sup.states()
    found: list[Check] = [_check_kafka(settings)]
    if settings.is_cluster and settings.uses_local_kafka:
        found += _check_brokers(settings)
    found += [_check_postgres(settings), _check_airflow(settings)]
    if settings.is_cluster:
        found += _check_workers(settings, states)
    staff = credentials.staff_basic_auth(settings)
    if not settings.is_cluster:
        found.append(_http_check("api", f"http://127.0.0.1:{settings.api_port}/readyz"))
        found.append(_http_check("stock", f"http://127.0.0.1:{settings.stock_metrics_port}/metrics"))
        live = f"http://127.0.0.1:{settings.live_port}/v1/live"
        found.append(_http_check("locations", live, staff))
    else:
        found.append(_http_check("nginx", f"http://127.0.0.1:{settings.api_port}/readyz"))
        for i, port in enumerate(settings.cluster_api_ports, 1):
            found.append(_http_check(f"api-{i}", f"http://127.0.0.1:{port}/readyz"))
        for i, port in enumerate(settings.cluster_stock_metrics_ports, 1):
            found.append(_http_check(f"stock-{i}", f"http://127.0.0.1:{port}/metrics"))
        for i, port in enumerate(settings.cluster_live_ports, 1):
            found.append(_http_check(f"locations-{i}", f"http://127.0.0.1:{port}/v1/live", staff))
    found.append(_check_redis(settings))
    found.append(_http_check("monitor", f"http://127.0.0.1:{settings.monitor_port}/healthz"))
    found.append(_check_prometheus(settings))
    found.append(_http_check("alertmanager", f"http://127.0.0.1:{settings.alertmanager_port}/-/ready"))
    if "simulator" in states or settings.simulate:
        state = states.get("simulator", "not started")
        found.append(Check("simulator", state == "RUNNING", state.lower()))
    for name, state in sorted(states.items()):
        if state not in ("RUNNING",) and not any(c.part == name for c in found):
            found.append(Check(name, False, state.lower()))
    return found


def _check_kafka(settings: Settings) -> Check:
    try:
        counts = gk.partition_counts(settings, timeout=3)
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        return Check("kafka", False, f"{settings.bootstrap_servers} unreachable: {exc}")
    short = [
        f"{tp.name} {counts.get(tp.name, 0)}/{tp.partitions}"
        for tp in t.TOPICS
        if counts.get(tp.name, 0) < tp.partitions
    ]
    shown = ", ".join(f"{tp.name}({counts.get(tp.name, 0)})" for tp in t.TOPICS)
    return Check(
        "kafka",
        not short,
        f"{settings.bootstrap_servers} topics: {shown}" + (f"; missing {short}" if short else ""),
    )


def _check_brokers(settings: Settings) -> list[Check]:
    """Each node of the cluster, the partitions it leads, and the partitions short of a replica."""
    from confluent_kafka.admin import AdminClient

    try:
        state = leadership(AdminClient(settings.kafka_config()), timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        return [Check("replication", False, f"no metadata: {exc}")]
    found = []
    for node_id, port in enumerate(settings.cluster_kafka_ports, 1):
        up_ = node_id in state.brokers
        leads = state.leaders.get(node_id, 0)
        found.append(
            Check(
                f"kafka-{node_id}",
                up_,
                f"127.0.0.1:{port}, " + (f"leads {leads} partitions" if up_ else "not in the cluster"),
            )
        )
    under, offline = state.under_replicated, state.offline
    detail = f"{len(under)} under-replicated, {len(offline)} offline partitions (3 replicas, min.insync.replicas 2)"
    if under or offline:
        detail += ": " + ", ".join(f"{p.topic}[{p.partition}]" for p in (*offline, *under)[:8])
    found.append(Check("replication", not under and not offline, detail))
    return found  # fmt: skip


def _check_postgres(settings: Settings) -> Check:
    try:
        applied = db.applied_migrations(settings)
    except Exception as exc:  # noqa: BLE001
        return Check("postgres", False, f"unreachable or not migrated: {str(exc).splitlines()[0]}")
    wanted = [p.stem for p in db.migration_files()]
    missing = [m for m in wanted if m not in applied]
    where = "127.0.0.1:" + str(settings.postgres_port) if settings.uses_local_postgres else "DATABASE_URL"
    return Check("postgres", not missing, f"{where}, migrations {len(applied)}/{len(wanted)} applied")


def _check_airflow(settings: Settings) -> Check:
    try:
        report_ = af.health(settings)
    except OSError as exc:
        return Check("airflow", False, f"http://127.0.0.1:{settings.airflow_port} unreachable: {exc}")
    bad = af.unhealthy_parts(report_)
    parts = ", ".join(f"{k} {v.get('status')}" for k, v in report_.items() if isinstance(v, dict))
    return Check("airflow", not bad, parts)


def _check_workers(settings: Settings, states: dict[str, str]) -> list[Check]:
    """Each Celery worker answers Celery's `inspect ping` over the broker (redis db 1)."""
    try:
        answered = af.ping_workers(settings)
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        answered, why = {}, f"no ping: {exc}"
    else:
        why = "no answer to celery's ping"
    found = []
    for i, port in enumerate(settings.cluster_airflow_worker_log_ports, 1):
        name = f"airflow-worker-{i}"
        node = next((n for n in answered if n.startswith(f"worker-{i}@")), None)
        state = states.get(name, "not started").lower()
        if node and answered[node]:
            found.append(
                Check(name, True, f"{node} answers ping, {af.CELERY_CONCURRENCY} slots, logs on :{port}")
            )
        else:
            found.append(Check(name, False, f"{why} ({state})"))
    return found


def _check_redis(settings: Settings) -> Check:
    import redis

    where = f"127.0.0.1:{settings.redis_port}"
    try:
        with redis.Redis(host="127.0.0.1", port=settings.redis_port, socket_timeout=3) as client:
            client.ping()
    except redis.RedisError as exc:
        return Check("redis", False, f"{where} unreachable: {exc}")
    what = "the API's rate-limit counters" + (" (db 0), Celery's queue (db 1)" if settings.is_cluster else "")
    return Check("redis", True, f"{where}, {what}")


def _check_prometheus(settings: Settings) -> Check:
    """Prometheus is ready, and every target it scrapes is up (or which are not)."""
    base = f"http://127.0.0.1:{settings.prometheus_port}"
    try:
        with urllib.request.urlopen(base + "/api/v1/targets?state=active", timeout=5) as answer:  # noqa: S310 - loopback URL
            active = json.load(answer)["data"]["activeTargets"]
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        return Check("prometheus", False, f"{base} unreachable: {exc}")
    down = sorted(
        f"{t['labels'].get('job')} {t['labels'].get('instance')}" for t in active if t["health"] != "up"
    )
    detail = f"{base}/targets: {len(active) - len(down)}/{len(active)} targets up"
    return Check(
        "prometheus", bool(active) and not down, detail + (f"; not up: {', '.join(down)}" if down else "")
    )


def _http_check(part: str, url: str, headers: dict[str, str] | None = None) -> Check:
    asked = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback URL
    try:
        with urllib.request.urlopen(asked, timeout=10) as response:  # noqa: S310 - loopback URL
            return Check(part, response.status == 200, f"{url} {response.status}")
    except Exception as exc:  # noqa: BLE001
        return Check(part, False, f"{url} {getattr(exc, 'code', '')} {getattr(exc, 'reason', exc)}".strip())


def report(settings: Settings, wait: float = 0) -> int:
    """Print each part's health (waiting up to `wait` s for all to be healthy) and the URLs."""
    from rich.console import Console
    from rich.table import Table

    deadline = time.monotonic() + wait
    found = checks(settings)
    while not all(c.healthy for c in found) and time.monotonic() < deadline:
        time.sleep(2)
        found = checks(settings)
    memory = program_memory(settings)
    table = Table(title="gremio", show_lines=False)
    table.add_column("part")
    table.add_column("health")
    table.add_column("memory (PSS)", justify="right")
    table.add_column("detail", overflow="fold")
    for c in found:
        pss = sum(kib for name, kib in memory.items() if name == c.part or name.startswith(c.part + "-"))
        table.add_row(c.part, "[green]healthy[/]" if c.healthy else "[red]unhealthy[/]", _mib(pss), c.detail)
    if memory:
        table.add_row("total", "", _mib(sum(memory.values())), "every process the stack started")
    console = Console(width=max(Console().width, 110))
    console.print(table)
    _print_guide(settings, console)
    return 0 if all(c.healthy for c in found) else 1


def program_memory(settings: Settings) -> dict[str, int]:
    """PSS in KiB of each running program, children included."""
    return {name: group_pss_kib(pid) for name, pid in Supervisor(settings.local_dir).pids().items()}


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB" if kib else ""


def _print_guide(settings: Settings, console) -> None:
    password_file = af.home(settings) / "passwords.json"
    password = af.admin_password(settings) if password_file.exists() else "(appears after make up)"
    staff = credentials.read_staff_login(settings.local_dir / credentials.STAFF_LOGIN_FILE)
    staff = staff or {"user": settings.staff_user, "password": "(appears after make up)"}
    live_ports = settings.cluster_live_ports if settings.is_cluster else [settings.live_port]
    live = " or ".join(f"http://127.0.0.1:{port}" for port in live_ports)
    cluster_api = ""
    if settings.is_cluster:
        instances = ", ".join(str(port) for port in settings.cluster_api_ports)
        cluster_api = f"\n              (nginx, over the API instances on {instances})"
    console.print(
        f"""
  Airflow     http://127.0.0.1:{settings.airflow_port}   login [bold]{settings.airflow_admin_user}[/] / [bold]{password}[/]
  API         http://127.0.0.1:{settings.api_port}        report page at /, docs at /openapi.json{cluster_api}
  Live map    {live}   login [bold]{staff["user"]}[/] / [bold]{staff["password"]}[/]   JSON at /v1/live, same login
  Prometheus  http://127.0.0.1:{settings.prometheus_port}/targets   alerts at /alerts, rules in deploy/prometheus/rules.yml
  Alerts      http://127.0.0.1:{settings.alertmanager_port}   Alertmanager; each alert also reaches `gremio watch` as an ops alert
  Logs        {settings.local_dir / "logs"}/<part>.log
  Reports     {settings.reports_dir}
"""
    )


# --- down ---------------------------------------------------------------------------------------


def down(settings: Settings) -> int:
    sup = Supervisor(settings.local_dir)
    if not sup.running():
        print("gremio is not running.")
    elif not sup.shutdown():
        print("gremio: supervisord did not stop in time", file=sys.stderr)
    settings.topology_file.unlink(missing_ok=True)  # the next `make up` is single unless told
    leftovers = stray_processes(settings)
    for pid, cmd in leftovers:
        print(f"stopping leftover process {pid}: {cmd[:100]}")
        _kill(pid)
    print("gremio is down.")
    return 0


def stray_processes(settings: Settings) -> list[tuple[int, str]]:
    """Processes that belong to this stack (by their command line) and are still alive."""
    markers = (str(settings.local_dir), str(REPO_ROOT / "dags"))
    me = os.getpid()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in markers):
            found.append((int(proc.name), cmd))
    return found


def _kill(pid: int) -> None:
    for sig, pause in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 1.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


__all__ = ["StackError", "down", "report", "up"]
