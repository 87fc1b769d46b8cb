"""`gremio watch`: the running platform in one terminal screen.

Carts, fugitive reports and alerts come from the live location service's `GET /v1/live`
(the same board it draws in a terminal), with the staff login: LOCAL_DIR/staff-login.json
as `make up` keeps it, or STAFF_USER and STAFF_PASSWORD for another deployment. Refill orders
and Airflow's alerts of the last day (`report_late`, `premium_pending`: the board's list
keeps only its last minutes) come from PostgreSQL. Read-only: it can be started and stopped
at will while `make up` runs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from consumers.locations.board import render as render_live
from gremio import db
from gremio.credentials import staff_basic_auth
from gremio.safetext import screen as cell
from gremio.settings import Settings, get_settings


def fetch_live(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    url = f"http://127.0.0.1:{settings.live_port}/v1/live"
    asked = urllib.request.Request(url, headers=staff_basic_auth(settings))
    with urllib.request.urlopen(asked, timeout=3) as response:  # noqa: S310 - loopback URL
        return json.load(response)


def recent_orders(settings: Settings, limit: int = 8) -> list[dict[str, Any]]:
    with db.connect(settings) as conn, conn.cursor(row_factory=_dict_row()) as cur:
        return cur.execute(db.query("watch_recent_orders"), {"limit": limit}).fetchall()


AIRFLOW_ALERTS_SINCE = timedelta(days=1)


def airflow_alerts(settings: Settings, limit: int = 8) -> list[dict[str, Any]]:
    """Airflow's alerts of the last day (no cart: a daily report late, a premium application waiting)."""
    from gremio.records import now_utc

    with db.connect(settings) as conn, conn.cursor(row_factory=_dict_row()) as cur:
        since = now_utc() - AIRFLOW_ALERTS_SINCE
        return cur.execute(db.query("watch_airflow_alerts"), {"since": since, "limit": limit}).fetchall()


def _dict_row():
    from psycopg.rows import dict_row

    return dict_row


def render_orders(orders: list[dict[str, Any]], tz: ZoneInfo) -> Table:
    table = Table(title="Refill orders", expand=True, title_justify="left")
    for name in ("Opened", "Plate", "Stock then", "Quantity", "Status"):
        table.add_column(name)
    for order in orders:
        status = (
            Text("open", style="bold yellow")
            if order["status"] == "open"
            else Text("delivered", style="green")
        )
        table.add_row(
            order["created_at"].astimezone(tz).strftime("%H:%M:%S"),
            cell(order["plate"]),
            str(order["stock_at_trigger"]),
            str(order["quantity"]),
            status,
        )
    return table


def render_airflow_alerts(alerts: list[dict[str, Any]], tz: ZoneInfo) -> Table:
    table = Table(title="Airflow alerts (last 24 h)", expand=True, title_justify="left")
    for name in ("Raised", "Kind", "Detail"):
        table.add_column(name)
    for alert in alerts:
        table.add_row(
            alert["created_at"].astimezone(tz).strftime("%d-%m %H:%M:%S"),
            cell(alert["kind"], "bold yellow" if alert["kind"] == "report_late" else "cyan"),
            cell(alert["detail"]),
        )
    return table


def screen(settings: Settings, tz: ZoneInfo) -> RenderableType:
    parts: list[RenderableType] = []
    try:
        parts.append(render_live(fetch_live(settings), tz, max_carts=12))
    except urllib.error.HTTPError as exc:
        why = (
            "the staff login was refused: `make up` keeps it in .local/staff-login.json; "
            "elsewhere set STAFF_USER and STAFF_PASSWORD"
            if exc.code == 401
            else str(exc)
        )
        parts.append(cell(f"live location service on port {settings.live_port}: {why}", "red"))
    except OSError as exc:
        parts.append(cell(f"live location service unreachable on port {settings.live_port}: {exc}", "red"))
    try:
        parts.append(render_orders(recent_orders(settings), tz))
        parts.append(render_airflow_alerts(airflow_alerts(settings), tz))
    except Exception as exc:  # noqa: BLE001 - the screen says what is wrong and keeps going
        parts.append(cell(f"database unreachable: {exc}", "red"))
    return Group(*parts)


def main(once: bool = False, interval: float = 2.0) -> int:
    settings = get_settings()
    tz = ZoneInfo(settings.guild_timezone)
    console = Console()
    if once:
        console.print(screen(settings, tz))
        return 0
    with Live(screen(settings, tz), console=console, refresh_per_second=1, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(screen(settings, tz))
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(once="--once" in sys.argv[1:]))
