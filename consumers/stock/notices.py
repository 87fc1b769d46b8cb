"""The on-screen notice for each order: a rich line on a terminal, a log line otherwise."""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape

from consumers.stock.rules import OrderDelivered
from gremio.records import ReplenishmentOrder

log = logging.getLogger("consumers.stock")


class Notices:
    """Tells the person watching about orders; under a process manager that is the log."""

    def __init__(self, console: Console | None = None, timezone: str = "America/Santiago") -> None:
        self.console = console or Console()
        self.tz = ZoneInfo(timezone)

    @property
    def on_terminal(self) -> bool:
        return self.console.is_terminal

    def opened(self, order: ReplenishmentOrder) -> None:
        when = order.created_at.astimezone(self.tz).strftime("%H:%M:%S")
        if self.on_terminal:
            self.console.print(
                f"[dim]{when}[/] [bold yellow]refill[/] cart [bold]{escape(order.plate)}[/]: "
                f"send [bold]{order.quantity}[/] units "
                f"[dim](stock {order.stock_at_trigger}, order {order.id})[/]",
                highlight=False,
            )
        else:
            log.info(
                "replenishment order %s: cart %s, stock %d, send %d",
                order.id,
                order.plate,
                order.stock_at_trigger,
                order.quantity,
            )

    def delivered(self, delivery: OrderDelivered) -> None:
        if self.on_terminal:
            when = delivery.delivered_at.astimezone(self.tz).strftime("%H:%M:%S")
            self.console.print(
                f"[dim]{when}[/] [green]delivered[/] cart [bold]{escape(delivery.plate)}[/] "
                f"[dim](order {delivery.order_id})[/]",
                highlight=False,
            )
        else:
            log.info("replenishment order %s delivered: cart %s", delivery.order_id, delivery.plate)
