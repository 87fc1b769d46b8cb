"""SIGKILL the location service mid-stream: the view is rebuilt, and no alert repeats.

24 carts ping once a second: 8 steady registered carts, 4 that fall quiet after three
rounds (after the restart only the rebuild can know them), 4 that jump 2 km (twice: once
before the kill and once after), 4 working outside the service area, and 4 unregistered.
The one `python -m consumers.locations` instance is SIGKILLed while the pings flow, and a
new one starts in the same group. The new instance must show every cart, the quiet ones
included, and each (kind, cart) alert must exist exactly once: the second jump, the pings
still outside and the unregistered carts' later pings all fall in ALERT_SUPPRESS_SECONDS
(300 s), whose memory is in the alerts table.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

from gremio import kafka as gk
from gremio import topics as t
from gremio.settings import REPO_ROOT
from tests.reliability.oracle import Pinger, Walker, alerts_in_table, check_alerts_once, produce_raw
from tests.support import Members, TopicProbe, commit_at_end, new_plate, wait_for


def test_sigkill_rebuilds_the_view_and_repeats_no_alert(services, figures):
    plates = [new_plate() for _ in range(24)]
    steady, quiet, jumpers, outside, strangers = (
        plates[:8],
        plates[8:12],
        plates[12:16],
        plates[16:20],
        plates[20:],
    )
    members = Members()
    members(*steady, *quiet, *jumpers, *outside)
    walkers = [Walker(p, -33.44 + i / 1000, -70.65) for i, p in enumerate(steady + jumpers + strangers)]
    walkers += [Walker(p, -33.43 + i / 1000, -70.64, quiet_after=3) for i, p in enumerate(quiet)]
    walkers += [Walker(p, -33.05 + i / 1000, -71.60) for i, p in enumerate(outside)]  # Valparaíso
    expected = (
        {("jump", p) for p in jumpers}
        | {("out_of_area", p) for p in outside}
        | {("unregistered_cart", p) for p in strangers}
    )
    group = f"reliability-locations-{uuid.uuid4()}"
    commit_at_end(group, [t.LOCATIONS.name, t.SALES.name])
    probe = TopicProbe([t.ALERTS.name, t.DEADLETTER.name])
    pinger = None
    try:
        first = services.locations(group)
        wait_for(lambda: "assigned" in first.output(), timeout=60, what="the first instance assigned")
        pinger = Pinger(walkers).start()
        pinger.wait_rounds(3)
        # Poison among the pings: dead-lettered once, not again when the rebuild re-reads it.
        poison = produce_raw(
            [
                (t.LOCATIONS.name, p.encode(), b'{"plate": "' + p.encode(), [("type", b"CartPosition")],
                 t.position_partition(p, t.LOCATIONS.partitions))
                for p in steady[:5]
            ]
        )  # fmt: skip
        pinger.jump(*jumpers)
        wait_for(lambda: len(alerts_in_table(plates)) >= len(expected), timeout=60, what="the alerts")
        wait_for(lambda: set(plates) <= set(first.carts()), timeout=60, what="every cart on the first board")

        first.kill()
        killed_at = pinger.rounds
        second = services.locations(group)
        wait_for(lambda: "assigned" in second.output(), timeout=90, what="the new instance assigned")
        # Quiet carts sent nothing since round 3: only the rebuild can show them.
        rebuilt = wait_for(
            lambda: set(plates) <= set(second.carts()) and second.carts(), timeout=60, what="the rebuilt view"
        )
        pinger.wait_rounds(2)
        pinger.jump(*jumpers)  # a second jump, well within the suppression window
        pinger.wait_rounds(3)
    finally:
        if pinger is not None:
            pinger.stop()
    wait_for(
        lambda: all(
            second.carts().get(w.plate, {}).get("recorded_at") == pinger.last[w.plate].recorded_at.isoformat()
            for w in walkers
        ),
        timeout=60,
        what="the last round on the new board",
    )
    assert second.alive and second.terminate() == 0, second.output()[-3000:]
    members.remove()

    found = check_alerts_once(expected, plates, probe)
    assert {rebuilt[p]["registered"] for p in quiet} == {True}
    dead = [m for m in probe.records(t.DEADLETTER.name) if m.key() and m.key().decode() in set(plates)]
    assert sorted((m.partition(), m.offset()) for m in poison) == sorted(
        (int(gk.header(m, "source_partition")), int(gk.header(m, "source_offset"))) for m in dead
    ), "each poison record dead-lettered exactly once, the rebuild's re-read included"
    figures.update(
        carts=len(plates),
        rounds=pinger.rounds,
        killed_in_round=killed_at,
        positions_sent=len(pinger.acked),
        quiet_carts_rebuilt=len(quiet),
        poison_dead_lettered_once=len(poison),
        **found,
        repeated=0,
    )


# The location service under a statistics callback every 50 ms (the runner's is every 5 s), so
# one is always due when a rebalance callback returns: the moment it used to abort in.
FREQUENT_STATS = """
import sys, threading
from consumers.locations.service import LocationService
from gremio.runner import Runner
service = LocationService(group_id=sys.argv[1]).start()
runner = Runner(service, consumer_config={"statistics.interval.ms": 50})
threading.Timer(float(sys.argv[2]), runner.stop).start()
code = runner.run()
service.close()
print("assigned" if runner.assigned.is_set() else "never assigned")
raise SystemExit(code)
"""


def test_a_rebalance_with_statistics_due_does_not_abort_the_location_service():
    """Found by the SIGKILL test: the consumer's list_topics() in on_assign cleared
    confluent-kafka's call state, and the next stats callback aborted the process (SIGABRT)."""
    group = f"reliability-locations-{uuid.uuid4()}"
    command = [sys.executable, "-c", FREQUENT_STATS, group, "6"]
    # The second joins a group the first has just left: a rebalance again.
    runs = [
        subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120) for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.strip() == "assigned"
