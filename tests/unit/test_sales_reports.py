"""The daily report files (gremio.reports): their exact shape and their stability."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

from gremio import reports
from gremio.sales_stats import UNREGISTERED, DayTotals, FrequentClient, MasterDay
from gremio.settings import Settings

DAY = date(2026, 11, 28)
TZ = "America/Santiago"
ROWS = [
    MasterDay(DAY, "12345678-5", "Juana Pérez", "BBCL12", 3, 1234, 2, (FrequentClient("ana", 3, 7),)),
    MasterDay(DAY, UNREGISTERED, UNREGISTERED, "AB1234;ZZ9999", 2, 5, 2),
    MasterDay(DAY, "7654321-6", "Luis Soto, hijo", "CD5678", 0, 0, 0, (FrequentClient("bo", 2, 2),)),
]
TOTALS = DayTotals(5, 1239, 3)


def test_csv_has_the_contract_columns_and_quotes_only_when_needed():
    assert reports.render_csv(ROWS).decode() == (
        "day,rut,name,plate,sales_count,units_sold,clients,avg_units_per_client,frequent_clients\n"
        "2026-11-28,12345678-5,Juana Pérez,BBCL12,3,1234,2,617.00,ana:3\n"
        "2026-11-28,unregistered,unregistered,AB1234;ZZ9999,2,5,2,2.50,\n"
        '2026-11-28,7654321-6,"Luis Soto, hijo",CD5678,0,0,0,0.00,bo:2\n'
    )


def test_json_carries_the_same_rows_with_structured_frequent_clients():
    doc = json.loads(reports.render_json(DAY, ROWS, TOTALS, TZ))
    assert doc["day"] == "2026-11-28"
    assert doc["timezone"] == TZ
    assert [m["rut"] for m in doc["masters"]] == ["12345678-5", UNREGISTERED, "7654321-6"]
    assert doc["masters"][0]["frequent_clients"] == [{"client": "ana", "purchases": 3, "units": 7}]
    assert doc["masters"][0]["avg_units_per_client"] == 617.0
    assert doc["totals"] == {
        "sales_count": 5,
        "units_sold": 1239,
        "clients": 3,
        "avg_units_per_client": 413.0,
    }


def test_txt_is_a_readable_aligned_table_with_totals_and_the_top_masters():
    text = reports.render_txt(DAY, ROWS, TOTALS, TZ).decode()
    lines = text.splitlines()
    assert lines[0] == "GREMIO DE SOPAIPILLEROS · Ventas del día"
    assert lines[1].startswith("Sábado 28 de noviembre de 2026 (2026-11-28")
    assert "  1. Juana Pérez (BBCL12): 1.234 unidades, 3 ventas, 2 clientes" in lines
    header = next(line for line in lines if line.startswith("Maestro  "))
    juana = next(line for line in lines if line.startswith("Juana Pérez"))
    total = next(line for line in lines if line.startswith("TOTAL"))
    # Numbers are right-aligned under their headings.
    for heading, value_line, value in [
        ("Unidades", juana, "1.234"),
        ("Unidades", total, "1.239"),
        ("Prom/cliente", juana, "617,00"),
        ("Prom/cliente", total, "413,00"),
    ]:
        end = header.index(heading) + len(heading)
        assert value_line[end - len(value) : end] == value, (heading, value_line)
    assert total.startswith("TOTAL ")
    assert "Maestros con ventas: 1 de 2 · Ventas: 5 · Unidades: 1.239 · Clientes: 3" in lines
    assert any("Sin registro" in line and "2 patentes" in line for line in lines)
    assert "(AB1234, ZZ9999)" in text
    assert "ana (3)" in juana


def test_a_day_without_sales_still_reads_well():
    text = reports.render_txt(DAY, [ROWS[2]], DayTotals(0, 0, 0), TZ).decode()
    assert "Ningún maestro registró ventas este día." in text
    assert "Maestros con ventas: 0 de 1" in text


def test_chilean_number_formats():
    assert reports.cl_int(1234567) == "1.234.567"
    assert reports.cl_dec(Decimal("1234.5")) == "1.234,50"
    assert reports.spanish_date(date(2026, 9, 16)) == "miércoles 16 de septiembre de 2026"


def test_every_renderer_gives_the_same_bytes_twice():
    for render in (
        lambda: reports.render_csv(ROWS),
        lambda: reports.render_json(DAY, ROWS, TOTALS, TZ),
        lambda: reports.render_txt(DAY, ROWS, TOTALS, TZ),
        lambda: reports.render_png(DAY, ROWS),
    ):
        assert render() == render()


def test_the_chart_is_a_png():
    assert reports.render_png(DAY, ROWS).startswith(b"\x89PNG\r\n\x1a\n")


def test_files_are_written_whole_and_leave_no_temporary_files(tmp_path):
    settings = Settings(reports_dir=tmp_path)
    paths = reports.write_daily(DAY, ROWS, TOTALS, settings)
    assert sorted(p.name for p in (tmp_path / "daily").iterdir()) == [
        "2026-11-28.csv",
        "2026-11-28.json",
        "2026-11-28.png",
        "2026-11-28.txt",
    ]
    assert paths[0].read_bytes() == reports.render_csv(ROWS)
    before = {p.name: p.read_bytes() for p in paths}
    reports.write_daily(DAY, ROWS, TOTALS, settings)
    assert {p.name: p.read_bytes() for p in paths} == before


def test_without_matplotlib_the_chart_is_skipped_and_the_rest_written(tmp_path, monkeypatch):
    real_find_spec = reports.importlib.util.find_spec
    monkeypatch.setattr(
        reports.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a),
    )
    paths = reports.write_daily(DAY, ROWS, TOTALS, Settings(reports_dir=tmp_path))
    assert sorted(p.suffix for p in paths) == [".csv", ".json", ".txt"]
