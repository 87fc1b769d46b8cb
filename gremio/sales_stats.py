"""Each master's day in numbers (DESIGN §5, daily sales), for the `sales_daily` DAG.

The rules that are pure live here as functions (which day a run reports, the day's bounds
in the guild's time zone, rounding, order, the frequent-clients text); the heavy lifting is
one SQL query, `sql/queries/sales_daily_stats.sql`. Results go to `daily_master_stats`,
from which `gremio.sales_daily_report` writes the files.

Late sales (docs/SALES_DAILY.md, "Late sales"): `daily_sales_totals` also remembers when a
day was first and last reported, how many of its sales the drain stored after its first
report, and when that count last changed (`Revision`); `touched_days` finds the past days
with sales stored since they were last reported, which the next run reports again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from gremio import sales_partitions
from gremio.db import query
from gremio.guild_time import day_bounds, day_start, window_start
from gremio.settings import Settings, get_settings

if TYPE_CHECKING:
    import psycopg

UNREGISTERED = "unregistered"
CENTS = Decimal("0.01")


@dataclass(frozen=True)
class FrequentClient:
    client: str  # the compared form: trimmed and lower-cased
    purchases: int
    units: int


@dataclass(frozen=True)
class MasterDay:
    """One row of the daily report."""

    day: date
    rut: str
    name: str
    plate: str
    sales_count: int
    units_sold: int
    clients: int
    frequent_clients: tuple[FrequentClient, ...] = ()

    @property
    def avg_units_per_client(self) -> Decimal:
        return avg_units(self.units_sold, self.clients)

    @property
    def frequent_clients_text(self) -> str:
        return format_frequent(self.frequent_clients)

    @property
    def registered(self) -> bool:
        return self.rut != UNREGISTERED


@dataclass(frozen=True)
class DayTotals:
    """The whole guild's day: a client who bought from two masters counts once."""

    sales_count: int
    units_sold: int
    clients: int

    @property
    def avg_units_per_client(self) -> Decimal:
        return avg_units(self.units_sold, self.clients)


@dataclass(frozen=True)
class Revision:
    """A day's report history: its first report, and the late sales that revised it."""

    first_reported_at: datetime | None = None
    revised_at: datetime | None = None
    late_sales: int = 0

    @property
    def revised(self) -> bool:
        """Late sales changed the day after its first report: its files say so."""
        return self.revised_at is not None and self.late_sales > 0


# --- pure rules -------------------------------------------------------------------------------


def avg_units(units: int, clients: int) -> Decimal:
    """units / clients to 2 decimals, halves rounded up; 0.00 for a day without clients."""
    if clients == 0:
        return Decimal("0.00")
    return (Decimal(units) / Decimal(clients)).quantize(CENTS, rounding=ROUND_HALF_UP)


def format_frequent(clients: tuple[FrequentClient, ...] | list[FrequentClient]) -> str:
    """`client:purchases` joined by `;` (DESIGN §5)."""
    return ";".join(f"{c.client}:{c.purchases}" for c in clients)


def report_order(rows: list[MasterDay]) -> list[MasterDay]:
    """Units sold, most first, then plate (code-point order, as the CSV is compared)."""
    return sorted(rows, key=lambda r: (-r.units_sold, r.plate, r.rut))


# --- the database -----------------------------------------------------------------------------


def compute_day(
    conn: psycopg.Connection, day: date, settings: Settings | None = None
) -> tuple[list[MasterDay], DayTotals]:
    """Every master's numbers for `day` in report order, and the day's totals, in one read of the sales.

    The window's day partitions are made first if missing (days without sales have none), so
    the query reads exactly the window's partitions, never `sales_default` (sales_partitions).
    """
    settings = settings or get_settings()
    tz = settings.guild_timezone
    start, end = day_bounds(day, tz)
    window = settings.frequent_client_window_days
    with conn.transaction():
        sales_partitions.ensure_days(
            conn, sales_partitions.days_between(day - timedelta(days=window - 1), day), tz
        )
    params = {
        "day_start": start,
        "day_end": end,
        "window_start": window_start(day, window, tz),
        "min_purchases": settings.frequent_client_min_purchases,
        "max_frequent": settings.frequent_clients_max,
    }
    result = conn.cursor(row_factory=dict_row).execute(query("sales_daily_stats"), params).fetchall()
    rows = [
        MasterDay(
            day, r["rut"], r["name"], r["plate"], r["sales_count"], r["units_sold"], r["clients"],
            _frequent(r["frequent_clients"]),
        )
        for r in result
    ]  # fmt: skip
    totals = (
        DayTotals(result[0]["day_sales_count"], result[0]["day_units_sold"], result[0]["day_clients"])
        if result
        else DayTotals(0, 0, 0)
    )
    return report_order(rows), totals


def store_day(
    conn: psycopg.Connection,
    day: date,
    rows: list[MasterDay],
    totals: DayTotals,
    settings: Settings | None = None,
) -> None:
    """Replace the day in daily_master_stats and daily_sales_totals, in one transaction.

    The totals' row also counts the day's sales drained after its first report (`Revision`).
    """
    start, end = day_bounds(day, (settings or get_settings()).guild_timezone)
    with conn.transaction():
        conn.execute(query("sales_daily_prune"), {"day": day, "ruts": [r.rut for r in rows]})
        with conn.cursor() as cur:
            cur.executemany(query("sales_daily_upsert"), [_stored(r) for r in rows])
        conn.execute(
            query("sales_daily_totals_upsert"),
            {
                "day": day,
                "day_start": start,
                "day_end": end,
                "sales_count": totals.sales_count,
                "units_sold": totals.units_sold,
                "clients": totals.clients,
            },
        )


def load_day(conn: psycopg.Connection, day: date) -> tuple[list[MasterDay], DayTotals]:
    """The stored day, in report order, and its totals (zeros if the day was never computed)."""
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute(query("sales_daily_load"), {"day": day}).fetchall()
    stored = cur.execute(query("sales_daily_totals_load"), {"day": day}).fetchone()
    masters = [
        MasterDay(
            r["day"], r["rut"], r["name"], r["plate"], r["sales_count"], r["units_sold"], r["clients"],
            _frequent(r["frequent_clients_detail"]),
        )
        for r in rows
    ]  # fmt: skip
    return report_order(masters), DayTotals(**stored) if stored else DayTotals(0, 0, 0)


def load_revision(conn: psycopg.Connection, day: date) -> Revision:
    """The stored day's revision (no report, no late sales, if it was never computed)."""
    stored = (
        conn.cursor(row_factory=dict_row).execute(query("sales_daily_revision_load"), {"day": day}).fetchone()
    )
    return Revision(**stored) if stored else Revision()


def mark_reported(conn: psycopg.Connection, day: date) -> None:
    """Once the day's files are written: the numbers they show are its report (in one transaction)."""
    with conn.transaction():
        conn.execute(query("sales_daily_mark_reported"), {"day": day})


def touched_days(conn: psycopg.Connection, day: date, settings: Settings | None = None) -> list[date]:
    """The past days, back to `day` minus SALES_MAX_AGE_DAYS, with sales stored since they were last reported.

    Also the days computed but never reported (their checks failed). Oldest first; never `day`
    itself nor a later day. Older sales than that the API refuses, so older days cannot change.
    """
    settings = settings or get_settings()
    tz = settings.guild_timezone
    oldest = day - timedelta(days=settings.sales_max_age_days)
    params = {
        "oldest": oldest,
        "day": day,
        "timezone": tz,
        "window_start": day_start(oldest, tz),
        "window_end": day_start(day, tz),
    }
    return [row[0] for row in conn.execute(query("sales_daily_touched"), params).fetchall()]


def _frequent(value: Any) -> tuple[FrequentClient, ...]:
    items = json.loads(value) if isinstance(value, str) else value or []
    return tuple(FrequentClient(i["client"], int(i["purchases"]), int(i["units"])) for i in items)


def _stored(row: MasterDay) -> dict[str, Any]:
    from psycopg.types.json import Jsonb

    return {
        "day": row.day,
        "rut": row.rut,
        "name": row.name,
        "plate": row.plate,
        "sales_count": row.sales_count,
        "units_sold": row.units_sold,
        "clients": row.clients,
        "avg_units_per_client": row.avg_units_per_client,
        "frequent_clients": row.frequent_clients_text,
        "frequent_clients_detail": Jsonb(
            [{"client": c.client, "purchases": c.purchases, "units": c.units} for c in row.frequent_clients]
        ),
    }
