"""The pure rules of the daily sales statistics (gremio.sales_stats)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from gremio.sales_stats import (
    UNREGISTERED,
    FrequentClient,
    MasterDay,
    avg_units,
    day_bounds,
    format_frequent,
    report_day,
    report_order,
    window_start,
)

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


@pytest.mark.parametrize(
    ("units", "clients", "expected"),
    [
        (10, 4, "2.50"),
        (10, 3, "3.33"),
        (20, 3, "6.67"),
        (1, 8, "0.13"),  # 0.125: halves round up
        (3, 8, "0.38"),  # 0.375
        (5, 1, "5.00"),
        (0, 0, "0.00"),  # no clients, nothing to divide
    ],
)
def test_units_per_client_rounds_half_up_to_two_decimals(units, clients, expected):
    assert avg_units(units, clients) == Decimal(expected)
    assert f"{avg_units(units, clients):.2f}" == expected


def test_frequent_clients_are_written_client_colon_purchases_joined_by_semicolons():
    clients = [FrequentClient("ana maría", 3, 9), FrequentClient("bob", 2, 2)]
    assert format_frequent(clients) == "ana maría:3;bob:2"
    assert format_frequent([]) == ""


def _row(rut: str, plate: str, units: int) -> MasterDay:
    return MasterDay(date(2026, 11, 28), rut, rut, plate, 1, units, 1)


def test_rows_go_by_units_sold_then_plate():
    rows = [
        _row("1-9", "BBCL12", 5),
        _row("2-7", "AB1234", 5),
        _row(UNREGISTERED, "ZZ9999", 9),
        _row("3-5", "CD5678", 0),
    ]
    assert [r.plate for r in report_order(rows)] == ["ZZ9999", "AB1234", "BBCL12", "CD5678"]


def test_a_master_row_knows_its_derived_values():
    row = MasterDay(date(2026, 11, 28), "1-9", "Ana Pérez", "BBCL12", 3, 7, 2, (FrequentClient("x", 2, 4),))
    assert row.avg_units_per_client == Decimal("3.50")
    assert row.frequent_clients_text == "x:2"
    assert row.registered
    assert not _row(UNREGISTERED, "ZZ9999", 1).registered
