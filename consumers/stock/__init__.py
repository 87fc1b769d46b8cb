"""Stock replenishment (DESIGN §5): a refill order when a cart runs low, closed on delivery.

`handle` is the pure rule; `main` runs the service (`python -m consumers.stock`).
"""

from consumers.stock.rules import Rules, handle
from consumers.stock.service import StockService, main

__all__ = ["Rules", "StockService", "handle", "main"]
