"""`sales` by the guild's day (sql/100_sales_partitions.sql, docs/SALES_DAILY.md "Partitions").

* `ensure_days` makes the day partitions a write or a read needs, through the owner's
  `sales_add_partitions` (the only right gremio_airflow has for it: EXECUTE).
* `prepare_chunk` is the sales drain's step before a chunk is written, in the chunk's
  transaction (KafkaDrainOperator's `prepare`): the chunk's days get their partitions, and of
  the sales whose sold_at the API filled in (sold_at = received_at), only those whose id is
  new in `sales_unstamped` are kept. Those are the one case where a retried request (same
  Idempotency-Key, same id) gets another sold_at, which the primary key (id, sold_at) would
  not catch; every other repeat is the same (id, sold_at) and the conflict clause drops it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gremio.settings import get_settings

if TYPE_CHECKING:
    import psycopg

# How KafkaDrainOperator drains into `sales` (the sales_daily DAG, and any other drain into it):
# the key includes sold_at, and each chunk first makes its days' partitions.
DRAIN_OPTIONS: dict[str, Any] = {
    "conflict_columns": ("id", "sold_at"),
    "prepare": "gremio.sales_partitions.prepare_chunk",
}

# A chunk whose sales span more days than this gets partitions for the days it has, not
# for every day between its first and last sale (a stray old sale would make hundreds).
SPAN_DAYS = 14


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def ensure_days(conn: psycopg.Connection, days: Iterable[date], timezone: str | None = None) -> int:
    """The partitions of these guild days, made if missing (in the current transaction); how many were made."""
    wanted = sorted(set(days))
    if not wanted:
        return 0
    tz = timezone or get_settings().guild_timezone
    made = 0
    for i in range(0, len(wanted), 400):  # the function's limit per call
        made += conn.execute("select sales_add_partitions(%s, %s)", (wanted[i : i + 400], tz)).fetchone()[0]
    return made


def chunk_days(stamps: Sequence[datetime], timezone: str) -> set[date]:
    """The guild days of these instants: every day from the first to the last when they are close."""
    zone = ZoneInfo(timezone)
    first, last = min(stamps).astimezone(zone).date(), max(stamps).astimezone(zone).date()
    if (last - first).days <= SPAN_DAYS:
        return set(days_between(first, last))
    return {stamp.astimezone(zone).date() for stamp in stamps}


def prepare_chunk(
    conn: psycopg.Connection, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> set[int]:
    """Before a chunk of sales is written: its days' partitions; returns the rows to leave out.

    Left out: a sale with sold_at = received_at whose id `sales_unstamped` already has (a
    retry of a request without sold_at, stored before), or that an earlier row of the chunk
    has (the same, within one chunk).
    """
    if not rows:
        return set()
    at = {name: columns.index(name) for name in ("id", "sold_at", "received_at")}
    i_id, i_sold, i_received = at["id"], at["sold_at"], at["received_at"]
    sold = [row[i_sold] for row in rows]
    ensure_days(conn, chunk_days(sold, get_settings().guild_timezone))
    unstamped = [i for i, row in enumerate(rows) if row[i_sold] == row[i_received]]
    if not unstamped:
        return set()
    first: dict[Any, int] = {}
    for i in unstamped:
        first.setdefault(rows[i][i_id], i)
    new = {
        r[0]
        for r in conn.execute(
            "insert into sales_unstamped (id, sold_at) select * from unnest(%s::uuid[], %s::timestamptz[])"
            " on conflict do nothing returning id",
            (list(first), [rows[i][i_sold] for i in first.values()]),
        ).fetchall()
    }
    return {i for i in unstamped if first[rows[i][i_id]] != i or rows[i][i_id] not in new}
