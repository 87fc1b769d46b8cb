"""The replenishment rule (DESIGN §5), as a pure function of sales and the carts' state.

No Kafka, no database and no clock here: `handle()` is given a batch of sales in partition
order, what the database knows about their carts, and the time, and says which orders open
and which close. The service makes that durable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from gremio.records import ReplenishmentOrder, Sale, derive_id
from gremio.settings import Settings


@dataclass(frozen=True, slots=True)
class Rules:
    threshold: int = 20
    refill_target: int = 100
    order_multiple: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(settings.stock_threshold, settings.stock_refill_target, settings.stock_order_multiple)

    def is_low(self, stock_remaining: int) -> bool:
        return stock_remaining < self.threshold

    def quantity(self, stock_remaining: int) -> int:
        """ceil((target − stock) / multiple) × multiple, and never less than one multiple."""
        missing = self.refill_target - stock_remaining
        return max(self.order_multiple, -(-missing // self.order_multiple) * self.order_multiple)


@dataclass(frozen=True, slots=True)
class OpenOrder:
    id: uuid.UUID
    plate: str
    sale_id: uuid.UUID
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CartState:
    """What is known about a cart before a sale: its newest sale and its open order."""

    sold_at: datetime | None = None
    stock_remaining: int | None = None
    sale_id: uuid.UUID | None = None
    open_order: OpenOrder | None = None


@dataclass(frozen=True, slots=True)
class OrderDelivered:
    """An open order closed as delivered by a sale that shows the stock back."""

    order_id: uuid.UUID
    plate: str
    sale_id: uuid.UUID
    delivered_at: datetime


@dataclass(slots=True)
class BatchOutcome:
    opened: list[ReplenishmentOrder] = field(default_factory=list)
    delivered: list[OrderDelivered] = field(default_factory=list)
    carts: dict[str, CartState] = field(default_factory=dict)  # carts whose state changed
    stale: list[Sale] = field(default_factory=list)  # older than the cart's newest sale
    repeated: list[Sale] = field(default_factory=list)  # already applied (redelivered, re-sent)


def order_id(sale_id: uuid.UUID) -> uuid.UUID:
    """An order's id is derived from the sale that triggered it, so a replay makes the same one."""
    return derive_id(str(sale_id), "replenishment_order")


def handle(
    sales: Sequence[Sale],
    carts: Mapping[str, CartState],
    rules: Rules,
    now: datetime,
    applied: Iterable[uuid.UUID] = (),
) -> BatchOutcome:
    """Apply the sales in order to the carts' state; say which orders open and which close.

    `applied` holds sale ids that already took effect (they triggered an existing order).
    A sale older than its cart's newest known sale is stale and changes nothing: the newest
    sale states the cart's stock, so a redelivered or re-sent sale cannot open a second order
    or close a newer one.
    """
    decision = BatchOutcome()
    seen = set(applied)
    for sale in sales:
        if sale.id in seen:
            decision.repeated.append(sale)
            continue
        seen.add(sale.id)
        cart = decision.carts.get(sale.plate) or carts.get(sale.plate) or CartState()
        if cart.sold_at is not None and sale.sold_at < cart.sold_at:
            decision.stale.append(sale)
            continue
        order = cart.open_order
        if rules.is_low(sale.stock_remaining):
            if order is None:
                new = ReplenishmentOrder(
                    id=order_id(sale.id),
                    plate=sale.plate,
                    sale_id=sale.id,
                    stock_at_trigger=sale.stock_remaining,
                    quantity=rules.quantity(sale.stock_remaining),
                    created_at=now,
                )
                decision.opened.append(new)
                order = OpenOrder(new.id, new.plate, new.sale_id, new.created_at)
        elif order is not None:
            # Delivered by the time of this sale, but not before the order existed.
            delivered_at = max(sale.sold_at, order.created_at)
            decision.delivered.append(OrderDelivered(order.id, sale.plate, sale.id, delivered_at))
            order = None
        decision.carts[sale.plate] = replace(
            cart,
            sold_at=sale.sold_at,
            stock_remaining=sale.stock_remaining,
            sale_id=sale.id,
            open_order=order,
        )
    return decision
