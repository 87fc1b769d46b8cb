"""Two instances of each consumer in one group; one is SIGKILLed mid-load.

The survivor takes the dead instance's partitions over after the session timeout (6 s
here), and the redelivered records change nothing twice: for the stock service the orders
are exactly those the pure rule makes of the acknowledged sales; for the location service
every cart ends up on the survivor's board and every alert exists once.
"""

from __future__ import annotations

import uuid

import pytest

from gremio import topics as t
from tests.reliability.oracle import (
    Carts,
    Oracle,
    Pinger,
    Walker,
    alerts_in_table,
    check_alerts_once,
    check_orders,
    expected_orders,
    fleet,
)
from tests.support import (
    ApiServer,
    Members,
    TopicProbe,
    assignments,
    caught_up,
    commit_at_end,
    new_plate,
    wait_for,
)

SALES = 3_000


def split_between_two(group: str, partitions: set[tuple[str, int]]) -> list[set[tuple[str, int]]] | None:
    held = assignments(group)
    if len(held) == 2 and all(held) and held[0] | held[1] == partitions and not held[0] & held[1]:
        return held
    return None


def every_partition(*topics: t.Topic) -> set[tuple[str, int]]:
    return {(topic.name, p) for topic in topics for p in range(topic.partitions)}


def test_two_stock_instances_one_killed_mid_load(services, tmp_path, figures):
    from gremio.records import Sale

    group = f"reliability-stock-{uuid.uuid4()}"
    commit_at_end(group, [t.SALES.name])
    carts = fleet(40, seed=7)
    oracle = Oracle()
    first, second = services.stock(group), services.stock(group)
    halves = wait_for(
        lambda: split_between_two(group, every_partition(t.SALES)), timeout=90, what="both instances assigned"
    )
    with ApiServer(tmp_path / "api.log") as api:
        api.wait_ready()
        sending = Carts(api.base, carts, oracle, threads=4).run(SALES, batch=10, rate=300)
        wait_for(lambda: len(oracle.acks) >= SALES // 3, timeout=120, what="a third of the sales")
        wait_for(lambda: (second.metric("gremio_consumer_records_total") or 0) > 0, what="both busy")
        second.kill()
        killed_after = len(oracle.acks)
        sending.join()
        assert api.stop() == 0, api.output()[-3000:]
    caught_up(group, [t.SALES.name])
    taken_over = assignments(group)
    survivor = {
        "repeated": first.metric("gremio_stock_sales_ignored_total", reason="repeated"),
        "republished": first.metric("gremio_stock_orders_republished_total"),
    }
    assert first.terminate() == 0, first.output()[-3000:]
    assert taken_over == [every_partition(t.SALES)]

    values = oracle.on_topics()
    position = {ack.id: (ack.partition, ack.offset) for ack in oracle.acks}
    expected = expected_orders([(position[i], Sale.from_bytes(v)) for i, v in values.items()])
    check_orders(expected, [cart.plate for cart in carts])
    figures.update(
        sales_acknowledged=len(oracle.acks),
        partitions_per_instance=[len(h) for h in halves],
        killed_after_sales=killed_after,
        survivor=survivor,
        orders=len(expected),
        missing=0,
        doubled=0,
    )


def test_two_location_instances_one_killed_mid_load(services, figures):
    plates = [new_plate() for _ in range(40)]
    pingers, sellers, outside, strangers = plates[:24], plates[24:32], plates[32:36], plates[36:]
    members = Members()
    members(*pingers, *sellers, *outside)
    walkers = [Walker(p, -33.44 + i / 1000, -70.65) for i, p in enumerate(pingers + strangers)]
    walkers += [Walker(p, -33.45 + i / 1000, -70.66, sells=True) for i, p in enumerate(sellers)]
    walkers += [Walker(p, -33.05 + i / 1000, -71.60) for i, p in enumerate(outside)]
    expected = {("out_of_area", p) for p in outside} | {("unregistered_cart", p) for p in strangers}
    group = f"reliability-locations-{uuid.uuid4()}"
    commit_at_end(group, [t.LOCATIONS.name, t.SALES.name])
    probe = TopicProbe([t.ALERTS.name])
    first, second = services.locations(group), services.locations(group)
    halves = wait_for(
        lambda: split_between_two(group, every_partition(t.LOCATIONS, t.SALES)),
        timeout=90,
        what="both instances assigned",
    )
    pinger = Pinger(walkers).start()
    try:
        wait_for(lambda: len(alerts_in_table(plates)) >= len(expected), timeout=60, what="the alerts")
        alerts_by_round = pinger.rounds
        # Subset: the rebuild also replays other tests' carts of the last minute from `sales`.
        # Each board shows every cart, whichever instance holds it (consumers/locations/mirror.py).
        wait_for(
            lambda: set(plates) <= set(first.carts()) & set(second.carts()), timeout=60, what="both boards"
        )
        boards_by_round = pinger.rounds
        pinger.wait_rounds(3)
        before = (len(set(plates) & set(first.carts())), len(set(plates) & set(second.carts())))
        assert before == (len(plates), len(plates))
        second.kill()
        killed_in_round = pinger.rounds
        wait_for(
            lambda: assignments(group) == [every_partition(t.LOCATIONS, t.SALES)],
            timeout=90,
            what="the survivor holding every partition",
        )
        pinger.wait_rounds(3)
    finally:
        pinger.stop()
    wait_for(
        lambda: all(
            first.carts().get(w.plate, {}).get("recorded_at") == pinger.last[w.plate].sold_at.isoformat()
            if w.sells
            else first.carts().get(w.plate, {}).get("recorded_at")
            == pinger.last[w.plate].recorded_at.isoformat()
            for w in walkers
        ),
        timeout=60,
        what="every cart's last position on the survivor's board",
    )
    forwarded = first.metric("gremio_locations_positions_total", result="forwarded")
    assert first.terminate() == 0, first.output()[-3000:]
    members.remove()
    found = check_alerts_once(expected, plates, probe)
    figures.update(
        carts=len(plates),
        carts_on_each_board_before=before,
        partitions_per_instance=[len(h) for h in halves],
        alerts_by_round=alerts_by_round,
        boards_by_round=boards_by_round,
        killed_in_round=killed_in_round,
        rounds=pinger.rounds,
        positions_and_sales_sent=len(pinger.acked),
        forwarded_by_survivor=forwarded,
        **found,
    )


def test_topic_bootstrap_takes_its_replication_factor_from_the_settings():
    """KAFKA_REPLICATION_FACTOR reaches the broker; on this one-broker stack 3 is refused whole."""
    from confluent_kafka import KafkaError, KafkaException

    from gremio import kafka as gk
    from gremio.settings import get_settings

    one = get_settings().model_copy(update={"kafka_replication_factor": 1})
    three = get_settings().model_copy(update={"kafka_replication_factor": 3})
    kept, refused = (t.Topic(f"replicas-{uuid.uuid4().hex[:8]}", 2, "k", "v", "by key") for _ in range(2))
    assert gk.ensure_topics([kept], settings=one) == {kept.name: "created"}
    with pytest.raises(KafkaException) as error:
        gk.ensure_topics([refused], settings=three)
    assert error.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR
    assert refused.name not in gk.admin().list_topics(timeout=10).topics
    # An existing topic with fewer replicas is reported, never changed behind the operator's back.
    assert gk.ensure_topics([kept], settings=three) == {kept.name: "ok (1 of 3 replicas)"}
