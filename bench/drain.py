"""Daily sales drain and report benchmark (docs/BENCHMARKS.md, "Daily sales drain and report").

    .venv/bin/python -m bench.drain [--sales 1000000] [--carts 200] [--repeat 3] [--table-sales 10000000]

1. Drain: N sales of one day are produced to `sales`. Then, `--repeat` rounds of: the same
   rows COPYed raw into a fresh copy of the `sales` table (partitioned the same way, the
   day's partition made, same key and indexes; `COPY ... FROM STDIN` of a prepared file:
   the baseline, PostgreSQL's own ingest rate), and the
   sales_daily DAG's drain task (KafkaDrainOperator: consume, pydantic decode, binary COPY
   to staging, INSERT ... ON CONFLICT) draining the whole topic into the emptied `sales`
   in a new consumer group. Figure: drain rows/s as a ratio to the baseline's rows/s,
   median of the rounds (goal >= 0.7).
2. Stats and report: the sales_daily work for that day (the stats query, the UPSERT into
   daily_master_stats, reading it back, the totals and writing the .txt/.csv/.json/.png)
   against the bare aggregate query (per plate: count, sum, distinct clients), each run
   `--repeat` times; medians. With `--table-sales`, other days' sales are added first (made
   in PostgreSQL, not through Kafka) until the table holds that many: the days before the
   30-day window, as the table's history.

Everything runs on a throwaway Kafka and PostgreSQL (bench/stack.py); the operator reaches
them through the same AIRFLOW_CONN_* connections the DAG uses.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from psycopg import sql

from bench.stack import throwaway_stack
from gremio import db, db_roles, guild_time, sales_daily_report, sales_partitions, sales_stats
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import Sale
from gremio.settings import REPO_ROOT, get_settings
from gremio.stack import airflow as af
from gremio.stack.testing import ThrowawayStack

DAY = date(2026, 11, 10)
CONSONANTS = "BCDFGHJKLPRSTVWXYZ"
COLUMNS = "id, plate, client, quantity, sold_at, stock_remaining, lat, lon, received_at"


def plates(n: int) -> list[str]:
    return [
        f"{CONSONANTS[i // 1800 % 18]}{CONSONANTS[i // 100 % 18]}{CONSONANTS[i // 18 % 18]}{CONSONANTS[i % 18]}{i % 100:02d}"
        for i in range(n)
    ]


def sale_id(i: int) -> uuid.UUID:
    """A UUIDv4-like id, random-looking as the API's are (index inserts land all over), yet
    the same for sale i every time."""
    digest = hashlib.blake2b(i.to_bytes(8, "big"), digest_size=16).digest()
    return uuid.UUID(bytes=digest, version=4)


def sale_values(i: int, n: int, carts: list[str], start: datetime) -> tuple:
    """Sale number i of n, always the same: ~20,000 clients, some written with case and spaces."""
    client = f"cliente {(i * 7919) % 20_000}"
    if i % 10 == 0:
        client = f"  {client.upper()} "
    sold_at = start + timedelta(seconds=i * 86_000 / n)
    return (
        sale_id(i),
        carts[i % len(carts)],
        client,
        1 + i % 10,
        sold_at,
        10 + i % 90,
        -33.45 + (i % 100) / 1000,
        -70.65 + (i % 97) / 1000,
        sold_at + timedelta(seconds=1),
    )


def sales(n: int, carts: list[str], start: datetime) -> Iterator[tuple]:
    for i in range(n):
        yield sale_values(i, n, carts, start)


def to_json(v: tuple) -> bytes:
    return (
        f'{{"id":"{v[0]}","plate":"{v[1]}","client":{json.dumps(v[2], ensure_ascii=False)},'
        f'"quantity":{v[3]},"sold_at":"{v[4].isoformat()}","stock_remaining":{v[5]},'
        f'"lat":{v[6]!r},"lon":{v[7]!r},"received_at":"{v[8].isoformat()}"}}'
    ).encode()


def to_copy_line(v: tuple) -> str:
    return "\t".join(str(x) if not isinstance(x, datetime) else x.isoformat() for x in v) + "\n"


def progress(what: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-9)
    print(f"  {what}: {done:,}/{total:,} ({rate:,.0f}/s)", flush=True)


def produce(n: int, carts: list[str], start: datetime) -> float:
    prod = gk.producer(None, **{"batch.size": 1_000_000})
    tracker = gk.DeliveryTracker()
    headers = gk.type_headers(Sale)
    started = time.monotonic()
    for i, values in enumerate(sales(n, carts, start)):
        while True:
            try:
                gk.produce(
                    prod, gk.Outgoing(t.SALES.name, values[1].encode(), to_json(values), headers), tracker
                )
                break
            except BufferError:
                prod.poll(0.05)
        prod.poll(0)
        if (i + 1) % 200_000 == 0:
            progress("produced", i + 1, n, started)
    gk.flush_or_raise(prod, 120)
    tracker.raise_for_errors()
    return time.monotonic() - started


def baseline_copy(n: int, carts: list[str], start: datetime) -> float:
    """Raw COPY of the same rows from a prepared file into a table shaped like `sales`."""
    with tempfile.NamedTemporaryFile("w", suffix=".copy", delete=False, encoding="utf-8") as out:
        for values in sales(n, carts, start):
            out.write(to_copy_line(values))
        path = Path(out.name)
    try:
        low, high = guild_time.day_bounds(DAY, get_settings().guild_timezone)
        with db.connect() as conn:
            conn.execute("drop table if exists sales_copy_baseline")
            conn.execute(
                "create table sales_copy_baseline (like sales including all) partition by range (sold_at)"
            )
            conn.execute(
                sql.SQL(
                    "create table sales_copy_baseline_day partition of sales_copy_baseline"
                    " for values from ({}) to ({})"
                ).format(sql.Literal(low), sql.Literal(high))
            )
            conn.commit()
            started = time.monotonic()
            with (
                conn.cursor() as cur,
                path.open("rb") as data,
                cur.copy(f"copy sales_copy_baseline ({COLUMNS}) from stdin") as copy,
            ):
                while block := data.read(1 << 20):
                    copy.write(block)
            conn.commit()
            elapsed = time.monotonic() - started
            copied = conn.execute("select count(*) from sales_copy_baseline").fetchone()[0]
            conn.execute("drop table sales_copy_baseline")
        assert copied == n, copied
        return elapsed
    finally:
        path.unlink(missing_ok=True)


def drain(n: int, group_id: str) -> tuple[float, dict]:
    """The DAG's own drain task, executed directly (no scheduler in between), into an empty `sales`."""
    from airflow.dag_processing.dagbag import DagBag

    with db.connect() as conn:
        conn.execute("truncate sales")
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "sales_daily.py"))
    op = bag.dags["sales_daily"].get_task("drain_sales")  # parsed only: no metadata database
    op.group_id = group_id  # each round reads the topic from the start
    started = time.monotonic()
    result = op.execute(context={})
    elapsed = time.monotonic() - started
    with db.connect() as conn:
        stored = conn.execute("select count(*) from sales").fetchone()[0]
    assert result["inserted"] == stored == n, (result, stored)
    return elapsed, result


def add_members(carts: list[str]) -> None:
    """Three of every four carts belong to an approved member; the rest are unregistered."""
    with db.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into members (rut, first_name, last_name, email, plate, approved_at)"
            " values (%s, %s, %s, %s, %s, '2026-01-01')",
            [
                (f"{10_000_000 + i}-0", "Maestro", f"Número {i}", f"m{i}@example.cl", plate)
                for i, plate in enumerate(carts)
                if i % 4
            ],
        )


def fill_history(total: int, n: int, carts: list[str]) -> int:
    """Other days' sales until `sales` holds `total`: the 30 days before DAY's window, made in SQL."""
    extra = total - n
    if extra <= 0:
        return 0
    tz = get_settings().guild_timezone
    window = get_settings().frequent_client_window_days
    first = DAY - timedelta(days=2 * window)
    days = [first + timedelta(days=i) for i in range(window)]
    start = guild_time.day_start(first, tz)
    span = (guild_time.day_start(days[-1] + timedelta(days=1), tz) - start).total_seconds()
    started = time.monotonic()
    with db.connect() as conn:
        sales_partitions.ensure_days(conn, days, tz)
        conn.commit()
        step = 1_000_000
        for low in range(0, extra, step):
            conn.execute(
                "insert into sales (id, plate, client, quantity, sold_at, stock_remaining, lat, lon, received_at)"
                " select gen_random_uuid(), (%(carts)s::text[])[1 + i %% %(ncarts)s],"
                " 'cliente ' || (i * 7919) %% 20000, 1 + i %% 10, at, 10 + i %% 90, -33.45, -70.65,"
                " at + interval '1 second'"
                " from generate_series(%(low)s::bigint, %(high)s::bigint - 1) i,"
                " lateral (select %(start)s::timestamptz + make_interval(secs => i * %(span)s / %(extra)s)) t(at)",
                {"carts": carts, "ncarts": len(carts), "low": low, "high": min(low + step, extra),
                 "start": start, "span": span, "extra": extra},
            )  # fmt: skip
            conn.commit()
            progress("history", min(low + step, extra), extra, started)
    with db.connect(autocommit=True) as conn:
        conn.execute("analyze sales")
    return extra


def stats_partitions() -> set[str]:
    """The partitions the day's stats query reads (EXPLAIN)."""
    settings = get_settings()
    tz = settings.guild_timezone
    start, end = guild_time.day_bounds(DAY, tz)
    params = {
        "day_start": start,
        "day_end": end,
        "window_start": guild_time.window_start(DAY, settings.frequent_client_window_days, tz),
        "min_purchases": settings.frequent_client_min_purchases,
        "max_frequent": settings.frequent_clients_max,
    }
    window = settings.frequent_client_window_days
    with db.connect() as conn:
        # As compute_day does first: the window's days get their (maybe empty) partitions.
        sales_partitions.ensure_days(
            conn, sales_partitions.days_between(DAY - timedelta(days=window - 1), DAY), tz
        )
        conn.commit()
        (plan,) = conn.execute("explain (format json) " + db.query("sales_daily_stats"), params).fetchone()
    text = json.dumps(plan)
    with db.connect() as conn:
        names = [r[0] for r in conn.execute("select relname from pg_class where relname like 'sales%%'")]
    return {name for name in names if f'"Relation Name": "{name}"' in text}


def stats_and_report() -> float:
    started = time.monotonic()
    with db.connect() as conn:
        rows, totals = sales_stats.compute_day(conn, DAY)
        sales_stats.store_day(conn, DAY, rows, totals)
        stored, stored_totals = sales_stats.load_day(conn, DAY)
    sales_daily_report.write_daily(DAY, stored, stored_totals)
    return time.monotonic() - started


def bare_aggregate() -> float:
    start, end = guild_time.day_bounds(DAY, get_settings().guild_timezone)
    started = time.monotonic()
    with db.connect() as conn:
        conn.execute(
            "select plate, count(*), sum(quantity), count(distinct client) from sales"
            " where sold_at >= %s and sold_at < %s group by plate",
            (start, end),
        ).fetchall()
    return time.monotonic() - started


@contextlib.contextmanager
def prepared(carts: list[str]) -> Iterator[tuple[ThrowawayStack, datetime]]:
    """A throwaway stack the drain task can run on, with the carts' members; yields it and DAY's start."""
    with throwaway_stack() as stack:
        os.environ.update(af.environment(get_settings(), stack.root / "airflow"))
        sys.path.insert(0, str(REPO_ROOT / "plugins"))
        db_roles.ensure_logins()  # the drain connects as gremio_airflow, as in the DAG
        add_members(carts)
        yield stack, guild_time.day_bounds(DAY, get_settings().guild_timezone)[0].astimezone(UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=1_000_000)
    parser.add_argument("--carts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--table-sales",
        type=int,
        default=0,
        help="sales in the table for the stats (other days added in SQL)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    n, carts = args.sales, plates(args.carts)

    with prepared(carts) as (_, start):
        print(f"producing {n:,} sales of {DAY} from {len(carts)} carts ...", flush=True)
        produce_s = produce(n, carts, start)
        print(f"  produced in {produce_s:.1f} s", flush=True)

        copy_runs, drain_runs = [], []
        for round_ in range(1, args.repeat + 1):
            # Side by side, alternating, so both see the same machine (it is shared).
            print(
                f"round {round_}: baseline, raw COPY of the same rows into a copy of `sales` ...", flush=True
            )
            copy_runs.append(baseline_copy(n, carts, start))
            print(f"  {copy_runs[-1]:.1f} s, {n / copy_runs[-1]:,.0f} rows/s", flush=True)
            print(f"round {round_}: the sales_daily drain task into `sales` ...", flush=True)
            drain_s, result = drain(n, f"bench-drain-{round_}")
            drain_runs.append(drain_s)
            print(
                f"  {drain_s:.1f} s, {n / drain_s:,.0f} rows/s ({result['transactions']} transactions)",
                flush=True,
            )
        ratios = sorted(c / d for c, d in zip(copy_runs, drain_runs, strict=True))
        copy_s, drain_s = statistics.median(copy_runs), statistics.median(drain_runs)

        history = fill_history(args.table_sales, n, carts)
        with db.connect() as conn:
            in_table = conn.execute("select count(*) from sales").fetchone()[0]
        read = sorted(stats_partitions())
        print(f"stats read {len(read)} partitions ({read[0]} .. {read[-1]}) of a table of {in_table:,} sales")
        print(f"stats and report for {DAY}, {args.repeat} times each ...", flush=True)
        report_runs, aggregate_runs = [], []
        for _ in range(args.repeat):
            aggregate_runs.append(bare_aggregate())
            report_runs.append(stats_and_report())
        report_s, aggregate_s = statistics.median(report_runs), statistics.median(aggregate_runs)

    drain_rate, copy_rate = n / drain_s, n / copy_s
    print()
    print(
        f"| measure ({n:,} sales, {len(carts)} carts; medians of {args.repeat}) | gremio | baseline | ratio |"
    )
    print("|---|---|---|---|")
    print(
        f"| drain rate (rows/s; baseline raw COPY) | {drain_rate:,.0f} | {copy_rate:,.0f} "
        f"| **{statistics.median(ratios):.2f}** (rounds {', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.7) |"
    )
    print(
        f"| stats + report for the day, {in_table:,} sales in the table ({history:,} on other days)"
        f" (s; baseline bare aggregate) | {report_s:.2f} | {aggregate_s:.2f} | **{report_s / aggregate_s:.2f}x** |"
    )
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores, shared)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
