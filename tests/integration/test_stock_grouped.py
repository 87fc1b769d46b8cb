"""A waiting backlog is made durable several batches at a time (consumers/stock/runner.py).

Every sale here goes to partition 0 of `sales`, so that the order of consumption, and with
it each batch of STOCK_BATCH_SIZE, is the same in every run. The same records are then
consumed one batch per transaction (STOCK_MAX_BATCHES_PER_COMMIT 1, what the shared runner
does) and several batches per transaction, and must decide the same batches and leave the
same orders. Which transaction applied a sale is read from the xmin of its
`replenishment_sales` row, which is inserted once and never updated.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from consumers.stock import StockService
from consumers.stock.rules import Rules, handle, order_id
from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import ReplenishmentOrder, Sale
from gremio.runner import Envelope
from gremio.settings import get_settings
from tests.integration.test_stock import running, sales_for
from tests.reliability.test_failure_classes import refusing
from tests.support import TopicProbe, commit_at_end, committed, new_plate, wait_for

SIZE = get_settings().stock_batch_size


class Spy(StockService):
    """The real service, noting each run of records it was handed (before it tries them)."""

    def __init__(self) -> None:
        super().__init__(group_id=f"test-stock-grouped-{uuid.uuid4()}")
        self.calls: list[list[uuid.UUID]] = []
        self.done = 0

    def process(self, batch: list[Envelope]) -> Sequence[tuple[Envelope, str]] | None:
        self.calls.append([e.record.id for e in batch])
        refused = super().process(batch)
        self.done += len(batch)
        return refused


def on_partition_0(sales: Sequence[Sale]) -> list[gk.Outgoing]:
    return [gk.Outgoing.of(sale, t.SALES.name, sale.plate, partition=0) for sale in sales]


def backlog(plates: Sequence[str]) -> list[Sale]:
    """Carts selling interleaved, each running low and being refilled, with a sale sent twice
    (the same id two batches later) and a stale one (older than its cart's newest)."""
    start = datetime.now(UTC) - timedelta(hours=1)
    cycles = [
        [50, 15, 10, 60, 40, 18, 12, 70],
        [30, 19, 25, 8, 9, 90, 17, 55],
        [22, 21, 5, 80, 14, 13, 65, 11],
    ]
    per_cart = [sales_for(plate, cycle, start) for plate, cycle in zip(plates, cycles, strict=True)]
    sales = [s for step in zip(*per_cart, strict=True) for s in step]
    resent = sales[4]
    stale = sales[7].model_copy(update={"id": uuid.uuid4(), "sold_at": start - timedelta(minutes=5)})
    stale = stale.model_copy(update={"stock_remaining": 3})
    return [*sales[:13], resent, *sales[13:20], stale, *sales[20:]]  # 26 sales: 5 batches and 1


def orders_of(plates: Sequence[str]) -> set[tuple]:
    with db.connect() as conn:
        rows = conn.execute(
            "select id, plate, sale_id, status, stock_at_trigger, quantity, delivered_by_sale_id,"
            " published_at is not null from replenishment_orders where plate = any(%s)",
            (list(plates),),
        ).fetchall()
    return set(rows)


def carts_of(plates: Sequence[str]) -> set[tuple]:
    with db.connect() as conn:
        return set(
            conn.execute(
                "select plate, stock_remaining, sale_id, sold_at from cart_stock where plate = any(%s)",
                (list(plates),),
            ).fetchall()
        )


def transactions(sale_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The transaction (xmin) that applied each sale."""
    with db.connect() as conn:
        rows = conn.execute(
            "select sale_id, xmin::text from replenishment_sales where sale_id = any(%s)", (list(sale_ids),)
        ).fetchall()
    return dict(rows)


def forget(plates: Sequence[str], sales: Sequence[Sale]) -> None:
    with db.connect() as conn:
        conn.execute("delete from replenishment_orders where plate = any(%s)", (list(plates),))
        conn.execute("delete from cart_stock where plate = any(%s)", (list(plates),))
        conn.execute("delete from replenishment_sales where sale_id = any(%s)", ([s.id for s in sales],))


def by_rule(sales: Sequence[Sale]) -> set[tuple]:
    """(order id, sale id, status, quantity, delivered by) the pure rule says, from empty tables."""
    decision = handle(sales, {}, Rules.from_settings(get_settings()), datetime.now(UTC))
    closed = {d.order_id: d.sale_id for d in decision.delivered}
    return {
        (o.id, o.sale_id, "delivered" if o.id in closed else "open", o.quantity, closed.get(o.id))
        for o in decision.opened
    }


def consume(sales: Sequence[Sale], max_batches: int) -> Spy:
    """Produce `sales` while nothing reads them, then let a stock runner work the backlog off."""
    service = Spy()
    commit_at_end(service.group_id)
    end = gk.produce_all(gk.producer(), on_partition_0(sales))[-1].offset() + 1
    with running(service, max_batches, from_end=False) as runner:
        wait_for(
            lambda: runner.failed or committed(service.group_id).get((t.SALES.name, 0), -1) >= end,
            timeout=60,
            what="the backlog worked off and committed",
        )
    return service


def chunks(ids: list[uuid.UUID]) -> list[list[uuid.UUID]]:
    return [ids[i : i + SIZE] for i in range(0, len(ids), SIZE)]


def test_a_backlog_lands_in_one_transaction_with_the_orders_of_one_batch_at_a_time():
    plates = [new_plate() for _ in range(3)]
    sales = backlog(plates)
    ids = [s.id for s in sales]

    one_at_a_time = consume(sales, max_batches=1)
    alone = (orders_of(plates), carts_of(plates))
    alone_txns = transactions(ids)
    forget(plates, sales)

    grouped = consume(sales, max_batches=20)
    together = (orders_of(plates), carts_of(plates))
    grouped_txns = transactions(ids)

    # The same batches, in the same order: each grouped run is whole batches of the one-at-a-time run.
    assert [len(c) for c in one_at_a_time.calls] == [5, 5, 5, 5, 5, 1]
    assert [b for call in grouped.calls for b in chunks(call)] == one_at_a_time.calls
    assert max(len(c) for c in grouped.calls) > SIZE, f"no run of batches: {grouped.calls}"

    # One batch, one transaction; grouped, one transaction for each run of batches.
    assert len(set(alone_txns.values())) == len(one_at_a_time.calls)
    for call in grouped.calls:
        assert len({grouped_txns[i] for i in call}) == 1
    assert len(set(grouped_txns.values())) == len(grouped.calls) < len(one_at_a_time.calls)

    # The same orders (ids, states, who delivered them) and the same stock per cart, as the rule says.
    assert together == alone
    orders = together[0]
    assert {(o[0], o[2], o[3], o[5], o[6]) for o in orders} == by_rule(sales)
    assert all(o[7] for o in orders), "every order's record acknowledged and marked"
    assert len(orders) >= 6


def test_a_refused_sale_in_a_run_of_batches_is_dead_lettered_alone():
    plates = [new_plate() for _ in range(3)]
    sales = backlog(plates)
    bad = sales[10]  # in the third batch; it would open an order
    assert bad.stock_remaining < 20
    probe = TopicProbe([t.DEADLETTER.name])
    with refusing("replenishment_sales", "sale_id", str(bad.id)):
        service = consume(sales, max_batches=20)

    kept = [s for s in sales if s.id != bad.id]
    with db.connect() as conn:
        applied = Counter(
            row[0]
            for row in conn.execute(
                "select sale_id from replenishment_sales where sale_id = any(%s)", ([s.id for s in sales],)
            ).fetchall()
        )
    assert applied == Counter({s.id: 1 for s in kept})
    assert {(o[0], o[2], o[3], o[5], o[6]) for o in orders_of(plates)} == by_rule(kept)

    letters = [m for m in probe.records(t.DEADLETTER.name) if m.key() and m.key().decode() in plates]
    assert [m.value() for m in letters] == [bad.to_bytes()]
    assert "refused by the test" in gk.header(letters[0], "error")
    # Tried as a run first, then one batch at a time, the refused batch split as the shared runner does.
    assert len(service.calls[0]) > SIZE and bad.id in service.calls[0]


@pytest.mark.parametrize("point", ["after_db_commit", "after_produce"])
def test_sigkill_after_a_run_of_batches_committed_neither_loses_nor_doubles(services, point):
    group = f"test-stock-grouped-{uuid.uuid4()}"
    ends = commit_at_end(group)
    plates = [new_plate() for _ in range(3)]
    sales = backlog(plates)
    probe = TopicProbe([t.REPLENISHMENTS.name])
    gk.produce_all(gk.producer(), on_partition_0(sales))  # waiting before the service starts
    crashing = services.stock(group, STOCK_TEST_CRASH_POINT=point)
    assert crashing.wait_exit(60) == -signal.SIGKILL, crashing.output()
    assert committed(group) == ends
    first = set(transactions([s.id for s in sales]).values())
    assert len(first) == 1, "the first run of batches was one transaction"
    assert len(transactions([s.id for s in sales])) > SIZE

    recovering = services.stock(group)
    wait_for(
        lambda: sum(committed(group).values()) == sum(ends.values()) + len(sales),
        timeout=90,
        what="the redelivered backlog committed",
    )
    assert recovering.terminate() == 0
    expected = by_rule(sales)
    orders = orders_of(plates)
    assert {(o[0], o[2], o[3], o[5], o[6]) for o in orders} == expected
    assert all(o[7] for o in orders)
    records = [
        ReplenishmentOrder.from_bytes(m.value())
        for m in probe.records(t.REPLENISHMENTS.name)
        if m.key() and m.key().decode() in plates
    ]
    assert {r.id for r in records} == {o[0] for o in expected}
    assert all(r.id == order_id(r.sale_id) for r in records)
