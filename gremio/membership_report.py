"""The monthly list of new members (DESIGN §5): `reports/members/YYYY-MM.txt` and `.csv`.

The month's rows are its regular applications (received in the month, decided by the
month's review) and the premium applications the fast-track decided in the month: new
members with premium ones marked, then the rejections with their reasons. Both files are
pure functions of those rows (no "generated at"; user text made safe by gremio.safetext, as in
the daily report), written to a temporary name and renamed
(`gremio.report_files.write_atomic`), so re-running a month rewrites the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gremio.membership import spanish_reason
from gremio.report_files import (
    MONTHS,
    PERSONAL_DATA_FILE,
    cl_int,
    csv_bytes,
    text_lines,
    text_table,
    write_atomic,
)
from gremio.safetext import csv_cell
from gremio.settings import Settings, get_settings

CSV_COLUMNS = (
    "month",
    "status",
    "premium",
    "rut",
    "name",
    "plate",
    "received_at",
    "reason",
    "application_id",
)


def members_dir(reports_dir: Path) -> Path:
    return reports_dir / "members"


def write_monthly(
    month: date, rows: Sequence[dict[str, Any]], settings: Settings | None = None
) -> list[Path]:
    """Write the month's .txt and .csv under settings.reports_dir; returns their paths."""
    settings = settings or get_settings()
    tz = settings.guild_timezone
    folder = members_dir(settings.reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o750)  # personal data: the staff's (owner and group) only
    name = f"{month:%Y-%m}"
    return [
        write_atomic(folder / f"{name}.txt", render_txt(month, rows, tz), PERSONAL_DATA_FILE),
        write_atomic(folder / f"{name}.csv", render_csv(month, rows, tz), PERSONAL_DATA_FILE),
    ]


def _when(moment: datetime, timezone: str) -> datetime:
    return moment.astimezone(ZoneInfo(timezone))


def render_csv(month: date, rows: Sequence[dict[str, Any]], timezone: str) -> bytes:
    """One line per decided application; times in the guild's zone with their offset.

    Text cells go through `csv_cell` (no spreadsheet formula injection).
    """
    return csv_bytes(
        CSV_COLUMNS,
        (
            [
                f"{month:%Y-%m}",
                r["status"],
                "true" if r["premium"] else "false",
                csv_cell(r["rut"]),
                csv_cell(r["name"]),
                csv_cell(r["plate"]),
                _when(r["received_at"], timezone).isoformat(timespec="seconds"),
                csv_cell(r["reason"] or ""),
                str(r["id"]),
            ]
            for r in rows
        ),
    )


def render_txt(month: date, rows: Sequence[dict[str, Any]], timezone: str) -> bytes:
    """The list the guild's staff read and pin up, in Spanish."""
    approved = [r for r in rows if r["status"] == "approved"]
    rejected = [r for r in rows if r["status"] == "rejected"]
    premium = sum(1 for r in approved if r["premium"])
    month_name = f"{MONTHS[month.month - 1].capitalize()} de {month.year}"
    place = timezone.rpartition("/")[2].replace("_", " ")

    def received(r: dict[str, Any]) -> str:
        return _when(r["received_at"], timezone).strftime("%d-%m-%Y %H:%M")

    def lane(r: dict[str, Any]) -> str:
        return "premium ★" if r["premium"] else "regular"

    out = [
        "GREMIO DE SOPAIPILLEROS · Nuevos socios del mes",
        f"{month_name} (solicitudes decididas, hora de {place})",
        "",
        f"Nuevos socios: {cl_int(len(approved))} ({cl_int(premium)} premium)"
        f" · Rechazadas: {cl_int(len(rejected))} · Solicitudes decididas: {cl_int(len(rows))}",
        "",
        "NUEVOS SOCIOS",
    ]
    if approved:
        out += text_table(
            ("Socio", "RUT", "Patente", "Vía", "Solicitud"),
            [(r["name"], r["rut"], r["plate"], lane(r), received(r)) for r in approved],
        )
    else:
        out.append("Ningún socio nuevo este mes.")
    out += ["", "SOLICITUDES RECHAZADAS"]
    if rejected:
        out += text_table(
            ("Postulante", "RUT", "Patente", "Vía", "Solicitud", "Motivo"),
            [
                (r["name"], r["rut"], r["plate"], lane(r), received(r), spanish_reason(r["reason"]))
                for r in rejected
            ],
        )
    else:
        out.append("Ninguna solicitud rechazada este mes.")
    out += [
        "",
        "★ premium: decidida por la vía rápida en menos de un minuto; aparece en el mes en que se decidió.",
        "Regular: decidida en la revisión mensual de las solicitudes recibidas en el mes.",
        "Una solicitud se rechaza si el RUT ya es socio, si la patente es de otro socio, por antecedentes,",
        "o si ya hay una solicitud anterior pendiente con el mismo RUT.",
        "",
    ]
    return text_lines(out)
