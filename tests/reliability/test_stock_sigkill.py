"""SIGKILL the stock service five times while 10,000 sales arrive through the real API.

100 carts sell through gunicorn (the batch endpoint, 10 sales a request, each cart's sales
in order) at about 250 sales/s. Meanwhile the one `python -m consumers.stock` instance is
SIGKILLed five times, each a random moment (0.05-1.5 s) after it started consuming, while
it works off the backlog the last kill left, and started again each time. When
the group has caught up, the orders the pure rule (consumers/stock/rules.py) makes of the
acknowledged sales, read back from the offsets the API named, must be exactly the orders in
PostgreSQL (none missing, none doubled, each open or delivered as the rule says) and on
`replenishments`.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter

from consumers.stock.rules import order_id
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import ReplenishmentOrder, Sale
from tests.reliability.oracle import Carts, Oracle, check_orders, expected_orders, fleet
from tests.support import (
    ApiServer,
    TopicProbe,
    caught_up,
    commit_at_end,
    committed,
    high_watermarks,
    wait_for,
)

SALES = 10_000
KILLS = 5
CARTS = 100


def test_five_sigkills_during_10000_sales_lose_and_double_no_order(services, tmp_path, figures):
    group = f"reliability-stock-{uuid.uuid4()}"
    commit_at_end(group, [t.SALES.name])
    probe = TopicProbe([t.REPLENISHMENTS.name])
    carts = fleet(CARTS, seed=5)
    plates = [cart.plate for cart in carts]
    oracle = Oracle()
    rng = random.Random(5)
    kills: list[dict] = []
    stock = services.stock(group)
    with ApiServer(tmp_path / "api.log") as api:
        api.wait_ready()
        sending = Carts(api.base, carts, oracle, threads=4).run(SALES, batch=10, rate=250)
        for _ in range(KILLS):
            wait_for(lambda s=stock: (s.metric("gremio_consumer_records_total") or 0) > 0, timeout=120)
            # Soon after it starts: while it works off the backlog the last kill left, so mid-batch.
            time.sleep(rng.uniform(0.05, 1.5))
            seen = {
                "consumed": stock.metric("gremio_consumer_records_total"),
                "repeated": stock.metric("gremio_stock_sales_ignored_total", reason="repeated"),
                "republished": stock.metric("gremio_stock_orders_republished_total"),
            }
            done = sum(committed(group).values())
            behind = sum(high_watermarks([t.SALES.name]).values()) - done
            stock.kill()
            assert stock.proc.returncode == -9
            kills.append({**seen, "sending": sending.running, "behind": behind})
            stock = services.stock(group)
        sending.join()
        assert api.stop() == 0, api.output()[-3000:]

    catch_up = caught_up(group, [t.SALES.name])
    final = {
        "consumed": stock.metric("gremio_consumer_records_total"),
        "repeated": stock.metric("gremio_stock_sales_ignored_total", reason="repeated"),
        "republished": stock.metric("gremio_stock_orders_republished_total"),
    }
    assert stock.terminate() == 0, stock.output()[-3000:]
    assert all(k["sending"] or k["behind"] > 0 for k in kills), f"a kill found nothing in flight: {kills}"

    assert len(oracle.acks) == SALES
    values = oracle.on_topics()
    position = {ack.id: (ack.partition, ack.offset) for ack in oracle.acks}
    sales = [(position[i], Sale.from_bytes(v)) for i, v in values.items()]
    expected = expected_orders(sales)
    check_orders(expected, plates)

    published = [
        ReplenishmentOrder.from_bytes(m.value())
        for m in probe.records(t.REPLENISHMENTS.name)
        if m.key() and m.key().decode() in set(plates) and gk.header(m, "type") == "ReplenishmentOrder"
    ]
    per_id = Counter(order.id for order in published)
    assert set(per_id) == {order_id(sale_id) for sale_id in expected}
    assert all(order.id == order_id(order.sale_id) for order in published)

    logs = "".join(p.output() for p in services.started)
    figures.update(
        sales_acknowledged=len(oracle.acks),
        sigkills=len(kills),
        kills=kills,
        final_instance=final,
        # Read by more than one instance. Each count is scraped shortly before its kill, so
        # the sum is a lower bound of what was read; below SALES it proves nothing (0).
        redelivered_at_least=max(
            0, sum(k["consumed"] or 0 for k in kills) + (final["consumed"] or 0) - SALES
        ),
        catch_up_after_last_sale_seconds=round(catch_up, 1),
        orders_expected=len(expected),
        orders_open=sum(o.status == "open" for o in expected.values()),
        orders_in_postgresql=len(expected),
        orders_on_topic=len(per_id),
        order_records_published_twice=sum(n - 1 for n in per_id.values()),
        republished_warnings_in_logs=logs.count("re-published order"),
        missing=0,
        doubled=0,
    )
