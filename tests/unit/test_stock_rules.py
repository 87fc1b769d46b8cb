"""The pure replenishment rule: which orders open and close, in which order, and what is ignored."""

from __future__ import annotations

import io
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from consumers.stock.notices import Notices
from consumers.stock.rules import CartState, OpenOrder, OrderDelivered, Rules, handle, order_id
from gremio.records import ReplenishmentOrder, Sale
from gremio.settings import Settings

T0 = datetime(2025, 3, 1, 15, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
RULES = Rules(threshold=20, refill_target=100, order_multiple=10)


def sale(stock: int, minute: int = 0, plate: str = "BBCL12", id: uuid.UUID | None = None) -> Sale:
    at = T0 + timedelta(minutes=minute)
    return Sale(
        id=id or uuid.uuid4(), plate=plate, client="ana", quantity=1, sold_at=at,
        stock_remaining=stock, lat=-33.44, lon=-70.65, received_at=at,
    )  # fmt: skip


def open_order(plate: str = "BBCL12", minute: int = -10) -> OpenOrder:
    trigger = uuid.uuid4()
    return OpenOrder(order_id(trigger), plate, trigger, T0 + timedelta(minutes=minute))


@pytest.mark.parametrize(
    ("stock", "quantity"), [(19, 90), (15, 90), (10, 90), (11, 90), (9, 100), (0, 100), (1, 100)]
)
def test_quantity_rounds_the_shortfall_up_to_the_multiple(stock, quantity):
    assert RULES.quantity(stock) == quantity


def test_quantity_is_never_less_than_one_multiple():
    assert Rules(threshold=200, refill_target=100, order_multiple=10).quantity(150) == 10


def test_rules_come_from_the_settings():
    settings = Settings(stock_threshold=30, stock_refill_target=120, stock_order_multiple=25)
    assert Rules.from_settings(settings) == Rules(30, 120, 25)
    assert Rules.from_settings(Settings()) == RULES


def test_a_low_sale_opens_an_order():
    low = sale(15)
    decision = handle([low], {}, RULES, NOW)
    assert decision.opened == [
        ReplenishmentOrder(
            id=order_id(low.id), plate="BBCL12", sale_id=low.id, stock_at_trigger=15, quantity=90,
            created_at=NOW,
        )
    ]  # fmt: skip
    assert decision.delivered == []
    assert decision.carts["BBCL12"].open_order.id == order_id(low.id)
    assert decision.carts["BBCL12"].stock_remaining == 15


def test_the_threshold_itself_is_not_low():
    assert handle([sale(20)], {}, RULES, NOW).opened == []
    assert len(handle([sale(19)], {}, RULES, NOW).opened) == 1


def test_order_ids_are_deterministic():
    low = sale(5)
    assert handle([low], {}, RULES, NOW).opened[0].id == handle([low], {}, RULES, NOW).opened[0].id
    assert order_id(low.id) != order_id(uuid.uuid4())


def test_no_second_order_while_one_is_open():
    existing = open_order()
    decision = handle([sale(10, 1), sale(3, 2)], {"BBCL12": CartState(open_order=existing)}, RULES, NOW)
    assert decision.opened == []
    assert decision.carts["BBCL12"].open_order == existing


def test_a_recovery_sale_closes_the_open_order_and_a_later_low_sale_opens_a_new_one():
    existing = open_order()
    recovery, low = sale(60, 1), sale(8, 2)
    decision = handle([recovery, low], {"BBCL12": CartState(open_order=existing)}, RULES, NOW)
    assert decision.delivered == [OrderDelivered(existing.id, "BBCL12", recovery.id, recovery.sold_at)]
    assert [o.sale_id for o in decision.opened] == [low.id]
    assert decision.opened[0].quantity == 100


def test_an_order_can_open_and_close_within_one_batch():
    sales = [sale(50, 0), sale(15, 1), sale(10, 2), sale(60, 3), sale(5, 4)]
    decision = handle(sales, {}, RULES, NOW)
    assert [o.sale_id for o in decision.opened] == [sales[1].id, sales[4].id]
    assert [(d.order_id, d.sale_id) for d in decision.delivered] == [(order_id(sales[1].id), sales[3].id)]
    # delivered no earlier than the order was made
    assert decision.delivered[0].delivered_at == NOW
    assert decision.carts["BBCL12"].open_order.id == order_id(sales[4].id)


def test_a_high_sale_without_an_open_order_changes_no_order():
    decision = handle([sale(80)], {}, RULES, NOW)
    assert (decision.opened, decision.delivered) == ([], [])
    assert decision.carts["BBCL12"].stock_remaining == 80


def test_carts_are_independent():
    sales = [sale(10, 0, "BBCL12"), sale(10, 0, "AB1234"), sale(50, 1, "BBCL12"), sale(12, 1, "AB1234")]
    decision = handle(sales, {}, RULES, NOW)
    assert [o.plate for o in decision.opened] == ["BBCL12", "AB1234"]
    assert [d.plate for d in decision.delivered] == ["BBCL12"]
    assert decision.carts["AB1234"].open_order is not None
    assert decision.carts["BBCL12"].open_order is None


def test_a_sale_older_than_the_carts_newest_is_stale():
    """Latest stock wins: an old report cannot close a newer order or open another."""
    existing = open_order(minute=5)
    cart = CartState(sold_at=T0 + timedelta(minutes=5), stock_remaining=12, open_order=existing)
    old_high, old_low = sale(70, 1), sale(3, 2)
    decision = handle([old_high, old_low], {"BBCL12": cart}, RULES, NOW)
    assert (decision.opened, decision.delivered) == ([], [])
    assert decision.stale == [old_high, old_low]
    assert "BBCL12" not in decision.carts


def test_a_sale_at_the_same_time_as_the_newest_still_counts():
    cart = CartState(sold_at=T0, stock_remaining=50)
    assert len(handle([sale(10, 0)], {"BBCL12": cart}, RULES, NOW).opened) == 1


def test_out_of_order_sales_within_a_batch_are_stale_too():
    newest, older = sale(60, 5), sale(10, 1)
    decision = handle([newest, older], {}, RULES, NOW)
    assert decision.opened == []
    assert decision.stale == [older]


def test_a_replayed_batch_changes_nothing():
    """Redelivery after a crash: the table already holds the batch's effects."""
    sales = [sale(15, 0), sale(11, 1), sale(60, 2), sale(4, 3)]
    first = handle(sales, {}, RULES, NOW)
    after = {"BBCL12": first.carts["BBCL12"]}
    applied = {o.sale_id for o in first.opened}
    again = handle(sales, after, RULES, NOW + timedelta(minutes=1), applied)
    assert (again.opened, again.delivered) == ([], [])
    assert again.repeated == [sales[0], sales[3]]
    assert again.stale == [sales[1], sales[2]]


def test_a_sale_seen_twice_in_one_batch_counts_once():
    low = sale(10)
    decision = handle([low, low], {}, RULES, NOW)
    assert len(decision.opened) == 1
    assert decision.repeated == [low]


def _notices(terminal: bool) -> tuple[Notices, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200, color_system=None)
    return Notices(console, timezone="America/Santiago"), out


def test_notice_is_a_rich_line_on_a_terminal(caplog):
    notices, out = _notices(terminal=True)
    order = handle([sale(15)], {}, RULES, NOW).opened[0]
    with caplog.at_level(logging.INFO):
        notices.opened(order)
    assert "refill cart BBCL12: send 90 units" in out.getvalue()
    assert str(order.id) in out.getvalue()
    assert "13:00:00" in out.getvalue()  # 16:00 UTC in Santiago (summer time)
    assert not caplog.records


def test_notice_is_a_log_line_otherwise(caplog):
    notices, out = _notices(terminal=False)
    order = handle([sale(15)], {}, RULES, NOW).opened[0]
    with caplog.at_level(logging.INFO, logger="consumers.stock"):
        notices.opened(order)
        notices.delivered(OrderDelivered(order.id, order.plate, uuid.uuid4(), NOW))
    assert out.getvalue() == ""
    assert [r.getMessage() for r in caplog.records] == [
        f"replenishment order {order.id}: cart BBCL12, stock 15, send 90",
        f"replenishment order {order.id} delivered: cart BBCL12",
    ]
