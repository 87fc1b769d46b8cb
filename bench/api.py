"""Ingest API benchmark: POST /v1/sales through gunicorn, against the same app with no broker.

    .venv/bin/python -m bench.api [--duration 10] [--connections 32] [--rounds 3] [--sweep]
    .venv/bin/python -m bench.api --anchors-only --duration 8 --rounds 5   # make bench-api
    .venv/bin/python -m bench.api --instances --duration 8 --rounds 3      # 1 API instance vs 2 behind nginx

Two gunicorn servers with the same config (`ingest_api/gunicorn_conf.py`, the API_WORKERS
and API_THREADS in force) and the same app:

* gremio: the real app; each 202 waits for Kafka's acks=all acknowledgement;
* baseline: `create_app(producer=NullProducer())`, which acknowledges every record at once
  (the framework's own limit on this machine: HTTP, Flask, validation, JSON).

wrk (the Debian package) drives each in turn with a Lua POST script, alternating rounds so
that both see the same machine, and reports, side by side:

1. peak throughput (closed loop, --connections) and its p50/p99 latency;
2. latency at half gremio's peak rate: wrk has no fixed-rate mode (that is wrk2), so each
   connection waits a Lua `delay()` between requests, chosen so that the connections
   together offer half the peak rate; the achieved rate is printed next to it. Unlike wrk2
   this does not correct for coordinated omission: a stalled server also delays the
   requests that would have been sent meanwhile, so the p99 is, if anything, flattering.
3. /v1/sales/batch with 500 sales per request, in sales per second.

Then (first, unless --no-anchors; alone with --anchors-only) gremio against what a user would
pick instead, all up at once on the same broker and each in every round (order rotating):
the Express + kafkajs service of bench/anchors/express (`npm ci`-ed on first use) with a
producer per request (the seed's way) and with one long-lived acks=-1 producer (kafkajs's
idempotence off, and on), and the do-nothing baseline. It prints gremio's throughput as a
ratio to each, p50 and p99 at the peak and at half gremio's peak, and the load average.

--sweep first measures gremio's peak for several API_WORKERS x API_THREADS combinations
(how the defaults were chosen). Everything runs on a throwaway Kafka (bench/stack.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.stack import throwaway_stack
from gremio.settings import REPO_ROOT, get_settings
from gremio.stack.system import free_port
from gremio.stack.testing import stop_group
from gremio.tokens import cart_token

GUNICORN = Path(sys.executable).with_name("gunicorn")
GRANIAN = Path(sys.executable).with_name("granian")
PLATE = "BBCL12"
CONF = REPO_ROOT / "ingest_api" / "gunicorn_conf.py"

# The baseline's gunicorn config: the real one, minus the hooks that open a Kafka producer.
BASELINE_CONF = f"""\
exec(compile(open({str(CONF)!r}).read(), {str(CONF)!r}, "exec"))


def post_fork(server, worker):
    pass


def worker_exit(server, worker):
    pass
"""


def baseline_app():
    """The real app with a producer that does nothing (gunicorn loads this in each worker)."""
    from ingest_api import create_app
    from ingest_api.testing import NullProducer

    return create_app(producer=NullProducer())


def sale(i: int = 0, sold_at: datetime | None = None) -> dict:
    body = {
        "plate": PLATE,
        "client": f"cliente-{i % 50}",
        "quantity": 1 + i % 5,
        "stock_remaining": 100 - i % 100,
        "location": {"lat": -33.4489, "lon": -70.6693},
    }
    if sold_at:
        body["sold_at"] = sold_at.isoformat()
    return body


def lua_script(path: Path, body: dict, delay_ms: float | None = None) -> Path:
    """A wrk script that POSTs `body` with the cart's token (and waits `delay_ms` between requests)."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(json.dumps(body))}",
        'wrk.headers["Content-Type"] = "application/json"',
        f'wrk.headers["Authorization"] = "Bearer {cart_token(PLATE)}"',
    ]
    if delay_ms is not None:
        lines += ["function delay()", f"  return {max(0, round(delay_ms))}", "end"]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, script: Path, duration: float, connections: int, threads: int = 1) -> Result:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:.0f}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    ).stdout  # fmt: skip
    return parse_wrk(out)


def parse_wrk(out: str) -> Result:
    """Throughput, p50, p99 and errors (non-2xx answers and socket errors) from wrk --latency's output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(map(int, socket_errors.groups())) if socket_errors else 0
    return Result(rps, p50, p99, errors)


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """CPU time (user + system) of a process and its children, from /proc; with `reaped`, also
    that of the children they have already waited for (PostgreSQL's closed backends)."""
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11 : 15 if reaped else 13]) / TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


@dataclass
class Served:
    url: str
    pid: int
    behind: tuple[int, ...] = ()  # a proxy's instances: their CPU counts as the API's too


@contextlib.contextmanager
def server(
    app: str, conf: Path, workers: int, threads: int, log: Path, extra: dict[str, str] | None = None
) -> Iterator[Served]:
    """A gunicorn on a free port, once /readyz answers 200 (`extra`: more settings)."""
    port = free_port()
    env = {**os.environ, "API_PORT": str(port), "API_WORKERS": str(workers), "API_THREADS": str(threads)}
    env.update(extra or {})
    env["PYTHONPATH"] = str(REPO_ROOT)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(GUNICORN), "-c", str(conf), app],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    with _ready(proc, f"http://127.0.0.1:{port}", log, "gunicorn") as served:
        yield served


@contextlib.contextmanager
def granian(factory: str, workers: int, threads: int, log: Path) -> Iterator[Served]:
    """The same app under granian's WSGI interface (Rust HTTP, a Python thread pool per worker).

    granian has no post_fork hook: `create_app()` runs in each worker (--factory) and makes the
    worker's producer and revocations reader there, as it does on first use anywhere.
    """
    port = free_port()
    metrics_dir = Path(tempfile.mkdtemp(prefix="gremio-api-metrics-"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    command = [
        str(GRANIAN), "--interface", "wsgi", "--factory", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--blocking-threads", str(threads), "--no-ws", "--log-level", "warning",
        factory,
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with _ready(proc, f"http://127.0.0.1:{port}", log, "granian") as served:
            yield served
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@contextlib.contextmanager
def _ready(proc: subprocess.Popen, base: str, log: Path, what: str) -> Iterator[Served]:
    """Wait until `proc` answers 200 on /readyz; stop its process group when done."""
    try:
        deadline = time.monotonic() + 60
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/readyz", timeout=2) as ready,  # noqa: S310 - loopback
            ):
                if ready.status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not become ready; see {log}")
            time.sleep(0.3)
        yield Served(base, proc.pid)
    finally:
        stop_group(proc)


# --- the anchors: what a user would pick instead (bench/anchors/) ---------------------------

ANCHOR_DIR = REPO_ROOT / "bench" / "anchors" / "express"
# name -> (ANCHOR_MODE, ANCHOR_IDEMPOTENT) of bench/anchors/express/server.js
ANCHORS = {
    "express, per-request producer (the seed)": ("per-request", "0"),
    "express, long-lived producer, acks=-1": ("long-lived", "0"),
    "express, long-lived idempotent producer": ("long-lived", "1"),
}


def ensure_anchor() -> None:
    """`npm ci` the Express anchor unless its node_modules match its package-lock.json."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: the Express anchor needs Node.js 20+ and npm")
    installed = ANCHOR_DIR / "node_modules" / ".package-lock.json"
    lock = ANCHOR_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ANCHOR_DIR, check=True, timeout=600
    )


@contextlib.contextmanager
def anchor(mode: str, idempotent: str, bootstrap: str, log: Path) -> Iterator[Served]:
    """The Express + kafkajs anchor on a free port, producing to `bootstrap`'s `sales` topic."""
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "ANCHOR_MODE": mode,
        "ANCHOR_IDEMPOTENT": idempotent,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "NODE_ENV": "production",
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["node", "server.js"],
            cwd=ANCHOR_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    with _ready(proc, f"http://127.0.0.1:{port}", log, f"the {mode} anchor") as served:
        yield served


@dataclass
class Run:
    """One wrk run and the CPU it cost: the API's processes and the broker's, per request."""

    result: Result
    api_cpu_us: float
    broker_cpu_us: float


def measured(
    served: Served, broker_pid: int, path: str, script: Path, duration: float, connections: int
) -> Run:
    pids = (served.pid, *served.behind)
    api0, broker0 = sum(map(cpu_seconds, pids)), cpu_seconds(broker_pid)
    result = wrk(served.url + path, script, duration, connections)
    requests = max(1.0, result.rps * duration)
    return Run(
        result,
        (sum(map(cpu_seconds, pids)) - api0) / requests * 1e6,
        (cpu_seconds(broker_pid) - broker0) / requests * 1e6,
    )


def median(runs: list[Run]) -> Run:
    return Run(
        Result(
            statistics.median(r.result.rps for r in runs),
            statistics.median(r.result.p50_ms for r in runs),
            statistics.median(r.result.p99_ms for r in runs),
            sum(r.result.errors for r in runs),
        ),
        statistics.median(r.api_cpu_us for r in runs),
        statistics.median(r.broker_cpu_us for r in runs),
    )


def rotation(names: list[str], round_: int) -> list[str]:
    """The order of round `round_`: each server goes first in turn, so none always runs
    right after a warm-up or right before a pause."""
    shift = round_ % len(names)
    return names[shift:] + names[:shift]


def paired(
    servers: dict[str, Served],
    broker_pid: int,
    path: str,
    script: Path,
    duration: float,
    connections: int,
    rounds: int,
    reference: str = "gremio",
) -> tuple[dict[str, Run], dict[str, float]]:
    """Each round runs every server back to back (order rotating), so all see the same load
    from whatever else the machine is doing; returns the medians and, for each other
    server, the median of the per-round throughput ratios reference / it."""
    runs: dict[str, list[Run]] = {name: [] for name in servers}
    for round_ in range(rounds):
        for name in rotation(list(servers), round_):
            runs[name].append(measured(servers[name], broker_pid, path, script, duration, connections))
    return {name: median(found) for name, found in runs.items()}, ratios(runs, reference)


def ratios(runs: dict[str, list[Run]], reference: str = "gremio") -> dict[str, float]:
    """Median over rounds of reference's throughput / each other's, round by round."""
    mine = [run.result.rps for run in runs[reference]]
    return {
        name: statistics.median(a / max(b.result.rps, 1e-9) for a, b in zip(mine, found, strict=True))
        for name, found in runs.items()
        if name != reference
    }


def row(name: str, run: Run, unit: str = "req/s", per_request: int = 1) -> str:
    r = run.result
    return (
        f"| {name} | {r.rps * per_request:,.0f} {unit} | {r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms | {r.errors} "
        f"| {run.api_cpu_us / per_request:,.0f} µs | {run.broker_cpu_us / per_request:,.0f} µs |"
    )


HEADER = "| {what} | throughput | p50 | p99 | errors | API CPU | broker CPU |\n|---|---|---|---|---|---|---|"


@contextlib.contextmanager
def both(tmp: Path, workers: int, threads: int) -> Iterator[dict[str, Served]]:
    """gremio and the baseline, the same gunicorn config, side by side (one idles while the other runs)."""
    baseline_conf = tmp / "gunicorn_baseline.py"
    baseline_conf.write_text(BASELINE_CONF)
    with (
        server("ingest_api:create_app()", CONF, workers, threads, tmp / "gremio.log") as gremio,
        server("bench.api:baseline_app()", baseline_conf, workers, threads, tmp / "baseline.log") as baseline,
    ):
        yield {"gremio": gremio, "baseline": baseline}


SWEEP = ((1, 8), (1, 16), (1, 32), (2, 8), (2, 16), (3, 8))


def sweep(tmp: Path, broker_pid: int, duration: float, connections: int, rounds: int) -> None:
    """Peak POST /v1/sales of gremio and of the baseline for several workers x threads."""
    script = lua_script(tmp / "sale.lua", sale())
    print(f"\n### API_WORKERS x API_THREADS: peak POST /v1/sales, medians of {rounds} paired rounds\n")
    print(
        "| workers | threads | gremio | p99 | baseline | p99 | ratio | gremio API + broker CPU per request |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for workers, threads in SWEEP:
        with both(tmp, workers, threads) as servers:
            for served in servers.values():
                wrk(served.url + "/v1/sales", script, 2, connections)  # warm-up
            runs, ratio = paired(servers, broker_pid, "/v1/sales", script, duration, connections, rounds)
        ratio = ratio["baseline"]
        real, base = runs["gremio"], runs["baseline"]
        print(
            f"| {workers} | {threads} | {real.result.rps:,.0f} req/s | {real.result.p99_ms:.0f} ms "
            f"| {base.result.rps:,.0f} req/s | {base.result.p99_ms:.0f} ms | {ratio:.2f} "
            f"| {real.api_cpu_us:,.0f} + {real.broker_cpu_us:,.0f} µs |",
            flush=True,
        )


def at_rate(url: str, rate: float, connections: int, duration: float, script: Path) -> Result:
    """wrk offering about `rate` req/s: each connection sends, waits for the answer, then a delay.

    A connection's cycle is latency + delay, so the delay is calibrated with a short run
    (cycle measured = connections / achieved rate) before the measured one.
    """
    cycle_ms = connections * 1000 / rate
    first = wrk(url, lua_script(script, sale(), delay_ms=cycle_ms), 3, connections)
    latency_ms = max(0.0, connections * 1000 / first.rps - cycle_ms)
    return wrk(url, lua_script(script, sale(), delay_ms=cycle_ms - latency_ms), duration, connections)


def measure(tmp: Path, broker_pid: int, duration: float, connections: int, rounds: int) -> None:
    settings = get_settings()
    workers, threads = settings.api_workers, settings.api_threads
    single = lua_script(tmp / "sale.lua", sale())
    now = datetime.now(UTC)
    batch_body = {"sales": [sale(i, now - timedelta(minutes=30) + timedelta(seconds=i)) for i in range(500)]}
    batch = lua_script(tmp / "batch.lua", batch_body)
    print(
        f"\nAPI_WORKERS={workers} API_THREADS={threads}; wrk -t1 -c{connections} -d{duration:.0f}s; medians of "
        f"{rounds} paired rounds; batch body {len(json.dumps(batch_body)) / 1024:.0f} KiB"
    )
    with both(tmp, workers, threads) as servers:
        for served in servers.values():
            wrk(served.url + "/v1/sales", single, 3, connections)  # warm-up
        peak, ratio = paired(servers, broker_pid, "/v1/sales", single, duration, connections, rounds)
        batches, batch_ratio = paired(servers, broker_pid, "/v1/sales/batch", batch, duration, 4, rounds)
        ratio, batch_ratio = ratio["baseline"], batch_ratio["baseline"]
        half = peak["gremio"].result.rps / 2
        paced = {
            name: at_rate(served.url + "/v1/sales", half, 16, duration, tmp / f"paced-{name}.lua")
            for name, served in servers.items()
        }

    print("\n" + HEADER.format(what="POST /v1/sales, peak"))
    print(row("gremio (Kafka acks=all)", peak["gremio"]))
    print(row("baseline (do-nothing producer)", peak["baseline"]))
    print(f"\ngremio / baseline throughput: **{ratio:.2f}** (goal >= 0.7)")
    print(
        f"\n| at half gremio's peak ({half:,.0f} req/s offered) | achieved | p50 | p99 | errors |\n"
        "|---|---|---|---|---|"
    )
    for name, result in paced.items():
        print(
            f"| {name} | {result.rps:,.0f} req/s | {result.p50_ms:.1f} ms | {result.p99_ms:.1f} ms | {result.errors} |"
        )
    print(f"\ngremio p99 at half the peak rate: **{paced['gremio'].p99_ms:.1f} ms** (goal <= 50 ms)")
    print("\n" + HEADER.format(what="POST /v1/sales/batch, 500 sales, -c4").replace("throughput", "sales/s"))
    print(row("gremio", batches["gremio"], "sales/s", 500))
    print(row("baseline", batches["baseline"], "sales/s", 500))
    print(f"\ngremio / baseline batch throughput: {batch_ratio:.2f}")


def position() -> dict:
    return {"plate": PLATE, "lat": -33.4489, "lon": -70.6693}


def wsgi_servers(tmp: Path, broker_pid: int, duration: float, connections: int, rounds: int) -> None:
    """The real app (Flask, create_app()) under each WSGI server, all up at once on the same
    broker, each in every round (order rotating), for POST /v1/sales and POST /v1/locations."""
    settings = get_settings()
    workers, threads = settings.api_workers, settings.api_threads
    sync_conf = tmp / "gunicorn_sync.py"
    sync_conf.write_text(
        f"exec(compile(open({str(CONF)!r}).read(), {str(CONF)!r}, 'exec'))\nworker_class = 'sync'\n"
    )
    print(
        f"\n### The real app under each WSGI server\n\nwrk -t1 -c{connections} -d{duration:.0f}s, medians of "
        f"{rounds} rounds, order rotating; load average {load()} (1/5/15 min) at the start",
        flush=True,
    )
    reference = f"gunicorn gthread, {workers} workers x {threads} threads (make up)"
    with contextlib.ExitStack() as up:
        servers = {
            reference: up.enter_context(
                server("ingest_api:create_app()", CONF, workers, threads, tmp / "gthread.log")
            ),
            f"gunicorn sync, {workers * threads} workers": up.enter_context(
                server("ingest_api:create_app()", sync_conf, workers * threads, 1, tmp / "sync.log")
            ),
        }
        for pool in (threads, threads * 2):
            servers[f"granian wsgi, {workers} workers x {pool} threads"] = up.enter_context(
                granian("ingest_api:create_app", workers, pool, tmp / f"granian-{pool}.log")
            )
        for path, body in (("/v1/sales", sale()), ("/v1/locations", position())):
            script = lua_script(tmp / f"{path.strip('/').replace('/', '-')}.lua", body)
            for served in servers.values():
                wrk(served.url + path, script, 3, connections)  # warm-up
            peak, ratio = paired(servers, broker_pid, path, script, duration, connections, rounds, reference)
            print(
                f"\n| POST {path}, peak | throughput | p50 | p99 | errors | API CPU | broker CPU | it / make up's |"
                "\n|---|---|---|---|---|---|---|---|"
            )
            for name, run in peak.items():
                print(
                    row(name, run) + (f" **{1 / ratio[name]:.2f}** |" if name in ratio else " 1 |"),
                    flush=True,
                )
    print(f"\nload average {load()} at the end", flush=True)


@contextlib.contextmanager
def behind_nginx(tmp: Path, apis: list[Served], name: str) -> Iterator[Served]:
    """Debian's nginx on a free port in front of `apis`, configured as make up-cluster's is
    (gremio/stack/nginx.py)."""
    from gremio.stack import nginx

    folder, port = tmp / f"nginx-{name}", free_port()
    nginx.write_config(folder, port, [int(api.url.rsplit(":", 1)[1]) for api in apis])
    with (tmp / f"nginx-{name}.log").open("ab") as out:
        proc = subprocess.Popen(
            nginx.command(folder), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    with _ready(proc, f"http://127.0.0.1:{port}", tmp / f"nginx-{name}.log", "nginx") as served:
        yield Served(served.url, served.pid, tuple(api.pid for api in apis))


def instances(tmp: Path, broker_pid: int, duration: float, connections: int, rounds: int) -> None:
    """One API instance against two behind nginx (make up-cluster's front), and one behind
    nginx to show what the proxy costs, all up at once on the same broker, every round."""
    settings = get_settings()
    workers, threads = settings.api_workers, settings.api_threads
    print(
        f"\n### One API instance against two behind nginx\n\nEach instance: gunicorn {workers} workers x "
        f"{threads} threads (make up's); wrk -t1 -c{connections} -d{duration:.0f}s, medians of {rounds} "
        f"rounds, order rotating; load average {load()} (1/5/15 min) at the start",
        flush=True,
    )
    reference = "1 instance, direct (make up)"
    with contextlib.ExitStack() as up:
        env = {"API_PROXY_HOPS": "1"}  # as make up-cluster runs them; the direct runs send no header
        one = up.enter_context(
            server("ingest_api:create_app()", CONF, workers, threads, tmp / "one.log", env)
        )
        two = up.enter_context(
            server("ingest_api:create_app()", CONF, workers, threads, tmp / "two.log", env)
        )
        servers = {
            reference: one,
            "1 instance behind nginx": up.enter_context(behind_nginx(tmp, [one], "one")),
            "2 instances behind nginx (make up-cluster)": up.enter_context(
                behind_nginx(tmp, [one, two], "two")
            ),
        }
        for path, body in (("/v1/sales", sale()), ("/v1/locations", position())):
            script = lua_script(tmp / f"{path.strip('/').replace('/', '-')}.lua", body)
            for served in servers.values():
                wrk(served.url + path, script, 3, connections)  # warm-up
            peak, ratio = paired(servers, broker_pid, path, script, duration, connections, rounds, reference)
            print(
                f"\n| POST {path}, peak | throughput | p50 | p99 | errors | API CPU | broker CPU | it / 1 direct |"
                "\n|---|---|---|---|---|---|---|---|"
            )
            for name, run in peak.items():
                print(
                    row(name, run) + (f" **{1 / ratio[name]:.2f}** |" if name in ratio else " 1 |"),
                    flush=True,
                )
    print(f"\nload average {load()} at the end", flush=True)


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def against_anchors(
    tmp: Path, bootstrap: str, broker_pid: int, duration: float, connections: int, rounds: int
) -> None:
    """gremio's POST /v1/sales against the Express anchors (and the do-nothing baseline), all
    up at once against the same broker, every one of them in every round."""
    ensure_anchor()
    settings = get_settings()
    workers, threads = settings.api_workers, settings.api_threads
    script = lua_script(tmp / "sale.lua", sale())
    baseline_conf = tmp / "gunicorn_baseline.py"
    baseline_conf.write_text(BASELINE_CONF)
    print(
        f"\n### POST /v1/sales against what a user would pick instead\n\n"
        f"gremio: gunicorn API_WORKERS={workers} API_THREADS={threads}; the anchors: one Node "
        f"{subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()} process each "
        f"(bench/anchors/express); wrk -t1 -c{connections} -d{duration:.0f}s, medians of {rounds} rounds, "
        f"order rotating; load average {load()} (1/5/15 min) at the start",
        flush=True,
    )
    with contextlib.ExitStack() as up:
        servers = {
            "gremio": up.enter_context(
                server("ingest_api:create_app()", CONF, workers, threads, tmp / "gremio.log")
            )
        }
        for number, (name, (mode, idempotent)) in enumerate(ANCHORS.items()):
            servers[name] = up.enter_context(
                anchor(mode, idempotent, bootstrap, tmp / f"anchor-{number}.log")
            )
        servers["baseline (gremio, do-nothing producer)"] = up.enter_context(
            server("bench.api:baseline_app()", baseline_conf, workers, threads, tmp / "baseline.log")
        )
        for served in servers.values():
            wrk(served.url + "/v1/sales", script, 3, connections)  # warm-up
        peak, ratio = paired(servers, broker_pid, "/v1/sales", script, duration, connections, rounds)
        half = peak["gremio"].result.rps / 2
        paced = {
            name: at_rate(served.url + "/v1/sales", half, 16, duration, tmp / f"paced-{number}.lua")
            for number, (name, served) in enumerate(servers.items())
        }
    print(
        "\n| POST /v1/sales, peak | throughput | p50 | p99 | errors | API CPU | broker CPU | gremio / it |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    for name, run in peak.items():
        print(row(name, run) + (f" **{ratio[name]:.2f}** |" if name in ratio else " 1 |"))
    print(
        f"\n| at half gremio's peak ({half:,.0f} req/s offered, 16 paced connections) | achieved | p50 | p99 | errors |"
        "\n|---|---|---|---|---|"
    )
    for name, result in paced.items():
        print(
            f"| {name} | {result.rps:,.0f} req/s | {result.p50_ms:.1f} ms | {result.p99_ms:.1f} ms | {result.errors} |"
        )
    seed, node = list(ANCHORS)[:2]
    print(
        f"\ngremio / long-lived Express: **{ratio[node]:.2f}** (goal >= 1.0); gremio / the seed's per-request "
        f"producer: **{ratio[seed]:.2f}** (goal >= 3); gremio p99 at half its peak: "
        f"**{paced['gremio'].p99_ms:.1f} ms** (goal <= 20 ms); load average {load()} at the end",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="also compare API_WORKERS x API_THREADS")
    parser.add_argument("--no-measure", action="store_true", help="skip the gremio / baseline tables")
    parser.add_argument(
        "--no-anchors", action="store_true", help="skip the table against the Express anchors"
    )
    parser.add_argument(
        "--anchors-only", action="store_true", help="only the table against the Express anchors"
    )
    parser.add_argument("--servers", action="store_true", help="only the real app under each WSGI server")
    parser.add_argument(
        "--instances", action="store_true", help="only one API instance against two behind nginx"
    )
    parser.add_argument(
        "--anchor-connections", type=int, default=16, help="wrk connections for the anchors' table"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="gremio-bench-api-"))
    print(f"# ingest API benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores (shared)")
    with throwaway_stack() as stack:
        broker = stack.kafka.proc.pid  # type: ignore[union-attr]
        if args.servers:
            args.no_anchors, args.sweep, args.no_measure = True, False, True
            wsgi_servers(tmp, broker, args.duration, args.anchor_connections, args.rounds)
        if args.instances:
            args.no_anchors, args.sweep, args.no_measure = True, False, True
            instances(tmp, broker, args.duration, args.anchor_connections, args.rounds)
        if not args.no_anchors:
            against_anchors(
                tmp, stack.bootstrap_servers, broker, args.duration, args.anchor_connections, args.rounds
            )
        if args.anchors_only:
            args.sweep, args.no_measure = False, True
        if args.sweep:
            sweep(tmp, broker, args.duration, args.connections, args.rounds)
        if not args.no_measure:
            measure(tmp, broker, args.duration, args.connections, args.rounds)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
