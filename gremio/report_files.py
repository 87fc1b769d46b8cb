"""Report files (DESIGN §5): how the guild's reports are written, whatever they report.

Atomic writes (a reader never sees half a file), CSV with LF line ends that survives a CR in
a cell, text lines with no control character, text tables, and Chilean numbers and Spanish
dates without depending on the machine's locale. The daily sales report
(`gremio.sales_daily_report`) and the monthly members list (`gremio.membership_report`)
both write through here.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from gremio.safetext import printable

WEEKDAYS = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")
MONTHS = (
    "enero", "febrero", "marzo", "abril", "mayo", "junio",
    "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre",
)  # fmt: skip


# --- files ------------------------------------------------------------------------------------------


# The monthly members list names applicants with their RUT: its files are the staff's only
# (owner and group), while the daily sales statistics are readable by anyone on the machine.
PUBLIC_FILE, PERSONAL_DATA_FILE = 0o644, 0o640


def write_atomic(path: Path, content: bytes, mode: int = PUBLIC_FILE) -> Path:
    """Write `content` to a temporary file beside `path`, flush it to disk, rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def csv_bytes(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """A CSV file: a header line, then the rows; LF line ends, minimal quoting, UTF-8.

    The csv module quotes a cell only for the characters of its own line terminator, so with
    LF line ends a CR inside a cell would go unquoted and split the row for most readers:
    each row is written with CRLF (so CR and LF in cells are quoted), then ends in LF.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    lines = []
    for row in (columns, *rows):
        writer.writerow(row)
        lines.append(out.getvalue().removesuffix("\r\n"))
        out.seek(0)
        out.truncate()
    return "".join(line + "\n" for line in lines).encode("utf-8")


def text_lines(lines: list[str]) -> bytes:
    """A text report's lines as UTF-8, each through `printable`: no control character or
    invisible format character from a name or a client reaches the file (U+FFFD instead,
    one for one, so the columns stay aligned)."""
    return "\n".join(printable(line) for line in lines).encode("utf-8")


def text_table(headers: Sequence[str], table: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, a rule under the headers."""
    widths = [max(len(line[i]) for line in (headers, *table)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), "  ".join("─" * w for w in widths), *(line(cells) for cells in table)]


# --- Chilean numbers and Spanish dates ---------------------------------------------------------


def spanish_date(day: date) -> str:
    """`sábado 28 de noviembre de 2026`, without depending on the machine's locale."""
    return f"{WEEKDAYS[day.weekday()]} {day.day} de {MONTHS[day.month - 1]} de {day.year}"


def local_instant(instant: datetime, timezone: str) -> datetime:
    """An instant in the guild's zone, to the second (what a report shows of a time)."""
    return instant.astimezone(ZoneInfo(timezone)).replace(microsecond=0)


def spanish_moment(instant: datetime, timezone: str) -> str:
    """`domingo 29 de noviembre de 2026 a las 00:15`, in the guild's zone."""
    local = local_instant(instant, timezone)
    return f"{spanish_date(local.date())} a las {local:%H:%M}"


def cl_int(n: int) -> str:
    """Chilean thousands: 12.345."""
    return f"{n:,}".replace(",", ".")


def cl_dec(d: Decimal) -> str:
    """Chilean decimals: 1.234,50."""
    whole, _, cents = f"{d:,.2f}".partition(".")
    return f"{whole.replace(',', '.')},{cents}"
