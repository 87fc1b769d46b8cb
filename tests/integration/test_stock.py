"""The stock replenishment service against the real broker and database.

In-process runs (a Runner in a thread) cover batching, the order lifecycle and poison;
`python -m consumers.stock` subprocesses cover SIGTERM, a real SIGKILL between the
database commit and the offset commit, and two instances sharing one group. Every test
uses its own plates and its own consumer group, positioned at the end of `sales`.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from consumers.stock import StockService
from consumers.stock.rules import order_id
from consumers.stock.runner import StockRunner
from consumers.stock.store import OrderStore
from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import ReplenishmentOrder, Sale
from gremio.runner import Envelope
from gremio.settings import get_settings
from tests.support import TopicProbe, assignments, commit_at_end, committed, new_plate, wait_for

# --- helpers -----------------------------------------------------------------------------------


def sales_for(plate: str, stocks: Sequence[int], start: datetime | None = None) -> list[Sale]:
    """One sale per stock figure, a second apart, in order."""
    start = start or datetime.now(UTC) - timedelta(minutes=1)
    return [
        Sale(
            id=uuid.uuid4(), plate=plate, client=f"client-{i % 3}", quantity=1,
            sold_at=start + timedelta(seconds=i), stock_remaining=stock, lat=-33.44, lon=-70.65,
            received_at=start + timedelta(seconds=i),
        )
        for i, stock in enumerate(stocks)
    ]  # fmt: skip


def sale_record(sale: Sale) -> tuple[str, bytes, bytes, list[tuple[str, bytes]], None]:
    return (t.SALES.name, sale.plate.encode(), sale.to_bytes(), [("type", b"Sale")], None)


def produce(sales: Sequence[Sale]) -> None:
    gk.produce_all(gk.producer(), [sale_record(s) for s in sales])


def orders(plate: str) -> list[dict]:
    with db.connect() as conn:
        cur = conn.execute(
            """
            select id, sale_id, status, stock_at_trigger, quantity, delivered_by_sale_id, published_at
            from replenishment_orders where plate = %s order by created_at, id
            """,
            (plate,),
        )
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def published(probe: TopicProbe, plates: set[str]) -> list[ReplenishmentOrder]:
    found = []
    for msg in probe.records(t.REPLENISHMENTS.name):
        if msg.key() and msg.key().decode() in plates:
            assert gk.header(msg, "type") == "ReplenishmentOrder"
            found.append(ReplenishmentOrder.from_bytes(msg.value()))
    return found


class Spy(StockService):
    """The real service, noting each batch it made durable."""

    def __init__(self) -> None:
        super().__init__(group_id=f"test-stock-{uuid.uuid4()}")
        self.batches: list[list[uuid.UUID]] = []

    def process(self, batch: list[Envelope]) -> Sequence[tuple[Envelope, str]] | None:
        refused = super().process(batch)
        self.batches.append([e.record.id for e in batch])
        return refused


@contextlib.contextmanager
def running(
    service: StockService, max_batches: int | None = None, from_end: bool = True
) -> Iterator[StockRunner]:
    """Run the service on its runner in a thread (from the end of `sales` unless told not
    to: a backlog produced first); stop it cleanly afterwards. `runner.failed` holds what the
    run ended with, if it did."""
    try:
        if from_end:
            commit_at_end(service.group_id)
        runner = StockRunner(service, max_batches=max_batches)
    except BaseException:
        service.close()
        raise
    failure: list[BaseException] = []
    runner.failed = failure

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(30)
        service.close()
    assert not thread.is_alive(), "the runner did not stop"
    assert not failure, failure


# --- batching --------------------------------------------------------------------------------


def test_exactly_five_sales_make_one_batch():
    plate = new_plate()
    with running(Spy()) as runner:
        service = runner.service
        sales = sales_for(plate, [90, 80, 70, 60, 50])
        produce(sales)
        wait_for(lambda: service.batches, what="a batch")
        assert service.batches == [[s.id for s in sales]]


def test_three_sales_and_silence_are_flushed_as_one_partial_batch():
    plate = new_plate()
    with running(Spy()) as runner:
        service = runner.service
        sales = sales_for(plate, [90, 15, 14])
        produce(sales)
        wait_for(lambda: service.batches, timeout=60, what="the partial batch")
        assert service.batches == [[s.id for s in sales]]
        assert [o["sale_id"] for o in orders(plate)] == [sales[1].id]


# --- the order lifecycle -----------------------------------------------------------------------


def test_order_lifecycle():
    """Opens; no second while open; a recovery sale closes it; a later low sale opens a new one."""
    plate = new_plate()
    probe = TopicProbe([t.REPLENISHMENTS.name])
    with running(Spy()) as runner:
        service = runner.service
        first = sales_for(plate, [50, 15, 10])
        produce(first)
        wait_for(lambda: len(service.batches) == 1, what="first batch")
        [opened] = orders(plate)
        assert opened["sale_id"] == first[1].id
        assert (opened["status"], opened["stock_at_trigger"], opened["quantity"]) == ("open", 15, 90)
        assert opened["id"] == order_id(first[1].id)

        # Five more: still low (no second order), recovery, low again, and back up.
        second = sales_for(plate, [8, 60, 5, 9, 35], start=first[-1].sold_at + timedelta(seconds=1))
        produce(second)
        wait_for(lambda: len(service.batches) == 2, what="second batch")

    rows = orders(plate)
    assert [(o["sale_id"], o["status"], o["quantity"]) for o in rows] == [
        (first[1].id, "delivered", 90),
        (second[2].id, "delivered", 100),
    ]
    assert rows[0]["delivered_by_sale_id"] == second[1].id
    assert rows[1]["delivered_by_sale_id"] == second[4].id
    assert all(o["published_at"] is not None for o in rows)

    records = wait_for(lambda: len(published(probe, {plate})) >= 2 and published(probe, {plate}))
    assert [(r.id, r.sale_id, r.stock_at_trigger, r.quantity) for r in records] == [
        (order_id(first[1].id), first[1].id, 15, 90),
        (order_id(second[2].id), second[2].id, 5, 100),
    ]

    with db.connect() as conn:
        stock = conn.execute("select stock_remaining, sale_id from cart_stock where plate = %s", (plate,))
        assert stock.fetchone() == (35, second[4].id)


def test_a_resent_batch_changes_nothing():
    """A retried upload keeps its sale ids but may carry new times: no second truck, no early close."""
    plate = new_plate()
    probe = TopicProbe([t.REPLENISHMENTS.name])
    with running(Spy()) as runner:
        service = runner.service
        sales = sales_for(plate, [60, 15, 70, 18, 12])
        produce(sales)
        wait_for(lambda: len(service.batches) == 1, what="first batch")
        before = orders(plate)
        assert {(o["sale_id"], o["status"]) for o in before} == {
            (sales[1].id, "delivered"),
            (sales[3].id, "open"),
        }
        later = timedelta(minutes=10)
        produce([s.model_copy(update={"sold_at": s.sold_at + later}) for s in sales])
        wait_for(lambda: len(service.batches) == 2, what="the re-sent batch")
    unchanged = ("id", "sale_id", "status", "delivered_by_sale_id")
    assert [{k: o[k] for k in unchanged} for o in orders(plate)] == [
        {k: o[k] for k in unchanged} for o in before
    ]
    assert len(published(probe, {plate})) == 2


def test_applied_sale_ids_are_forgotten_after_the_retention():
    store = OrderStore(get_settings())
    try:
        old, recent = uuid.uuid4(), uuid.uuid4()
        with store.conn.transaction():
            store.conn.execute(
                "insert into replenishment_sales (sale_id, applied_at) values "
                "(%s, now() - interval '3 days'), (%s, now())",
                (old, recent),
            )
        assert store.prune(48 * 3600) >= 1
        with store.conn.transaction():
            left = store.conn.execute(
                "select sale_id from replenishment_sales where sale_id = any(%s)", ([old, recent],)
            ).fetchall()
        assert left == [(recent,)]
    finally:
        store.close()


# --- poison ------------------------------------------------------------------------------------


def test_poison_goes_to_deadletter_and_the_sales_around_it_are_processed():
    plate = new_plate()
    probe = TopicProbe([t.DEADLETTER.name])
    low, recovery = sales_for(plate, [12, 40])
    bad_stock = low.model_dump(mode="json") | {"id": str(uuid.uuid4()), "stock_remaining": -3}
    poison = [
        (t.SALES.name, plate.encode(), b"{not json", [("type", b"Sale")], None),
        (t.SALES.name, plate.encode(), low.to_bytes(), [("type", b"Alert")], None),
        (t.SALES.name, plate.encode(), low.to_bytes(), [], None),
        (t.SALES.name, plate.encode(), Sale.model_validate(low).to_bytes()[:-1], [("type", b"Sale")], None),
    ]
    invalid = (t.SALES.name, plate.encode(), json.dumps(bad_stock).encode(), [("type", b"Sale")], None)
    with running(Spy()) as runner:
        service = runner.service
        delivered = gk.produce_all(gk.producer(), [sale_record(low), *poison, invalid, sale_record(recovery)])
        wait_for(lambda: service.batches, what="the valid sales' batch")
        assert service.batches == [[low.id, recovery.id]]
        dead = wait_for(
            lambda: len(probe.records(t.DEADLETTER.name)) >= 5 and probe.records(t.DEADLETTER.name)
        )

    assert [(o["sale_id"], o["status"]) for o in orders(plate)] == [(low.id, "delivered")]
    offsets = {m.offset() for m in delivered[1:-1]}
    mine = [
        m for m in dead if gk.header(m, "source_offset") and int(gk.header(m, "source_offset")) in offsets
    ]
    assert len(mine) == 5
    for msg in mine:
        assert gk.header(msg, "source_topic") == "sales"
        assert int(gk.header(msg, "source_partition")) == delivered[0].partition()
        assert gk.header(msg, "error")
        assert msg.key() == plate.encode()
    assert "stock_remaining" in " ".join(gk.header(m, "error") for m in mine)


# --- real processes: SIGTERM, SIGKILL, two instances ---------------------------------------------


def test_sigterm_finishes_the_batch_in_hand_commits_and_exits_0(services):
    group = f"test-stock-{uuid.uuid4()}"
    ends = commit_at_end(group)
    plate = new_plate()
    probe = TopicProbe([t.REPLENISHMENTS.name])
    # A flush time long enough that the three sales wait in the batch until SIGTERM.
    proc = services.stock(group, STOCK_BATCH_FLUSH_SECONDS="600")
    sales = sales_for(plate, [30, 17, 16])
    produce(sales)
    wait_for(
        lambda: proc.metric("gremio_consumer_records_total") == 3, timeout=60, what="three sales consumed"
    )
    assert orders(plate) == [], "the batch should still be in hand"
    assert proc.terminate() == 0, proc.output()

    assert [o["sale_id"] for o in orders(plate)] == [sales[1].id]
    assert [r.sale_id for r in published(probe, {plate})] == [sales[1].id]
    assert sum(committed(group).values()) == sum(ends.values()) + 3
    out = proc.output()
    assert f"replenishment order {order_id(sales[1].id)}: cart {plate}, stock 17, send 90" in out
    assert "stopped cleanly" in out


def test_metrics_endpoint(services):
    group = f"test-stock-{uuid.uuid4()}"
    commit_at_end(group)
    plate = new_plate()
    proc = services.stock(group)
    produce(sales_for(plate, [10, 50, 10, 10, 60]))
    wait_for(lambda: proc.metric("gremio_stock_orders_closed_total") == 2, timeout=60, what="closes")
    assert proc.metric("gremio_stock_orders_opened_total") == 2
    assert proc.metric("gremio_consumer_batches_total") == 1
    assert proc.metric("gremio_consumer_deadlettered_total") in (None, 0)
    assert proc.metric("gremio_stock_batch_seconds_count") == 1
    wait_for(lambda: proc.metric("gremio_consumer_lag") is not None, what="the lag gauge")
    assert proc.terminate() == 0


@pytest.mark.parametrize("point", ["after_db_commit", "after_produce"])
def test_sigkill_between_db_commit_and_offset_commit_neither_loses_nor_doubles(services, point):
    group = f"test-stock-{uuid.uuid4()}"
    ends = commit_at_end(group)
    plate = new_plate()
    probe = TopicProbe([t.REPLENISHMENTS.name])
    crashing = services.stock(group, STOCK_TEST_CRASH_POINT=point)
    # One batch that opens, closes and opens again: a replay must not close the second order.
    sales = sales_for(plate, [15, 60, 18, 12, 9])
    produce(sales)
    assert crashing.wait_exit(60) == -signal.SIGKILL, crashing.output()
    assert f"STOCK_TEST_CRASH_POINT={point}" in crashing.output()

    # The database commit happened; the offset commit did not.
    expected = {(sales[0].id, "delivered"), (sales[2].id, "open")}
    assert {(o["sale_id"], o["status"]) for o in orders(plate)} == expected
    assert all(o["published_at"] is None for o in orders(plate))
    assert committed(group) == ends
    before = published(probe, {plate})
    assert len(before) == (0 if point == "after_db_commit" else 2)

    recovering = services.stock(group)
    wait_for(
        lambda: sum(committed(group).values()) == sum(ends.values()) + 5,
        timeout=90,
        what="the redelivered batch committed",
    )
    assert recovering.terminate() == 0
    assert "re-published order" in recovering.output()
    rows = orders(plate)
    assert {(o["sale_id"], o["status"]) for o in rows} == expected
    assert all(o["published_at"] for o in rows)
    records = published(probe, {plate})
    assert {r.id for r in records} == {order_id(sales[0].id), order_id(sales[2].id)}
    # Each order's record exists; after a crash past the produce, once more with the same id.
    assert len(records) == 2 + len(before)


def test_two_instances_split_the_partitions_and_open_each_order_once(services):
    group = f"test-stock-{uuid.uuid4()}"
    commit_at_end(group)
    first = services.stock(group)
    second = services.stock(group)

    def split() -> list[set[int]] | None:
        parts = [{p for _, p in held} for held in assignments(group)]
        return parts if len(parts) == 2 and all(parts) else None

    halves = wait_for(split, timeout=90, what="both instances assigned")
    assert halves[0].isdisjoint(halves[1])
    assert halves[0] | halves[1] == set(range(t.SALES.partitions))

    plates = [new_plate() for _ in range(24)]
    probe = TopicProbe([t.REPLENISHMENTS.name])
    every = [s for plate in plates for s in sales_for(plate, [40, 12, 11, 50, 8])]
    produce(every)
    expected = {s.id for s in every if s.stock_remaining in (12, 8)}
    wait_for(lambda: len(published(probe, set(plates))) >= len(expected), timeout=90, what="all orders")

    records = published(probe, set(plates))
    assert sorted(r.sale_id for r in records) == sorted(expected)  # each exactly once
    with db.connect() as conn:
        rows = conn.execute(
            "select sale_id from replenishment_orders where plate = any(%s)", (plates,)
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(expected)

    logged = [set(re.findall(r"replenishment order (\S+): cart", p.output())) for p in (first, second)]
    assert logged[0] and logged[1], "both instances should have opened orders"
    assert logged[0].isdisjoint(logged[1])
    assert logged[0] | logged[1] == {str(r.id) for r in records}
    assert first.terminate() == 0
    assert second.terminate() == 0
