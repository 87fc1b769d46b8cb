"""The live terminal board (rich): carts, recent fugitive reports, recent alerts.

Shown when `python -m consumers.locations` runs in a terminal. Under a process manager
(stdout not a terminal) the service writes log lines instead (see service.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from consumers.locations.view import LiveView
from gremio.safetext import screen

_KIND_STYLE = {
    "jump": "magenta",
    "out_of_area": "yellow",
    "unregistered_cart": "red",
    "fugitive_report": "bold red",
    # Raised by Airflow (no plate): a premium application undecided, a daily report not written.
    "premium_pending": "cyan",
    "report_late": "bold yellow",
    "ops": "bold blue",  # the monitor's: Alertmanager's notifications (a service down, lag, ...)
}


def render(snapshot: dict[str, list[dict[str, Any]]], tz: ZoneInfo, max_carts: int = 30) -> RenderableType:
    """The board for one `/v1/live` snapshot.

    Every value from a record goes in as a `Text` through `screen()`: never parsed as rich
    markup, and without control characters that could break the layout.
    """
    carts = snapshot["carts"]
    table = Table(title=f"Live carts ({len(carts)})", expand=True, title_justify="left")
    for name, justify in (("Plate", "left"), ("Master", "left"), ("Lat", "right"), ("Lon", "right"),
                          ("Seen (s ago)", "right"), ("Speed (km/h)", "right")):  # fmt: skip
        table.add_column(name, justify=justify)
    for cart in carts[:max_carts]:
        master = screen(cart["master"]) if cart["registered"] else Text("unregistered", style="red")
        speed = "" if cart["speed_kmh"] is None else f"{cart['speed_kmh']:.1f}"
        table.add_row(
            screen(cart["plate"]), master, f"{cart['lat']:.5f}", f"{cart['lon']:.5f}",
            f"{cart['seconds_since_seen']:.0f}", speed,
        )  # fmt: skip
    if len(carts) > max_carts:
        table.caption = f"… and {len(carts) - max_carts} more (GET /v1/live has them all)"

    reports = Table(title="Fugitive reports (last 10 min)", expand=True, title_justify="left")
    for name in ("At", "Lat", "Lon", "Nearest cart", "Distance (m)", "Reported plate", "Description"):
        reports.add_column(name)
    for report in snapshot["reports"][:10]:
        distance = report["nearest_distance_m"]
        reports.add_row(
            _local(report["received_at"], tz), f"{report['lat']:.5f}", f"{report['lon']:.5f}",
            screen(report["nearest_plate"] or "none live"), "" if distance is None else f"{distance:.0f}",
            screen(report["plate"] or ""), screen((report["description"] or "")[:40]),
        )  # fmt: skip

    alerts = Table(title="Alerts", expand=True, title_justify="left")
    for name in ("At", "Kind", "Plate", "Detail"):
        alerts.add_column(name)
    for alert in snapshot["alerts"][:10]:
        alerts.add_row(
            _local(alert["created_at"], tz), screen(alert["kind"], style=_KIND_STYLE.get(alert["kind"], "")),
            screen(alert["plate"] or ""), screen(alert["detail"]),
        )  # fmt: skip
    return Group(table, reports, alerts)


def _local(iso: str, tz: ZoneInfo) -> str:
    return datetime.fromisoformat(iso).astimezone(tz).strftime("%H:%M:%S")


class Board:
    """The board, redrawn once a second from the view while the service runs."""

    def __init__(self, view: LiveView, console: Console, tz: ZoneInfo) -> None:
        self.view = view
        self.tz = tz
        self.console = console
        self.live = Live(console=console, get_renderable=self.render, refresh_per_second=1)

    def render(self) -> RenderableType:
        rows = max(5, self.console.height - 30)
        return render(self.view.snapshot(), self.tz, max_carts=rows)

    def __enter__(self) -> Board:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()
