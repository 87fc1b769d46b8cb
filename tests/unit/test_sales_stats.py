"""The pure rules of the daily sales statistics (gremio.sales_stats)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from gremio.sales_stats import (
    UNREGISTERED,
    FrequentClient,
    MasterDay,
    Revision,
    avg_units,
    format_frequent,
    report_order,
)


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


def test_a_day_is_revised_only_when_late_sales_changed_it():
    reported = datetime(2026, 11, 29, 3, 16, tzinfo=UTC)
    assert not Revision().revised  # never reported
    assert not Revision(reported).revised  # reported once, nothing late
    assert not Revision(reported, reported, 0).revised  # the late sales went away again
    assert Revision(reported, reported, 2).revised
