"""The daily sales report files (DESIGN §5): `reports/daily/D.txt`, `.csv`, `.json` and `.png`.

Every file is rendered to bytes by a pure function of the day's rows, so a re-run of a day
writes the same bytes. User text is made safe on the way (gremio.safetext): CSV text cells
are neutralized against spreadsheet formula injection, and the .txt has no control
characters. Each file is written under a temporary name that is then renamed, so a
reader never sees half a report.

A day that late sales revised (`gremio.sales_stats.Revision`) says so in its .json
(`"revision"`) and its .txt (a line under the date); its .csv keeps the contract's columns,
and a day never revised has no note at all.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path

from gremio.report_files import (
    cl_dec,
    cl_int,
    csv_bytes,
    local_instant,
    spanish_date,
    spanish_moment,
    text_lines,
    write_atomic,
)
from gremio.safetext import csv_cell, printable
from gremio.sales_stats import UNREGISTERED, DayTotals, MasterDay, Revision
from gremio.settings import Settings, get_settings

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "day",
    "rut",
    "name",
    "plate",
    "sales_count",
    "units_sold",
    "clients",
    "avg_units_per_client",
    "frequent_clients",
)

TOP_MASTERS = 3
CHART_MAX_BARS = 40
CHART_NAME_CHARS = 40


def daily_dir(reports_dir: Path) -> Path:
    return reports_dir / "daily"


def write_daily(
    day: date,
    rows: list[MasterDay],
    totals: DayTotals,
    settings: Settings | None = None,
    chart: bool = True,
    revision: Revision | None = None,
) -> list[Path]:
    """Write the day's report files under settings.reports_dir; returns their paths."""
    settings = settings or get_settings()
    tz = settings.guild_timezone
    rule = (settings.frequent_client_min_purchases, settings.frequent_client_window_days)
    renderers: dict[str, Callable[[], bytes]] = {
        "csv": lambda: render_csv(rows),
        "json": lambda: render_json(day, rows, totals, tz, revision),
        "txt": lambda: render_txt(day, rows, totals, tz, rule, revision),
    }
    if chart and _can_draw():
        renderers["png"] = lambda: render_png(day, rows)
    folder = daily_dir(settings.reports_dir)
    return [write_atomic(folder / f"{day.isoformat()}.{ext}", render()) for ext, render in renderers.items()]


# --- CSV and JSON: for machines ----------------------------------------------------------------


def render_csv(rows: list[MasterDay]) -> bytes:
    """The contract's columns; text cells through `csv_cell` (formula injection), numbers as they are."""
    return csv_bytes(
        CSV_COLUMNS,
        (
            [
                r.day.isoformat(),
                csv_cell(r.rut),
                csv_cell(r.name),
                csv_cell(r.plate),
                r.sales_count,
                r.units_sold,
                r.clients,
                f"{r.avg_units_per_client:.2f}",
                csv_cell(r.frequent_clients_text),
            ]
            for r in rows
        ),
    )


def revision_doc(revision: Revision | None, timezone: str) -> dict[str, object] | None:
    """The .json's `revision`: when late sales last changed the day, how many, and its first report."""
    if revision is None or revision.revised_at is None or not revision.revised:
        return None
    first = revision.first_reported_at
    return {
        "revised_at": local_instant(revision.revised_at, timezone).isoformat(),
        "late_sales": revision.late_sales,
        "first_reported_at": local_instant(first, timezone).isoformat() if first else None,
    }


def render_json(
    day: date, rows: list[MasterDay], totals: DayTotals, timezone: str, revision: Revision | None = None
) -> bytes:
    """The day for programs; `revision` only on a day late sales revised."""
    doc: dict[str, object] = {"day": day.isoformat(), "timezone": timezone}
    note = revision_doc(revision, timezone)
    if note is not None:
        doc["revision"] = note
    doc |= {
        "masters": [
            {
                "day": r.day.isoformat(),
                "rut": r.rut,
                "name": r.name,
                "plate": r.plate,
                "sales_count": r.sales_count,
                "units_sold": r.units_sold,
                "clients": r.clients,
                "avg_units_per_client": float(r.avg_units_per_client),
                "frequent_clients": [
                    {"client": c.client, "purchases": c.purchases, "units": c.units}
                    for c in r.frequent_clients
                ],
            }
            for r in rows
        ],
        "totals": {
            "sales_count": totals.sales_count,
            "units_sold": totals.units_sold,
            "clients": totals.clients,
            "avg_units_per_client": float(totals.avg_units_per_client),
        },
    }
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


# --- TXT: for the guild's staff ----------------------------------------------------------------


def _display_name(r: MasterDay) -> str:
    return "Sin registro" if r.rut == UNREGISTERED else r.name


def _display_plate(r: MasterDay) -> str:
    if r.rut != UNREGISTERED:
        return r.plate
    count = len(r.plate.split(";")) if r.plate else 0
    return f"{count} patente{'s' if count != 1 else ''}"


def revision_line(revision: Revision | None, timezone: str) -> str | None:
    """The .txt's note on a day late sales revised (None on a day never revised)."""
    if revision is None or revision.revised_at is None or not revision.revised:
        return None
    n = revision.late_sales
    arrived = (
        "1 venta de este día llegó después del primer informe y ya está incluida"
        if n == 1
        else f"{cl_int(n)} ventas de este día llegaron después del primer informe y ya están incluidas"
    )
    return f"REVISADO el {spanish_moment(revision.revised_at, timezone)}: {arrived}."


def render_txt(
    day: date,
    rows: list[MasterDay],
    totals: DayTotals,
    timezone: str,
    frequent_rule: tuple[int, int] = (2, 30),
    revision: Revision | None = None,
) -> bytes:
    """The report people read; `frequent_rule` is (minimum purchases, window in days)."""
    headers = (
        "Maestro",
        "RUT",
        "Patente",
        "Ventas",
        "Unidades",
        "Clientes",
        "Prom/cliente",
        "Clientes frecuentes",
    )
    right = (False, False, False, True, True, True, True, False)
    table = [
        (
            _display_name(r),
            "—" if r.rut == UNREGISTERED else r.rut,
            _display_plate(r),
            cl_int(r.sales_count),
            cl_int(r.units_sold),
            cl_int(r.clients),
            cl_dec(r.avg_units_per_client),
            ", ".join(f"{c.client} ({c.purchases})" for c in r.frequent_clients) or "—",
        )
        for r in rows
    ]
    masters = sum(1 for r in rows if r.registered)
    selling = sum(1 for r in rows if r.registered and r.sales_count > 0)
    unregistered = next((r for r in rows if not r.registered), None)
    total = (
        "TOTAL",
        "",
        "",
        cl_int(totals.sales_count),
        cl_int(totals.units_sold),
        cl_int(totals.clients),
        cl_dec(totals.avg_units_per_client),
        "",
    )
    widths = [max(len(line[i]) for line in (headers, *table, total)) for i in range(len(headers))]

    def line(cells: tuple[str, ...]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "  ".join(padded).rstrip()

    rule = "  ".join("─" * w for w in widths)
    out = [
        "GREMIO DE SOPAIPILLEROS · Ventas del día",
        f"{spanish_date(day).capitalize()} ({day.isoformat()}, hora de {timezone.rpartition('/')[2].replace('_', ' ')})",
        *filter(None, [revision_line(revision, timezone)]),
        "",
        f"Maestros con ventas: {selling} de {masters} · Ventas: {cl_int(totals.sales_count)}"
        f" · Unidades: {cl_int(totals.units_sold)} · Clientes: {cl_int(totals.clients)}",
        "",
    ]
    top = [r for r in rows if r.registered and r.units_sold > 0][:TOP_MASTERS]
    if top:
        out.append("Los maestros del día")
        for rank, r in enumerate(top, 1):
            out.append(
                f"  {rank}. {r.name} ({r.plate}): {cl_int(r.units_sold)} unidades, "
                f"{cl_int(r.sales_count)} ventas, {cl_int(r.clients)} clientes"
            )
    else:
        out.append("Ningún maestro registró ventas este día.")
    out += ["", line(headers), rule, *(line(cells) for cells in table), rule, line(total), ""]
    if unregistered is not None:
        out.append(
            f"Sin registro: ventas de patentes sin maestro aprobado ({unregistered.plate.replace(';', ', ')})."
        )
    out += [
        "Unidades: sopaipillas vendidas. Prom/cliente: unidades por cliente, a 2 decimales.",
        f"Clientes frecuentes: {frequent_rule[0]} o más compras al mismo maestro en los {frequent_rule[1]} días"
        " que cierran con este; entre paréntesis, sus compras.",
        "En el total, un cliente que compró a varios maestros cuenta una vez.",
        "",
    ]
    return text_lines(out)


def _can_draw() -> bool:
    """The chart is a courtesy: without matplotlib the other three files are still written."""
    if importlib.util.find_spec("matplotlib") is None:
        log.warning("matplotlib is not installed: the daily chart (.png) is skipped")
        return False
    return True


# --- PNG: units per master ----------------------------------------------------------------------


def _chart_label(r: MasterDay) -> str:
    """`name (plate)`, the name cut to CHART_NAME_CHARS characters (the .txt has it whole).

    Plain text: no control characters, and a `$` is not the start of matplotlib's mathtext.
    """
    name = printable(_display_name(r))
    if len(name) > CHART_NAME_CHARS:
        name = name[: CHART_NAME_CHARS - 1].rstrip() + "…"
    return f"{name} ({printable(_display_plate(r))})".replace("$", r"\$")


def render_png(day: date, rows: list[MasterDay]) -> bytes:
    """A bar chart of units per master; the same rows give the same bytes (no timestamps)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    shown = rows[:CHART_MAX_BARS]
    labels = [_chart_label(r) for r in shown]
    units = [r.units_sold for r in shown]
    fig = Figure(figsize=(9, 1.5 + 0.35 * max(len(shown), 1)), dpi=100)
    ax = fig.add_subplot()
    bars = ax.barh(range(len(shown)), units, color=["#c8553d" if r.registered else "#8d99ae" for r in shown])
    ax.set_yticks(range(len(shown)), labels)
    ax.invert_yaxis()
    ax.bar_label(bars, labels=[cl_int(u) for u in units], padding=3, fontsize=8)
    ax.set_xlabel("Unidades vendidas")
    more = f" (los {CHART_MAX_BARS} primeros de {len(rows)})" if len(rows) > len(shown) else ""
    ax.set_title(f"Unidades por maestro · {spanish_date(day)}{more}")
    ax.spines[["top", "right"]].set_visible(False)
    out = io.BytesIO()
    with warnings.catch_warnings():
        # A name in a script or an emoji the chart's font lacks is drawn as a box: the chart
        # is still right, and the .txt, .csv and .json carry the name as written. For some
        # scripts (Devanagari, Bengali, Tamil...) matplotlib follows the missing glyph's
        # warning with a second one, that it cannot shape the script: the same boxes.
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
        warnings.filterwarnings("ignore", r"Matplotlib currently does not support .* natively", UserWarning)
        fig.tight_layout()
        fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()
