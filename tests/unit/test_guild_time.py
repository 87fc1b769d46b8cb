"""The guild's time (gremio.guild_time): Santiago days and months, through the clock changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gremio.guild_time import day_bounds, month_bounds, parse_month, report_day, report_month, window_start

TZ = "America/Santiago"
SCL = ZoneInfo(TZ)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_run_reports_the_day_its_interval_starts_on_in_santiago():
    # 00:15 in Santiago (summer, UTC-3) is 03:15 UTC of the same day.
    assert report_day(utc(2026, 11, 28, 3, 15), TZ) == date(2026, 11, 28)
    # In winter (UTC-4) it is 04:15 UTC.
    assert report_day(utc(2026, 7, 10, 4, 15), TZ) == date(2026, 7, 10)


def test_a_day_given_in_the_run_config_wins():
    assert report_day(utc(2026, 11, 28, 3, 15), TZ, "2026-11-01") == date(2026, 11, 1)
    assert report_day(utc(2026, 11, 28, 3, 15), TZ, None) == date(2026, 11, 28)


def test_the_day_is_the_guilds_day_not_utcs():
    start, end = day_bounds(date(2026, 11, 28), TZ)
    assert start == utc(2026, 11, 28, 3, 0)
    assert end == utc(2026, 11, 29, 3, 0)


def test_the_day_the_clocks_go_back_has_25_hours():
    # Chile leaves summer time at Saturday 24:00 -> 23:00 (first Sunday of April).
    start, end = day_bounds(date(2026, 4, 4), TZ)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=25)


def test_the_day_the_clocks_go_forward_has_23_hours_and_starts_at_the_jump():
    # Saturday 24:00 -> Sunday 01:00 (first Sunday of September): Sunday has no 00:00.
    start, end = day_bounds(date(2026, 9, 6), TZ)
    assert start.astimezone(UTC) == utc(2026, 9, 6, 4, 0)
    assert start.astimezone(UTC).astimezone(SCL).hour == 1
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)


def test_consecutive_days_meet_without_gap_or_overlap():
    day = date(2026, 3, 20)
    for _ in range(400):
        assert day_bounds(day, TZ)[1].astimezone(UTC) == day_bounds(day + timedelta(days=1), TZ)[
            0
        ].astimezone(UTC)
        day += timedelta(days=1)


def test_the_frequent_client_window_is_30_days_ending_with_the_day():
    assert window_start(date(2026, 11, 28), 30, TZ) == day_bounds(date(2026, 10, 30), TZ)[0]
    assert window_start(date(2026, 11, 28), 1, TZ) == day_bounds(date(2026, 11, 28), TZ)[0]


def test_month_bounds_are_santiago_midnights():
    start, end = month_bounds(date(2026, 11, 1), "America/Santiago")
    assert start == datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # summer time, UTC-3
    assert end == datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    assert month_bounds(date(2026, 12, 1), "America/Santiago")[1] == datetime(2027, 1, 1, 3, tzinfo=UTC)


def test_a_month_whose_first_midnight_does_not_exist_starts_at_the_jump():
    # 2024-09-01 was the first Sunday of September: clocks went from 00:00 to 01:00.
    start, _ = month_bounds(date(2024, 9, 1), "America/Santiago")
    assert start == datetime(2024, 9, 1, 4, 0, tzinfo=UTC)
    _, august_end = month_bounds(date(2024, 8, 1), "America/Santiago")
    assert august_end == start


def test_the_run_reports_its_data_interval_month_unless_told_otherwise():
    interval_start = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # 2026-11-01 00:00 in Santiago
    assert report_month(interval_start, "America/Santiago") == date(2026, 11, 1)
    assert report_month(interval_start, "America/Santiago", "2025-02") == date(2025, 2, 1)


@pytest.mark.parametrize("text", ["2026-13", "2026", "noviembre", "2026-11-01"])
def test_a_month_must_be_year_dash_month(text):
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month(text)
