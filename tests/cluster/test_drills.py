"""Broker drills on the three-node cluster, under sustained ingest (issue 17).

Carts sell through the API's producer path (Delivery: idempotent, acks=all) one sale at a
time each, and retry a sale that was not acknowledged with the same id, as a cart does with
its Idempotency-Key. Two carts per `sales` partition. After each drill a real consumer reads
the topic back: every acknowledged id is there, and every id there was sent. The same id
twice in the log (a retry whose first try had landed) is counted, not refused.

Figures (longest gap in acknowledgements, failed sends) are printed and written to
test-artifacts/cluster/, never asserted: the machine is shared.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from gremio import kafka as gk
from gremio import topics as t
from gremio.stack.kafka_cluster import partitions_of
from tests.cluster.support import DELIVERY_TIMEOUT, Carts, check_readback, plates_per_partition

WARMUP = 4.0  # seconds of steady acknowledgements before a node is broken
OUTAGE = 2.5 * DELIVERY_TIMEOUT  # two nodes down this long: every cart meets several 503s
RESUMED = 3  # acknowledgements per partition that count as "writes go on"


def _topics(cluster) -> None:
    gk.ensure_topics(settings=cluster.settings())


def _wait_every_partition(carts: Carts, since: float, timeout: float) -> float:
    """Until each sales partition has had RESUMED acks after `since`; returns the last first-ack."""
    return max(carts.wait_acks(RESUMED, since, timeout, partitions={p}) for p in range(t.SALES.partitions))


def _selling(cluster, sold: list[Carts]) -> tuple[Any, Carts]:
    """The cluster whole with gremio's topics, and carts selling on every `sales` partition."""
    _topics(cluster)
    cluster.wait_whole()
    settings = cluster.settings()
    carts = Carts(settings, [])
    sold.append(carts)
    carts.plates = plates_per_partition(carts)
    carts.start()
    return settings, carts


def test_sigkill_the_leader_of_sales_0_loses_no_acknowledged_sale(cluster, sold, figures):
    settings, carts = _selling(cluster, sold)
    try:
        carts.wait_acks(50, time.monotonic(), timeout=30)
        time.sleep(WARMUP)
        victim = cluster.leader_of(t.SALES.name, 0)
        led = {p.partition for p in partitions_of(gk.admin(settings), t.SALES.name) if p.leader == victim}
        failed_before = len(carts.failures)
        killed_at = time.monotonic()
        cluster.stop(victim, signal.SIGKILL)
        # Every partition, the victim's included, is acknowledged again on another leader.
        back_at = _wait_every_partition(carts, killed_at, timeout=90)
        new_leader = cluster.leader_of(t.SALES.name, 0)
        assert new_leader not in (victim, -1)
        time.sleep(1)
        gap_victim = carts.longest_gap(killed_at - 1, partitions=led)
        gap_all = carts.longest_gap(killed_at - 1)
        others = set(range(t.SALES.partitions)) - led
        gap_others = carts.longest_gap(killed_at - 1, partitions=others)
        acks_during = carts.acks_since(killed_at, back_at)
        failed = len(carts.failures) - failed_before
        # The victim comes back as a follower and catches up: the cluster is whole again.
        restarted_at = time.monotonic()
        cluster.start(victim)
        cluster.wait_whole()
        whole_after = time.monotonic() - restarted_at
    finally:
        carts.stop()
    counts = check_readback(settings, sold)
    assert counts["acked_ids_in_topic"] == counts["acked"]
    figures.update(
        victim=victim,
        victim_led_sales_partitions=sorted(led),
        new_leader_of_sales_0=new_leader,
        longest_ack_gap_on_victims_partitions_s=round(gap_victim, 2),
        longest_ack_gap_other_partitions_s=round(gap_others, 2),
        longest_ack_gap_any_partition_s=round(gap_all, 2),
        acks_on_other_partitions_meanwhile=acks_during,
        failed_sends_until_back=failed,
        failed_sends=len(carts.failures),
        failure_reasons=carts.failure_reasons(),
        whole_again_after_restart_s=round(whole_after, 1),
        carts=len(carts.plates),
        **counts,
    )
    print(f"\nbroker leader drill: {figures}")


def test_one_broker_down_then_two(cluster, sold, figures):
    settings, carts = _selling(cluster, sold)
    first, second = 3, 2  # any two: every partition has a replica on each node
    try:
        carts.wait_acks(50, time.monotonic(), timeout=30)
        time.sleep(WARMUP)

        # One node stopped for good (a controlled shutdown): writes go on, on every partition.
        stopped_first = time.monotonic()
        cluster.stop(first)
        _wait_every_partition(carts, time.monotonic(), timeout=60)
        one_down_gap = carts.longest_gap(stopped_first)

        # A second node stopped: one replica left, below min.insync.replicas=2 (and one voter
        # of three). acks=all cannot be met, so nothing is acknowledged: the API's 503.
        failed_before = len(carts.failures)
        stopping_second = time.monotonic()
        cluster.stop(second)
        second_down = time.monotonic()
        second_stop_s = second_down - stopping_second
        time.sleep(OUTAGE)
        outage_end = time.monotonic()
        acked_in_outage = carts.acks_since(second_down + 1, outage_end)
        failed_in_outage = carts.failures[failed_before:]
        assert acked_in_outage == 0, f"{acked_in_outage} sale(s) acknowledged with one broker left"
        assert len({plate for _, plate, _ in failed_in_outage}) == len(carts.plates), "a cart met no 503"
        outage_reasons = sorted({reason for _, _, reason in failed_in_outage})

        # Both back: writes are acknowledged again without a hand on it.
        restarted = time.monotonic()
        cluster.start(first, second)
        first_ack = carts.wait_acks(1, restarted, timeout=120)
        all_back = _wait_every_partition(carts, restarted, timeout=120)
        cluster.wait_whole()
        whole_after = time.monotonic() - restarted
    finally:
        carts.stop()
    counts = check_readback(settings, sold)
    assert counts["acked_ids_in_topic"] == counts["acked"]
    figures.update(
        one_down_longest_ack_gap_s=round(one_down_gap, 2),
        second_stop_took_s=round(second_stop_s, 1),
        outage_s=round(outage_end - second_down, 1),
        acked_in_outage=acked_in_outage,
        failed_sends_in_outage=len(failed_in_outage),
        outage_errors=[reason[:120] for reason in outage_reasons][:4],
        first_ack_after_restart_s=round(first_ack - restarted, 1),
        every_partition_acked_after_restart_s=round(all_back - restarted, 1),
        whole_again_after_restart_s=round(whole_after, 1),
        failed_sends=len(carts.failures),
        **counts,
    )
    print(f"\none down, then two: {figures}")
