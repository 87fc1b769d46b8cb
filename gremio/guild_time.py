"""The guild's time (DESIGN §5): its days, report days and months, in its time zone.

The guild works in America/Santiago (`GUILD_TIMEZONE`): a day there is 23, 24 or 25 hours
long, and a month starts at its first day's first instant. The daily report and the monthly
list both count in these bounds; neither imports the other for them.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# --- days -----------------------------------------------------------------------------------------


# sales_daily's run for a day starts its data interval at this time of the day, in the guild's zone.
DAILY_RUN_TIME = time(0, 15)


def report_day(
    data_interval_start: datetime | None,
    timezone: str,
    override: str | None = None,
    run_after: datetime | None = None,
) -> date:
    """The day a run reports: its data interval starts at 00:15 of that day in the guild's zone.

    A run triggered with `{"day": "YYYY-MM-DD"}` reports that day instead. A run triggered with
    no logical date (`airflow dags trigger`, the REST API) has no data interval in Airflow 3: it
    reports the last day complete at its `run_after`, the interval Airflow gives a manual run.
    """
    if override:
        return date.fromisoformat(override)
    if data_interval_start is None:
        local = _run_after(run_after).astimezone(ZoneInfo(timezone))
        ended = local.date() if local.time() >= DAILY_RUN_TIME else local.date() - timedelta(days=1)
        return ended - timedelta(days=1)
    return data_interval_start.astimezone(ZoneInfo(timezone)).date()


def _run_after(run_after: datetime | None) -> datetime:
    if run_after is None:
        raise ValueError("a run with no data interval and no run_after has no day or month")
    return run_after


def day_start(day: date, timezone: str) -> datetime:
    """The first instant of `day` in the guild's zone.

    When the clocks jump at midnight (Chile's September change), 00:00 does not exist and
    the day starts at the jump: zoneinfo reads a missing time with the offset in force
    before it, which lands exactly there.
    """
    return datetime.combine(day, time(0), ZoneInfo(timezone))


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) of the guild's day: 23, 24 or 25 hours long."""
    return day_start(day, timezone), day_start(day + timedelta(days=1), timezone)


def window_start(day: date, days: int, timezone: str) -> datetime:
    """The start of the `days`-day window that ends with `day` (inclusive)."""
    return day_start(day - timedelta(days=days - 1), timezone)


# --- months ---------------------------------------------------------------------------------------


def parse_month(text: str) -> date:
    """`2026-11` → 2026-11-01."""
    try:
        year, month = (int(part) for part in text.split("-"))
        return date(year, month, 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a month: expected YYYY-MM, e.g. 2026-11") from None


def month_bounds(month: date, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) of the month in the guild's zone (its first and next month's first instant)."""
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return day_start(month.replace(day=1), timezone), day_start(following, timezone)


def report_month(
    data_interval_start: datetime | None,
    timezone: str,
    override: str | None = None,
    run_after: datetime | None = None,
) -> date:
    """The month a members_monthly run decides: its data interval is that month, or `override`.

    A run with no data interval (triggered with no logical date) decides the last month
    complete at its `run_after`.
    """
    if override:
        return parse_month(override)
    if data_interval_start is None:
        first = _run_after(run_after).astimezone(ZoneInfo(timezone)).date().replace(day=1)
        return (first - timedelta(days=1)).replace(day=1)
    return data_interval_start.astimezone(ZoneInfo(timezone)).date().replace(day=1)
