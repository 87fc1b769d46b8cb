"""Where an ingest request's time goes: py-spy on the gunicorn workers while wrk drives them.

    .venv/bin/python -m bench.profile_api [--duration 10] [--connections 16] [--rate 250]

One gunicorn with the repo's config (`ingest_api/gunicorn_conf.py`) on a throwaway Kafka.
For each of POST /v1/sales and POST /v1/locations, wrk drives it while `py-spy record --gil`
samples every worker (so a sample is a moment some thread of the worker held the GIL: the
worker's Python time). Each stack is put in the first category of CATEGORIES it matches and
the samples are turned into µs per request: samples / rate / requests served meanwhile.

It prints, per endpoint, the table of categories in µs per request, the worker's whole CPU
per request from /proc (Python plus librdkafka's own threads and the kernel), and the
functions that hold the most samples themselves.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench import api
from bench.stack import throwaway_stack
from gremio.settings import get_settings
from gremio.tokens import cart_token

PY_SPY = Path(sys.executable).with_name("py-spy")

# (category, substrings of a stack any of which puts the stack in it), most specific first:
# a sample's stack holds its whole call chain, and gunicorn's frames are in nearly all of them.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("cart token check (gremio.tokens)", ("tokens.py:", "revoked_ms")),
    ("body validation (pydantic)", ("parse (ingest_api/intake.py", "raw_json_body", "model_validate")),
    ("record id (UUIDv5 of the body)", ("request_id", "record_id")),
    ("the record (records.sale/cart_position)", ("records.py:",)),
    ("produce: encode + librdkafka produce()", ("produce (gremio/kafka.py", "Outgoing", "kafka.py:")),
    ("poll thread: delivery callbacks", ("_poll_loop",)),
    ("request thread: waiting for the ack", ("wait (threading.py", "send (ingest_api/delivery.py")),
    ("revocations reader thread", ("revocations.py:",)),
    ("partition count (locations)", ("partitions (ingest_api/delivery.py",)),
    ("202 body (json.dumps, Response)", ("accepted (ingest_api/intake.py", "accept_one")),
    ("Flask + werkzeug (routing, request, response)", ("flask/", "werkzeug/")),
    ("gunicorn (HTTP parsing, socket, gthread)", ("gunicorn/",)),
)
OTHER = "other"


def category(stack: str, categories: tuple[tuple[str, tuple[str, ...]], ...] = CATEGORIES) -> str:
    """The first of `categories` whose patterns occur in a py-spy raw stack."""
    for name, patterns in categories:
        if any(pattern in stack for pattern in patterns):
            return name
    return OTHER


def parse_raw(text: str) -> Counter[str]:
    """py-spy's --format raw (collapsed stacks: `frame;frame;... count`) as stack -> samples."""
    found: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            found[stack] += int(count)
    return found


def leaf(stack: str) -> str:
    return stack.rsplit(";", 1)[-1]


def workers_of(master: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{master}/task").iterdir():
        children += [int(pid) for pid in (task / "children").read_text().split()]
    return children


def location_body() -> dict:
    return {"plate": api.PLATE, "lat": -33.4489, "lon": -70.6693}


def profile(
    served: api.Served,
    broker: int,
    path: str,
    body: dict,
    tmp: Path,
    duration: float,
    connections: int,
    rate: int,
) -> None:
    script = api.lua_script(tmp / f"{path.strip('/').replace('/', '-')}.lua", body)
    api.wrk(served.url + path, script, 3, connections)  # warm-up
    outs = []
    spies = []
    for pid in workers_of(served.pid):
        out = tmp / f"py-spy-{pid}.txt"
        outs.append(out)
        command = [
            str(PY_SPY),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--duration",
            f"{duration:.0f}",
        ]
        command += ["--gil", "--nonblocking", "--format", "raw", "--output", str(out)]
        spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    run = api.measured(served, broker, path, script, duration, connections)
    for spy in spies:
        spy.wait(60)
    stacks: Counter[str] = Counter()
    for out in outs:
        stacks += parse_raw(out.read_text() if out.exists() else "")
    requests = max(1.0, run.result.rps * duration)
    per_request = 1e6 / rate / requests  # µs of GIL time per sample, per request
    r = run.result
    print(
        f"\n### POST {path}: {r.rps:,.0f} req/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, {r.errors} errors; "
        f"worker CPU {run.api_cpu_us:,.0f} µs per request (/proc), broker {run.broker_cpu_us:,.0f} µs"
    )
    print_breakdown(stacks, CATEGORIES, per_request, "request", "Python time holding the GIL", digits=0)


def print_breakdown(
    stacks: Counter[str],
    categories: tuple[tuple[str, tuple[str, ...]], ...],
    per_sample: float,
    unit: str,
    what: str,
    digits: int,
) -> None:
    """The samples as two tables: µs per `unit` by category, and the 15 hottest functions."""
    by_category: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    for stack, count in stacks.items():
        by_category[category(stack, categories)] += count
        by_leaf[leaf(stack)] += count
    print(f"\n| where ({what}) | µs per {unit} | share |\n|---|---|---|")
    total = sum(by_category.values()) or 1
    for name, count in by_category.most_common():
        print(f"| {name} | {count * per_sample:,.{digits}f} | {count / total:.0%} |")
    print(f"| **all Python** | **{total * per_sample:,.{digits}f}** | |")
    print(f"\n| function (self time) | µs per {unit} |\n|---|---|")
    for name, count in by_leaf.most_common(15):
        print(f"| `{name}` | {count * per_sample:,.{digits + 1}f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--app", default="ingest_api:create_app()")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gremio-profile-api-"))
    with throwaway_stack() as stack:
        settings = get_settings()
        cart_token(api.PLATE)
        print(
            f"# POST /v1/sales and /v1/locations profiled, API_WORKERS={settings.api_workers} "
            f"API_THREADS={settings.api_threads}, wrk -t1 -c{args.connections} -d{args.duration:.0f}s, "
            f"py-spy --gil at {args.rate} Hz; load average {api.load()}"
        )
        broker = stack.kafka.proc.pid  # type: ignore[union-attr]
        with api.server(
            args.app, api.CONF, settings.api_workers, settings.api_threads, tmp / "gunicorn.log"
        ) as served:
            for path, body in (("/v1/sales", api.sale()), ("/v1/locations", location_body())):
                profile(served, broker, path, body, tmp, args.duration, args.connections, args.rate)
        print(f"\nload average {api.load()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
