"""The membership commands: `gremio flag`, `gremio applications` and `gremio members`.

The screens the guild's staff read; the rules and decisions are `gremio.membership`.
Applicants' text goes to rich as `Text` (gremio.safetext.screen): never parsed as markup, and
without control characters.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from psycopg.rows import dict_row, namedtuple_row

from gremio.db import connect, query
from gremio.guild_time import month_bounds, parse_month
from gremio.safetext import printable, screen
from gremio.settings import get_settings

if TYPE_CHECKING:
    from rich.table import Table


def flag_rut(rut: str, reason: str, remove: bool = False) -> int:
    """`gremio flag RUT --reason ... [--remove]`: antecedentes that reject the RUT's applications."""
    from gremio.records import normalize_rut

    try:
        rut = normalize_rut(rut)
    except ValueError as exc:
        print(f"gremio flag: {exc}", file=sys.stderr)
        return 2
    reason = " ".join(reason.split())
    if not remove and not reason:
        print("gremio flag: --reason must say why", file=sys.stderr)
        return 2
    if reason != printable(reason):
        print("gremio flag: --reason must be plain text (no control characters)", file=sys.stderr)
        return 2
    with connect() as conn:
        if remove:
            gone = conn.execute(query("members_unflag"), {"rut": rut}).fetchone()
            print(f"{rut}: flag lifted" if gone else f"{rut}: was not flagged")
            return 0
        conn.execute(query("members_flag"), {"rut": rut, "reason": reason})
        status = (
            conn.cursor(row_factory=namedtuple_row)
            .execute(query("members_flag_status"), {"rut": rut})
            .fetchone()
        )
    print(f"{rut}: flagged ({reason}); {status.pending} pending application(s) will be rejected when decided")
    if status.member_plate:
        print(
            f"note: {rut} is already a member (cart {status.member_plate}); a flag does not undo a membership"
        )
    return 0


def print_applications(status: str | None = None, month: str | None = None, limit: int = 200) -> int:
    """`gremio applications`: the applications, newest last, with their status and reason."""
    settings = get_settings()
    params: dict[str, Any] = {
        "status": status,
        "month_start": None,
        "month_end": None,
        "limit": limit or None,
    }
    if month:
        try:
            params["month_start"], params["month_end"] = month_bounds(
                parse_month(month), settings.guild_timezone
            )
        except ValueError as exc:
            print(f"gremio applications: {exc}", file=sys.stderr)
            return 2
    with connect() as conn:
        rows = (
            conn.cursor(row_factory=dict_row).execute(query("members_applications_list"), params).fetchall()
        )
    if not rows:
        print("no applications" + (" match" if status or month else " yet"))
        return 0
    title = "Applications" + (f" received in {month}" if month else "") + (f", {status}" if status else "")
    _console().print(applications_table(rows, settings.guild_timezone, title))
    return 0


def applications_table(
    rows: Sequence[Mapping[str, Any]], timezone: str, title: str = "Applications"
) -> Table:
    """The rows of `members_applications_list` as a rich table.

    Applicants' text goes in as `Text` (gremio.safetext.screen): never parsed as markup, and
    without control characters.
    """
    from rich.table import Table

    tz = ZoneInfo(timezone)
    table = Table(title=screen(f"{title} ({len(rows)}; times in {timezone})"))
    for column in ("received", "lane", "RUT", "name", "plate", "status", "reason", "decided"):
        table.add_column(column, no_wrap=column not in ("name", "reason"))
    styles = {"approved": "green", "rejected": "red", "pending": "yellow"}
    for row in rows:
        table.add_row(
            _local(row["received_at"], tz),
            "premium" if row["premium"] else "regular",
            screen(row["rut"]),
            screen(row["name"]),
            screen(row["plate"]),
            screen(row["status"], styles.get(row["status"], "")),
            screen(row["reason"] or ""),
            _local(row["decided_at"], tz),
        )
    return table


def print_members() -> int:
    """`gremio members`: the guild's members, oldest first."""
    settings = get_settings()
    with connect() as conn:
        rows = conn.cursor(row_factory=dict_row).execute(query("members_list")).fetchall()
    _console().print(members_table(rows, settings.guild_timezone))
    return 0


def members_table(rows: Sequence[Mapping[str, Any]], timezone: str) -> Table:
    """The rows of `members_list` as a rich table; members' text as `Text`, as above."""
    from rich.table import Table

    tz = ZoneInfo(timezone)
    premium = sum(1 for row in rows if row["premium"])
    table = Table(title=f"Members ({len(rows)}, {premium} premium; times in {timezone})")
    for column in ("approved", "RUT", "name", "plate", "lane", "email"):
        table.add_column(column, no_wrap=column != "name")
    for row in rows:
        table.add_row(
            _local(row["approved_at"], tz),
            screen(row["rut"]),
            screen(row["name"]),
            screen(row["plate"]),
            "premium" if row["premium"] else "regular",
            screen(row["email"]),
        )
    return table


def _local(moment: datetime | None, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment else ""


def _console():
    from rich.console import Console

    # Piped into a file or another program: the whole table, not cut to 80 columns.
    console = Console()
    return console if console.is_terminal else Console(width=200)
