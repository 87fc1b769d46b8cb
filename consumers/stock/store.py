"""The replenishment service's PostgreSQL side: one transaction per batch or run of batches, and the outbox mark."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row

from consumers.stock.rules import BatchOutcome, CartState, OpenOrder, Rules, handle
from gremio import db
from gremio.records import ReplenishmentOrder, Sale
from gremio.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Applied:
    """A committed batch: what it decided, and which orders' records are still to be sent."""

    decision: BatchOutcome
    opened: list[ReplenishmentOrder]  # new orders, now in the table
    republish: list[ReplenishmentOrder]  # committed by an interrupted run, never published
    batches: list[BatchOutcome] = field(default_factory=list)  # each batch's own decision, in order

    @property
    def unpublished(self) -> list[ReplenishmentOrder]:
        return [*self.opened, *self.republish]


class OrderStore:
    """Holds the service's connection; each `apply` is one transaction.

    A connection lost (PostgreSQL restarted) is opened again on next use: the runner
    retries the batch after a transient failure, and the retry must not meet the dead one.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn = db.connect(settings, autocommit=False)
        # Orders whose records the broker acknowledged, marked in the next transaction: a
        # commit of its own would cost a WAL flush per batch. Losing these marks in a crash
        # only means a harmless second record with the same id if the sales come round again.
        self.unmarked: set[uuid.UUID] = set()

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn.closed or self._conn.broken:
            self._conn.close()
            self._conn = db.connect(self.settings, autocommit=False)
        return self._conn

    def close(self) -> None:
        if self._conn.closed:
            return
        try:
            if not self._conn.broken:
                self.mark_published()
        except psycopg.Error as exc:  # the database went away: the marks are only an economy
            log.warning("could not mark %d published orders: %s", len(self.unmarked), exc)
        finally:
            self._conn.close()

    def apply(self, sales: Sequence[Sale], rules: Rules, now: datetime) -> Applied:
        """One batch in its own transaction."""
        return self.apply_batches([sales], rules, now)

    def apply_batches(self, batches: Sequence[Sequence[Sale]], rules: Rules, now: datetime) -> Applied:
        """Lock the batches' carts, decide each batch in order with `handle`, write, commit once.

        Each batch is decided on the carts' state the batches before it left, exactly as
        if each had been committed on its own; one transaction makes them all durable.
        """
        sales = [sale for batch in batches for sale in batch]
        plates = sorted({sale.plate for sale in sales})
        sale_ids = [sale.id for sale in sales]
        conn = self.conn  # one connection for the whole transaction, even if it breaks midway
        # Pipeline mode: the three reads go out together, then the writes and the commit.
        with conn.pipeline():
            with conn.transaction():
                locked = conn.execute(db.query("stock_lock_carts"), {"plates": plates})
                claimed = conn.execute(db.query("stock_claim_sales"), {"sale_ids": sale_ids})
                found = conn.cursor(row_factory=namedtuple_row).execute(
                    db.query("stock_orders_for"), {"plates": plates, "sale_ids": sale_ids}
                )
                carts = {plate: CartState(sold_at=sold_at) for plate, sold_at in locked.fetchall()}
                new_sales = {row[0] for row in claimed.fetchall()}
                rows = found.fetchall()
                carts, triggers = _with_orders(carts, rows)
                applied = triggers | (set(sale_ids) - new_sales)
                decisions = []
                for batch in batches:
                    decision = handle(batch, carts, rules, now, applied)
                    decisions.append(decision)
                    carts = {**carts, **decision.carts}
                    applied |= {sale.id for sale in batch}  # a later batch repeating one skips it
                merged = _merged(decisions)
                inserted = self._write(conn, merged)
                marked = self._mark(conn)
            inserted_ids = {row[0] for row in inserted.fetchall()} if inserted is not None else set()
        self.unmarked -= marked
        group = set(sale_ids)
        earlier = [
            _order(row)
            for row in rows
            if row.sale_id in group and row.published_at is None and row.id not in marked | self.unmarked
        ]
        opened = [order for order in merged.opened if order.id in inserted_ids]
        return Applied(merged, opened, earlier, decisions)

    def prune(self, retention_seconds: float) -> int:
        """Forget applied sale ids older than the retention; returns how many."""
        conn = self.conn
        with conn.transaction():
            return conn.execute(db.query("stock_prune_sales"), {"seconds": retention_seconds}).rowcount

    def _write(self, conn: psycopg.Connection, decision: BatchOutcome) -> psycopg.Cursor | None:
        """Closes first (the one-open index), then new orders, then each cart's newest sale."""
        new_ids = {order.id for order in decision.opened}
        closes = [d for d in decision.delivered if d.order_id not in new_ids]
        if closes:
            conn.execute(
                db.query("stock_close_orders"),
                {
                    "ids": [d.order_id for d in closes],
                    "delivered_at": [d.delivered_at for d in closes],
                    "sale_ids": [d.sale_id for d in closes],
                },
            )
        inserted = None
        if decision.opened:
            closed_in_batch = {d.order_id: d for d in decision.delivered if d.order_id in new_ids}
            done = [closed_in_batch.get(order.id) for order in decision.opened]
            inserted = conn.execute(
                db.query("stock_insert_orders"),
                {
                    "ids": [o.id for o in decision.opened],
                    "plates": [o.plate for o in decision.opened],
                    "sale_ids": [o.sale_id for o in decision.opened],
                    "stocks": [o.stock_at_trigger for o in decision.opened],
                    "quantities": [o.quantity for o in decision.opened],
                    "statuses": ["open" if d is None else "delivered" for d in done],
                    "created_at": [o.created_at for o in decision.opened],
                    "delivered_at": [d and d.delivered_at for d in done],
                    "delivered_by": [d and d.sale_id for d in done],
                },
            )
        if decision.carts:
            carts = decision.carts.items()
            conn.execute(
                db.query("stock_update_carts"),
                {
                    "plates": [plate for plate, _ in carts],
                    "stocks": [cart.stock_remaining for _, cart in carts],
                    "sale_ids": [cart.sale_id for _, cart in carts],
                    "sold_at": [cart.sold_at for _, cart in carts],
                },
            )
        return inserted

    def published(self, ids: Sequence[uuid.UUID]) -> None:
        """The broker acknowledged these orders' records; the next transaction marks them."""
        self.unmarked.update(ids)

    def mark_published(self) -> None:
        """Mark now, in a transaction of its own (at shutdown)."""
        conn = self.conn
        with conn.transaction():
            self.unmarked -= self._mark(conn)

    def _mark(self, conn: psycopg.Connection) -> set[uuid.UUID]:
        ids = set(self.unmarked)
        if ids:
            conn.execute(db.query("stock_mark_published"), {"ids": list(ids)})
        return ids


def _with_orders(carts: dict[str, CartState], rows: list[Any]) -> tuple[dict[str, CartState], set[uuid.UUID]]:
    """Attach each cart's open order; collect the sales that already triggered an order."""
    applied: set[uuid.UUID] = set()
    for row in rows:
        applied.add(row.sale_id)
        if row.status == "open" and row.plate in carts:
            open_order = OpenOrder(row.id, row.plate, row.sale_id, row.created_at)
            carts[row.plate] = CartState(carts[row.plate].sold_at, open_order=open_order)
    return carts, applied


def _merged(decisions: Sequence[BatchOutcome]) -> BatchOutcome:
    """The batches' decisions as one: what `handle` says of their sales taken together."""
    if len(decisions) == 1:
        return decisions[0]
    merged = BatchOutcome()
    for decision in decisions:
        merged.opened += decision.opened
        merged.delivered += decision.delivered
        merged.carts.update(decision.carts)
        merged.stale += decision.stale
        merged.repeated += decision.repeated
    return merged


def _order(row: Any) -> ReplenishmentOrder:
    return ReplenishmentOrder.model_validate(
        {name: getattr(row, name) for name in ReplenishmentOrder.model_fields}
    )
