"""Where the drain's time goes, per record: py-spy on the sales_daily drain task, and
PostgreSQL's CPU per row for the drain and for the raw COPY it is compared with.

    .venv/bin/python -m bench.profile_drain [--sales 300000] [--rate 200]

On a throwaway Kafka and PostgreSQL (bench/drain.py's setup), N sales of one day are
produced. Then the raw COPY of the same rows (bench.drain's baseline), and the DAG's own
`drain_sales` task while `py-spy record --gil` samples this process: a sample is a moment a
thread of the drain held the GIL, its Python time. Each stack goes into the first of
CATEGORIES it matches, and samples / rate / records gives µs per record. PostgreSQL's CPU
(the server and its backends, from /proc) over each side's rows gives its µs per row.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import drain as bd
from bench.api import cpu_seconds, load
from bench.profile_api import PY_SPY, parse_raw, print_breakdown
from gremio.settings import REPO_ROOT


def categories() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(category, substrings of a stack any of which puts it there), most specific first: a
    sample's stack holds its whole call chain, and read_chunk is under most of them. The
    consume call is C, so its samples end on read_chunk's line that calls it."""
    source = (REPO_ROOT / "plugins" / "kafka_drain.py").read_text().splitlines()
    consume = tuple(
        f"read_chunk (kafka_drain.py:{i})" for i, line in enumerate(source, 1) if ".consume(" in line
    )
    return (
        ("decode: pydantic validate_json, its Python validators", ("_Drain.decode (kafka_drain.py",)),
        ("the row tuple (record_values)", ("_Drain.row (kafka_drain.py",)),
        ("binary COPY: psycopg write_row (dump + send)", ("_Drain.copy (kafka_drain.py",)),
        ("consume: librdkafka fetch, Message objects", consume),
        ("day partitions (prepare)", ("sales_partitions",)),
        ("commit, SQL, savepoints (psycopg)", ("psycopg/",)),
        ("chunk loop: offsets, pause, bookkeeping", ("read_chunk (kafka_drain.py",)),
        ("threads: waiting, handing chunks over", ("threading.py", "concurrent/futures")),
    )


def spied(pid: int, rate: int, out: Path) -> subprocess.Popen:
    command = [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(rate), "--gil", "--nonblocking"]
    return subprocess.Popen([*command, "--format", "raw", "--output", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=300_000)
    parser.add_argument("--carts", type=int, default=200)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    args = parser.parse_args(argv)
    n, carts = args.sales, bd.plates(args.carts)
    out = Path(tempfile.mkdtemp(prefix="gremio-profile-drain-")) / "drain.txt"
    with bd.prepared(carts) as (stack, start):
        print(f"# {n:,} sales, py-spy --gil at {args.rate} Hz; load average {load()}", flush=True)
        bd.produce(n, carts, start)
        postgres = stack.postgres.proc.pid  # type: ignore[union-attr]
        before = cpu_seconds(postgres, reaped=True)
        copy_s = bd.baseline_copy(n, carts, start)
        copy_pg = cpu_seconds(postgres, reaped=True) - before
        spy = spied(os.getpid(), args.rate, out)
        time.sleep(1)  # py-spy attached
        before, cpu_before = cpu_seconds(postgres, reaped=True), time.process_time()
        drain_s, result = bd.drain(n, "bench-profile-drain")
        drain_pg, drain_cpu = cpu_seconds(postgres, reaped=True) - before, time.process_time() - cpu_before
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    stacks = parse_raw(out.read_text() if out.exists() else "")
    per_record = 1e6 / args.rate / n
    print(f"\nraw COPY: {n / copy_s:,.0f} rows/s, PostgreSQL {copy_pg * 1e6 / n:.1f} µs of CPU per row")
    print(
        f"drain:    {n / drain_s:,.0f} rows/s ({n / drain_s / (n / copy_s):.2f} of the COPY, under py-spy), "
        f"PostgreSQL {drain_pg * 1e6 / n:.1f} µs per row, the drain's process {drain_cpu * 1e6 / n:.1f} µs "
        f"per record (all threads, librdkafka's too); {result['transactions']} transactions"
    )
    print_breakdown(
        stacks, categories(), per_record, "record", "the drain's Python time, holding the GIL", digits=1
    )
    print(f"\nload average {load()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
