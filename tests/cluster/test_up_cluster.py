"""`make up-cluster` for real (issue 17), started once for the module, on free ports in a
private folder: healthy with every part named, one live view through nginx, the Celery
worker drill, the drill that kills each other process in turn, then `make down` leaves
nothing behind.

The drill: a Celery worker is SIGKILLed, with everything it started, while `drain_sales`
runs on it, after the drain has committed a chunk and before it ends. The scheduler fails
that try when its heartbeats stop (TASK_INSTANCE_HEARTBEAT_TIMEOUT, gremio/stack/airflow.py),
the DAG's retries give it a second try, which the other worker runs (the killed one is kept
down until then, as a lost host would be), and the day's report files are byte-identical to
a second, undisturbed run of the same day, with the day's totals equal to the sales sent.
Figures go to test-artifacts/cluster/ and are printed, never asserted (the machine is shared).
"""

from __future__ import annotations

import base64
import concurrent.futures
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gremio.stack.system import free_port
from tests.integration.test_local_stack import GREMIO, PORTS, _gremio, _our_processes, private_env
from tests.support import http, new_plate, wait_for

CLUSTER_PORTS = {
    "CLUSTER_KAFKA_PORTS": 3,
    "CLUSTER_KAFKA_CONTROLLER_PORTS": 3,
    "CLUSTER_API_PORTS": 2,
    "CLUSTER_LIVE_PORTS": 2,
    "CLUSTER_STOCK_METRICS_PORTS": 2,
    "CLUSTER_AIRFLOW_WORKER_LOG_PORTS": 2,
}
WORKERS = ("airflow-worker-1", "airflow-worker-2")
ZONE = ZoneInfo("America/Santiago")  # GUILD_TIMEZONE's default, which the stack keeps
# Enough sales that the drain runs for seconds (about 20,000 records/s here) in several
# chunks of 50,000 rows, so the kill lands after a committed chunk and before the end.
PLATES, BATCHES_PER_PLATE, BATCH = 8, 40, 500
DAYS_BACK = 2  # the drill's day: a past day the API still takes sales for (SALES_MAX_AGE_DAYS)
DAY_SECONDS = 14 * 3600  # 09:00 to 23:00: however many batches a cart sends, all on its day
RESENDS = 120  # tries per batch, 0.5 s apart: a minute covers any one part's restart


@pytest.fixture(scope="module")
def up() -> Iterator[tuple[dict[str, str], str]]:
    """`gremio up --cluster` once for the module: its environment and what it printed."""
    root = Path(tempfile.mkdtemp(prefix="gremio-up-cluster-"))
    env = private_env(root, (*PORTS, "AIRFLOW_WORKER_LOG_PORT", "AIRFLOW_TRIGGER_LOG_PORT"))
    env.update({name: json.dumps([free_port() for _ in range(n)]) for name, n in CLUSTER_PORTS.items()})
    # No catch-up of past days: the only sales_daily runs are the drill's.
    env["SALES_DAILY_START_DATE"] = datetime.now(ZONE).date().isoformat()
    first = _gremio(env, "up", "--cluster")
    try:
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        yield env, first.stdout
    finally:
        subprocess.run([*GREMIO, "down"], env=env, capture_output=True, timeout=300)
        shutil.rmtree(root, ignore_errors=True)


def test_up_cluster_runs_three_brokers_and_two_of_each(up):
    """`make up-cluster` as a new user runs it (issue 17): healthy, every part named, one view."""
    env, printed = up
    parts = ("kafka-1", "kafka-2", "kafka-3", "replication", "nginx", "api-1", "api-2", "stock-1", "stock-2")
    for part in (*parts, "locations-1", "locations-2", "postgres", "airflow", *WORKERS, "redis"):
        assert part in printed, part
    assert "unhealthy" not in printed and "0 under-replicated, 0 offline" in printed
    assert re.search(r"airflow-worker-1 .*worker-1@\S+ answers ping", printed), printed

    # A ping through nginx is on both location instances' boards, whichever holds the cart.
    plate = new_plate()
    token = _gremio(env, "token", plate, timeout=60).stdout.strip()
    api = f"http://127.0.0.1:{env['API_PORT']}"
    ping = {"plate": plate, "lat": -33.44, "lon": -70.65}
    assert (
        http("POST", api + "/v1/locations", ping, headers={"Authorization": f"Bearer {token}"}).status == 202
    )
    login = json.loads((Path(env["LOCAL_DIR"]) / "staff-login.json").read_text())
    staff = {
        "Authorization": "Basic " + base64.b64encode(f"{login['user']}:{login['password']}".encode()).decode()
    }
    for port in json.loads(env["CLUSTER_LIVE_PORTS"]):
        board = f"http://127.0.0.1:{port}/v1/live"
        wait_for(
            lambda board=board: (
                plate in {c["plate"] for c in http("GET", board, headers=staff).json()["carts"]}
            ),
            timeout=60,
            what=f"the cart on {board}",
        )

    # The topology is remembered: a plain `up` keeps it, `status` shows it.
    again = _gremio(env, "up")
    assert again.returncode == 0 and "already up" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    status = _gremio(env, "status", "--wait", "60")
    assert status.returncode == 0 and "kafka-3" in status.stdout and "unhealthy" not in status.stdout, (
        status.stdout
    )


# --- the Celery worker drill ------------------------------------------------------------------


class Airflow:
    """Airflow's REST API as the printed admin login."""

    def __init__(self, env: dict[str, str], printed: str) -> None:
        self.base = f"http://127.0.0.1:{env['AIRFLOW_PORT']}"
        user, password = re.search(r"login (\S+) / (\S+)", printed).groups()
        login = http("POST", self.base + "/auth/token", {"username": user, "password": password})
        assert login.status == 201, login.body
        self.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    def get(self, path: str) -> dict:
        answer = http("GET", self.base + path, headers=self.headers)
        assert answer.status == 200, (path, answer.status, answer.body[:500])
        return answer.json()

    def trigger_day(self, day: str) -> str:
        """A manual sales_daily run for `day` (docs/SALES_DAILY.md: the config {"day": ...})."""
        body = {"logical_date": None, "conf": {"day": day}}
        answer = http("POST", self.base + "/api/v2/dags/sales_daily/dagRuns", body, headers=self.headers)
        assert answer.status == 200, answer.body[:500]
        return answer.json()["dag_run_id"]

    def run_state(self, run: str) -> str:
        return self.get(f"/api/v2/dags/sales_daily/dagRuns/{run}")["state"]

    def drain(self, run: str) -> dict:
        return self.get(f"/api/v2/dags/sales_daily/dagRuns/{run}/taskInstances/drain_sales")

    def drain_tries(self, run: str) -> list[dict]:
        path = f"/api/v2/dags/sales_daily/dagRuns/{run}/taskInstances/drain_sales/tries"
        return sorted(self.get(path)["task_instances"], key=lambda ti: ti["try_number"])

    def wait_done(self, run: str, timeout: float) -> str:
        return wait_for(
            lambda: (state := self.run_state(run)) in ("success", "failed") and state,
            timeout=timeout,
            interval=1,
            what=f"sales_daily {run} to finish",
        )


def _seed_day(
    env: dict[str, str], day: date, batches: int = BATCHES_PER_PLATE, until: threading.Event | None = None
) -> tuple[int, int]:
    """Sales of `day` through nginx, in batches a cart syncs (each with its Idempotency-Key,
    resent on any failure), one cart per thread, `batches` per cart and on until `until` is
    set; returns (sales, units) acknowledged."""
    api = f"http://127.0.0.1:{env['API_PORT']}"
    plates = [new_plate() for _ in range(PLATES)]
    tokens = {plate: _gremio(env, "token", plate, timeout=60).stdout.strip() for plate in plates}
    start = datetime.combine(day, datetime.min.time(), ZONE) + timedelta(hours=9)

    def send(plate: str, batch: int) -> tuple[int, int]:
        sales = [
            {
                "plate": plate,
                "client": f"cliente-{(batch * BATCH + i) % 97:03d}",
                "quantity": 1 + (batch + i) % 5,
                "sold_at": (start + timedelta(seconds=(batch * BATCH + i) % DAY_SECONDS)).isoformat(),
                "stock_remaining": 100,
                "location": {"lat": -33.44, "lon": -70.65},
            }
            for i in range(BATCH)
        ]
        headers = {"Authorization": f"Bearer {tokens[plate]}", "Idempotency-Key": f"drill-{plate}-{batch}"}
        for _ in range(RESENDS):
            answer = http("POST", api + "/v1/sales/batch", {"sales": sales}, headers=headers, timeout=60)
            if answer.status == 202:
                assert answer.json()["accepted"] == BATCH, answer.body[:500]
                return BATCH, sum(sale["quantity"] for sale in sales)
            time.sleep(0.5)
        raise AssertionError(f"a batch was never acknowledged: {answer.status} {answer.body[:300]!r}")

    def cart(plate: str) -> tuple[int, int]:
        sent = units = 0
        for batch in itertools.count():
            if batch >= batches and (until is None or until.is_set()):
                return sent, units
            n, u = send(plate, batch)
            sent, units = sent + n, units + u

    with concurrent.futures.ThreadPoolExecutor(len(plates)) as pool:
        done = list(pool.map(cart, plates))
    return sum(n for n, _ in done), sum(u for _, u in done)


def _supervisorctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """supervisorctl on the stack's supervisord (a subprocess: no XML-RPC socket left open here)."""
    conf = Path(env["LOCAL_DIR"]) / "supervisor" / "supervisord.conf"
    ctl = str(Path(sys.executable).with_name("supervisorctl"))
    return subprocess.run([ctl, "-c", str(conf), *args], capture_output=True, text=True, timeout=120)


def _pid(env: dict[str, str], name: str) -> int:
    return int(_supervisorctl(env, "pid", name).stdout.strip())


def _worker_of(env: dict[str, str], pid: int) -> str:
    """The supervisor program (a Celery worker) `pid` descends from."""
    programs = {_pid(env, name): name for name in WORKERS}
    while pid > 1:
        if pid in programs:
            return programs[pid]
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # ppid
    raise AssertionError("the task's process descends from no program of the stack")


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _kill_worker(env: dict[str, str], name: str) -> int:
    """SIGKILL a worker's process group and every process group under it (the task runner has
    its own: the task SDK's supervisor puts it there), as a lost host would; returns how many
    processes were killed."""
    pgid = _pid(env, name)  # supervisord runs each program as its own process group
    victims = {pgid, *_descendants(pgid)}
    groups = {os.getpgid(pid) for pid in victims if Path(f"/proc/{pid}").exists()} - {pgid}
    # The worker's own group first, with the task's supervisor in it: were the task runner
    # killed first, its supervisor could still report the try failed, as no lost host does.
    for group in (pgid, *groups):
        os.killpg(group, signal.SIGKILL)
    return len(victims)


def _report_files(env: dict[str, str], day: str) -> dict[str, bytes]:
    folder = Path(env["REPORTS_DIR"]) / "daily"
    return {ext: (folder / f"{day}.{ext}").read_bytes() for ext in ("csv", "json", "txt", "png")}


def _attempt_log(env: dict[str, str], run: str, attempt: int) -> Path:
    return (
        Path(env["LOCAL_DIR"])
        / "airflow"
        / "logs"
        / "dag_id=sales_daily"
        / f"run_id={run}"
        / "task_id=drain_sales"
        / f"attempt={attempt}.log"
    )


def _ran_on(env: dict[str, str], run: str, attempt: int) -> list[str]:
    """The workers whose log says they took this try of drain_sales (Celery logs each workload
    it executes, naming its log path, which carries the run and the try; never its token)."""
    needle = f"run_id={run}/task_id=drain_sales/attempt={attempt}.log"
    logs = Path(env["LOCAL_DIR"]) / "logs"
    return [name for name in WORKERS if needle in (logs / f"{name}.log").read_text(errors="replace")]


def test_a_celery_worker_killed_during_drain_sales_and_the_day_is_the_same(up, figures):
    env, printed = up
    airflow = Airflow(env, printed)
    day = datetime.now(ZONE).date() - timedelta(days=DAYS_BACK)
    started = time.monotonic()
    sales, units = _seed_day(env, day)
    figures.update(sales=sales, seconds_to_send_them=round(time.monotonic() - started, 1))

    run = airflow.trigger_day(day.isoformat())
    ti = wait_for(
        lambda: (ti := airflow.drain(run))["state"] == "running" and ti.get("pid") and ti,
        timeout=120,
        what="drain_sales running",
    )
    victim = _worker_of(env, ti["pid"])
    log = _attempt_log(env, run, 1)
    wait_for(
        lambda: log.exists() and "committed offsets" in log.read_text(), timeout=60, what="a chunk committed"
    )
    killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
    figures["processes_killed"] = _kill_worker(env, victim)
    # The lost host stays lost until the retry has run: the other worker must take it.
    # (supervisord restarts a program that died; stopped, it stays down until started.)
    wait_for(
        lambda: (
            _supervisorctl(env, "stop", victim) and "STOPPED" in _supervisorctl(env, "status", victim).stdout
        ),
        timeout=90,
        interval=0.5,
        what=f"{victim} stopped",
    )
    drained = log.read_text()
    assert "drained in" not in drained, "the drain ended before the kill: send more sales"
    figures["chunks_committed_before_the_kill"] = drained.count("committed offsets")
    down = _gremio(env, "status")  # during the retry's delay: no time added
    assert down.returncode == 1 and re.search(rf"{victim} .*unhealthy", down.stdout), down.stdout

    assert airflow.wait_done(run, timeout=300) == "success"
    figures["seconds_from_kill_to_success"] = round(time.monotonic() - killed_at, 1)
    tries = airflow.drain_tries(run)
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")], tries
    first_end = datetime.fromisoformat(tries[0]["end_date"])
    second_start = datetime.fromisoformat(tries[1]["start_date"])
    figures["seconds_kill_to_first_try_failed"] = round((first_end - killed_wall).total_seconds(), 1)
    figures["seconds_between_tries"] = round((second_start - first_end).total_seconds(), 1)
    scheduler = (Path(env["LOCAL_DIR"]) / "logs" / "airflow-scheduler.log").read_text(errors="replace")
    assert any(
        "Detected a task instance without a heartbeat" in line and run in line
        for line in scheduler.splitlines()
    ), "the scheduler failed the first try for its missing heartbeats"
    assert _ran_on(env, run, 1) == [victim]
    other = next(name for name in WORKERS if name != victim)
    assert _ran_on(env, run, 2) == [other], "the retry ran on the other worker"

    disturbed = _report_files(env, day.isoformat())
    totals = json.loads(disturbed["json"])["totals"]
    assert (totals["sales_count"], totals["units_sold"]) == (sales, units), "every sale once, none doubled"

    # A second run of the day, undisturbed, writes the same bytes.
    again = airflow.trigger_day(day.isoformat())
    assert airflow.wait_done(again, timeout=180) == "success"
    assert [t["try_number"] for t in airflow.drain_tries(again)] == [1]
    undisturbed = _report_files(env, day.isoformat())
    for ext in disturbed:
        assert disturbed[ext] == undisturbed[ext], f"{day}.{ext} differs from an undisturbed run"

    # Back up, the killed worker answers again.
    assert _supervisorctl(env, "start", victim).returncode == 0
    status = _gremio(env, "status", "--wait", "60")
    assert status.returncode == 0 and "unhealthy" not in status.stdout, status.stdout
    for name in WORKERS:
        assert re.search(rf"{name} .*answers ping", status.stdout), status.stdout


# --- any other single process killed ----------------------------------------------------------

# Each restarted by the process manager, as a host's init would: the store, the rate limits'
# store and Celery's queue, the proxy, the scheduler and one of each consumer. (A broker, an
# API instance, a location instance and a Celery worker have drills of their own.)
VICTIMS = ("postgres", "redis", "nginx", "airflow-scheduler", "stock-1", "monitor")


def _kill_program(env: dict[str, str], name: str) -> int:
    """SIGKILL a program's whole process group (supervisord runs each as its own), as a crash
    would: nothing gets to shut down cleanly. Returns the pid that was killed."""
    pid = _pid(env, name)
    os.killpg(pid, signal.SIGKILL)
    return pid


def _dead_letters_since(env: dict[str, str], since: datetime) -> str:
    """`gremio deadletter --since`, as an operator asks it (the CLI reads the cluster's settings)."""
    listing = _gremio(env, "deadletter", "--limit", "0", "--since", since.isoformat(), timeout=120)
    assert listing.returncode == 0, listing.stdout[-2000:] + listing.stderr[-2000:]
    return listing.stdout


def test_killing_any_other_process_while_sales_flow_loses_and_doubles_nothing(up, figures):
    """SIGKILL each of VICTIMS in turn while carts sync their sales through nginx: every part
    comes back by itself, every batch is acknowledged in the end (resent with its key), none
    of them is dead-lettered (a lost connection is transient), and the day's report counts
    every acknowledged sale once."""
    env, printed = up
    airflow = Airflow(env, printed)
    day = datetime.now(ZONE).date() - timedelta(days=DAYS_BACK - 1)  # not the Celery drill's day
    began = datetime.now(UTC)
    killed = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        seeding = pool.submit(_seed_day, env, day, 4, killed)
        try:
            for victim in VICTIMS:
                time.sleep(3)  # sales in flight
                old, at = _kill_program(env, victim), time.monotonic()
                wait_for(
                    lambda victim=victim, old=old: (
                        "RUNNING" in _supervisorctl(env, "status", victim).stdout and _pid(env, victim) != old
                    ),
                    timeout=90,
                    interval=0.5,
                    what=f"{victim} restarted",
                )
                figures[f"seconds_to_{victim}_running_again"] = round(time.monotonic() - at, 1)
        finally:
            killed.set()
        sales, units = seeding.result(timeout=600)
    figures.update(sales=sales)

    status = _gremio(env, "status", "--wait", "120")
    assert status.returncode == 0 and "unhealthy" not in status.stdout, status.stdout
    run = airflow.trigger_day(day.isoformat())
    assert airflow.wait_done(run, timeout=300) == "success"
    totals = json.loads(_report_files(env, day.isoformat())["json"])["totals"]
    assert (totals["sales_count"], totals["units_sold"]) == (sales, units), "every sale once, none doubled"
    # A restart's lost connection is transient: retried, never dead-lettered.
    assert "no dead letters in that time" in _dead_letters_since(env, began)


def test_down_stops_it(up):
    env, _ = up
    down = _gremio(env, "down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert "leftover" not in down.stdout, down.stdout
    assert _our_processes(env) == []
    assert not (Path(env["LOCAL_DIR"]) / "topology").exists(), "the next `make up` is a single broker again"
