"""The daily report files (gremio.sales_daily_report): their exact shape and their stability."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from gremio import sales_daily_report
from gremio.report_files import spanish_moment
from gremio.sales_stats import UNREGISTERED, DayTotals, FrequentClient, MasterDay, Revision
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
    assert sales_daily_report.render_csv(ROWS).decode() == (
        "day,rut,name,plate,sales_count,units_sold,clients,avg_units_per_client,frequent_clients\n"
        "2026-11-28,12345678-5,Juana Pérez,BBCL12,3,1234,2,617.00,ana:3\n"
        "2026-11-28,unregistered,unregistered,AB1234;ZZ9999,2,5,2,2.50,\n"
        '2026-11-28,7654321-6,"Luis Soto, hijo",CD5678,0,0,0,0.00,bo:2\n'
    )


def test_json_carries_the_same_rows_with_structured_frequent_clients():
    doc = json.loads(sales_daily_report.render_json(DAY, ROWS, TOTALS, TZ))
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
    text = sales_daily_report.render_txt(DAY, ROWS, TOTALS, TZ).decode()
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
    text = sales_daily_report.render_txt(DAY, [ROWS[2]], DayTotals(0, 0, 0), TZ).decode()
    assert "Ningún maestro registró ventas este día." in text
    assert "Maestros con ventas: 0 de 1" in text


def test_chilean_number_formats():
    assert sales_daily_report.cl_int(1234567) == "1.234.567"
    assert sales_daily_report.cl_dec(Decimal("1234.5")) == "1.234,50"
    assert sales_daily_report.spanish_date(date(2026, 9, 16)) == "miércoles 16 de septiembre de 2026"


def test_every_renderer_gives_the_same_bytes_twice():
    for render in (
        lambda: sales_daily_report.render_csv(ROWS),
        lambda: sales_daily_report.render_json(DAY, ROWS, TOTALS, TZ),
        lambda: sales_daily_report.render_txt(DAY, ROWS, TOTALS, TZ),
        lambda: sales_daily_report.render_png(DAY, ROWS),
    ):
        assert render() == render()


# --- late sales: the revision note (issue 15) ------------------------------------------------------

SCL = ZoneInfo(TZ)
FIRST_REPORT = datetime(2026, 11, 29, 0, 16, 5, 123456, tzinfo=SCL)
REVISED = Revision(FIRST_REPORT, datetime(2026, 11, 30, 3, 15, 42, 987654, tzinfo=UTC), 3)


def test_a_revised_day_says_so_in_its_json_when_and_how_many_late_sales():
    doc = json.loads(sales_daily_report.render_json(DAY, ROWS, TOTALS, TZ, REVISED))
    assert doc["revision"] == {
        "revised_at": "2026-11-30T00:15:42-03:00",  # the guild's time, to the second
        "late_sales": 3,
        "first_reported_at": "2026-11-29T00:16:05-03:00",
    }
    assert list(doc) == ["day", "timezone", "revision", "masters", "totals"]
    unrevised = json.loads(sales_daily_report.render_json(DAY, ROWS, TOTALS, TZ))
    assert {k: v for k, v in doc.items() if k != "revision"} == unrevised


def test_a_revised_day_says_so_in_its_txt_in_spanish_under_the_date():
    lines = sales_daily_report.render_txt(DAY, ROWS, TOTALS, TZ, revision=REVISED).decode().splitlines()
    assert lines[1].startswith("Sábado 28 de noviembre de 2026")
    assert lines[2] == (
        "REVISADO el lunes 30 de noviembre de 2026 a las 00:15: 3 ventas de este día llegaron"
        " después del primer informe y ya están incluidas."
    )
    assert lines[3] == ""
    one = Revision(FIRST_REPORT, REVISED.revised_at, 1)
    assert "REVISADO el lunes 30 de noviembre de 2026 a las 00:15: 1 venta de este día llegó después" in (
        sales_daily_report.render_txt(DAY, ROWS, TOTALS, TZ, revision=one).decode()
    )
    many = Revision(FIRST_REPORT, REVISED.revised_at, 1234)
    assert (
        ": 1.234 ventas de este día"
        in sales_daily_report.render_txt(DAY, ROWS, TOTALS, TZ, revision=many).decode()
    )


def test_a_day_never_revised_has_no_note_and_the_same_bytes_as_before():
    plain = (
        sales_daily_report.render_json(DAY, ROWS, TOTALS, TZ),
        sales_daily_report.render_txt(DAY, ROWS, TOTALS, TZ),
    )
    for revision in (None, Revision(), Revision(FIRST_REPORT), Revision(FIRST_REPORT, REVISED.revised_at, 0)):
        assert not (revision and revision.revised)
        got = (
            sales_daily_report.render_json(DAY, ROWS, TOTALS, TZ, revision),
            sales_daily_report.render_txt(DAY, ROWS, TOTALS, TZ, revision=revision),
        )
        assert got == plain
    assert b"REVISADO" not in plain[1] and b"revision" not in plain[0]


def test_a_revised_day_keeps_the_contract_csv_and_its_bytes_on_a_rerun(tmp_path):
    settings = Settings(reports_dir=tmp_path)
    paths = sales_daily_report.write_daily(DAY, ROWS, TOTALS, settings, chart=False, revision=REVISED)
    written = {p.suffix: p.read_bytes() for p in paths}
    assert written[".csv"] == sales_daily_report.render_csv(ROWS)
    assert written[".csv"].decode().splitlines()[0] == ",".join(sales_daily_report.CSV_COLUMNS)
    sales_daily_report.write_daily(DAY, ROWS, TOTALS, settings, chart=False, revision=REVISED)
    assert {p.suffix: p.read_bytes() for p in paths} == written


def test_spanish_moments_are_in_the_guilds_time():
    assert spanish_moment(datetime(2026, 11, 30, 3, 15, 59, tzinfo=UTC), TZ) == (
        "lunes 30 de noviembre de 2026 a las 00:15"
    )
    # Winter time (UTC-4) after the first Saturday of April.
    assert (
        spanish_moment(datetime(2026, 6, 1, 4, 5, tzinfo=UTC), TZ) == "lunes 1 de junio de 2026 a las 00:05"
    )


def test_the_chart_is_a_png():
    assert sales_daily_report.render_png(DAY, ROWS).startswith(b"\x89PNG\r\n\x1a\n")


def test_files_are_written_whole_and_leave_no_temporary_files(tmp_path):
    settings = Settings(reports_dir=tmp_path)
    paths = sales_daily_report.write_daily(DAY, ROWS, TOTALS, settings)
    assert sorted(p.name for p in (tmp_path / "daily").iterdir()) == [
        "2026-11-28.csv",
        "2026-11-28.json",
        "2026-11-28.png",
        "2026-11-28.txt",
    ]
    assert paths[0].read_bytes() == sales_daily_report.render_csv(ROWS)
    before = {p.name: p.read_bytes() for p in paths}
    sales_daily_report.write_daily(DAY, ROWS, TOTALS, settings)
    assert {p.name: p.read_bytes() for p in paths} == before


def test_without_matplotlib_the_chart_is_skipped_and_the_rest_written(tmp_path, monkeypatch):
    real_find_spec = sales_daily_report.importlib.util.find_spec
    monkeypatch.setattr(
        sales_daily_report.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a),
    )
    paths = sales_daily_report.write_daily(DAY, ROWS, TOTALS, Settings(reports_dir=tmp_path))
    assert sorted(p.suffix for p in paths) == [".csv", ".json", ".txt"]


# --- user text in the files (formula injection, control characters) ---------------------------------

HOSTILE = ['=HYPERLINK("http://evil.example","x")', "+1", "-2+3", "@SUM(A1:A9)", "\tx", "\rx"]


def hostile_rows() -> list[MasterDay]:
    return [
        MasterDay(DAY, "12345678-5", text, "BBCL12", 1, 2, 1, (FrequentClient(text, 2, 2),))
        for text in HOSTILE
    ]


def test_csv_text_cells_that_could_start_a_formula_are_prefixed_and_numbers_stay_numbers():
    import csv
    import io

    rows = list(csv.reader(io.StringIO(sales_daily_report.render_csv(hostile_rows()).decode(), newline="")))
    assert rows[0] == list(sales_daily_report.CSV_COLUMNS)
    for text, row in zip(HOSTILE, rows[1:], strict=True):
        assert row[2] == "'" + text  # name
        assert row[8] == f"'{text}:2"  # frequent_clients
        assert row[4:8] == ["1", "2", "1", "2.00"]  # numbers untouched
        assert row[1] == "12345678-5" and row[3] == "BBCL12"


def test_csv_with_hostile_text_gives_the_same_bytes_twice():
    assert sales_daily_report.render_csv(hostile_rows()) == sales_daily_report.render_csv(hostile_rows())


def test_csv_leaves_ordinary_text_alone():
    row = MasterDay(DAY, "1-9", "María-José 'Pepa'", "BBCL12", 1, 1, 1, (FrequentClient("don-pepe", 2, 2),))
    assert sales_daily_report.render_csv([row]).decode().splitlines()[1] == (
        "2026-11-28,1-9,María-José 'Pepa',BBCL12,1,1,1,1.00,don-pepe:2"
    )


def test_txt_shows_no_control_characters_and_keeps_its_columns():
    rows = [
        MasterDay(DAY, "12345678-5", "Ana\x1b[2J\u202eX", "BBCL12", 3, 9, 1, (FrequentClient("a\nb", 2, 2),)),
        MasterDay(DAY, "7654321-6", "Normal Name", "CD5678", 1, 1, 1),
    ]
    text = sales_daily_report.render_txt(DAY, rows, DayTotals(4, 10, 2), TZ).decode()
    assert not any(ord(ch) < 0x20 and ch != "\n" for ch in text)
    assert "\x1b" not in text and "\u202e" not in text and "\x7f" not in text
    assert "Ana\ufffd[2J\ufffdX" in text
    assert "a\ufffdb (2)" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("Maestro  "))
    ana = next(line for line in lines if line.startswith("Ana"))
    normal = next(line for line in lines if line.startswith("Normal Name"))
    assert ana.index("12345678-5") == normal.index("7654321-6") == header.index("RUT")
    assert sales_daily_report.render_txt(DAY, rows, DayTotals(4, 10, 2), TZ) == sales_daily_report.render_txt(
        DAY, rows, DayTotals(4, 10, 2), TZ
    )


def test_the_chart_takes_hostile_names():
    rows = [MasterDay(DAY, "12345678-5", "$\\frac{1}{$ \x1b", "BBCL12", 1, 2, 1)]
    assert sales_daily_report.render_png(DAY, rows).startswith(b"\x89PNG")


def test_the_chart_draws_names_its_font_lacks_as_boxes_without_a_warning():
    # pytest turns warnings into errors here: a missing glyph must not fail the daily run.
    rows = [MasterDay(DAY, "12345678-5", "Zoë 🥟🇨🇱 مرحبا 漢字", "BBCL12", 1, 2, 1)]
    assert sales_daily_report.render_png(DAY, rows).startswith(b"\x89PNG")


def test_the_chart_draws_scripts_matplotlib_cannot_shape_without_a_warning():
    # For Devanagari, Bengali, Tamil... matplotlib adds "Matplotlib currently does not
    # support Devanagari natively." to the missing glyph's warning (found by
    # tests/integration/test_hostile_properties.py with a master named "नमस्ते").
    rows = [MasterDay(DAY, "12345678-5", "नमस्ते সুমি தமிழ்", "BBCL12", 1, 2, 1)]
    assert sales_daily_report.render_png(DAY, rows).startswith(b"\x89PNG")


def test_chart_labels_are_cut_to_fit_and_keep_a_literal_dollar():
    longest = MasterDay(DAY, "12345678-5", "x" * 80 + " " + "y" * 80, "BBCL12", 1, 2, 1)
    label = sales_daily_report._chart_label(longest)
    assert label == "x" * 39 + "… (BBCL12)"
    assert sales_daily_report._chart_label(MasterDay(DAY, "1-9", "$5", "BBCL12", 1, 1, 1)) == r"\$5 (BBCL12)"
    assert sales_daily_report.render_png(DAY, [longest]).startswith(b"\x89PNG")  # no tight-layout warning
