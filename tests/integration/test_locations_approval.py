"""A cart approved while it moves: no `unregistered_cart` alert after its approval (issue 15, part 5).

The location service refreshes its members every MEMBERS_REFRESH_SECONDS; here that is an
hour, so only the lookup before an alert (docs/LOCATIONS.md, "Registered plates") can know
the new member. The approval is the DAGs' own: `membership.decide_pending` on a pending
premium application. The service connects as gremio_locations, so its grants are the ones
`make up` gives it.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from stdnum.cl import rut as stdnum_rut

from consumers.locations.view import alert_id
from gremio import db, membership
from gremio import kafka as gk
from gremio import records as r
from gremio.runner import Runner
from tests.integration.test_locations import Instance, private_topics
from tests.support import new_plate, routed, wait_for

SUPPRESS_SECONDS = 2.0
PING_SECONDS = 0.2
START = (-33.4400, -70.6500)
STEP = 0.000005  # ° of latitude per ping: ~0.56 m in 0.2 s, 10 km/h


def now() -> datetime:
    return datetime.now(UTC)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class Pinger(threading.Thread):
    """A cart sending a position every PING_SECONDS until stopped; keeps what it sent."""

    def __init__(self, plate: str, topics: tuple[str, str]) -> None:
        super().__init__(daemon=True)
        self.plate, self.topics = plate, topics
        self.sent: list[r.CartPosition] = []
        self.halt = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        producer = gk.producer()
        try:
            while not self.halt.is_set():
                at = now()
                ping = r.CartPosition(
                    id=uuid.uuid4(), plate=self.plate, lat=START[0] - STEP * len(self.sent), lon=START[1],
                    recorded_at=at, received_at=at,
                )  # fmt: skip
                gk.produce_all(producer, [routed(ping, *self.topics)])
                self.sent.append(ping)
                self.halt.wait(PING_SECONDS)
        except BaseException as exc:  # reported by the test
            self.failure = exc
        finally:
            producer.flush(10)

    def stop(self) -> list[r.CartPosition]:
        self.halt.set()
        self.join(30)
        assert self.failure is None, f"the pinger failed: {self.failure!r}"
        return self.sent


def apply_for(plate: str) -> tuple[uuid.UUID, datetime]:
    """A pending premium application for `plate` (as the drain stores it); its id and receipt."""
    body = str(uuid.uuid4().int % 15_000_000 + 10_000_000)
    rut = f"{body}-{stdnum_rut.calc_check_digit(body)}"
    app_id, received_at = uuid.uuid4(), now() - timedelta(days=400)  # a lane of its own
    with db.connect() as conn:
        conn.execute(
            "insert into member_applications (id, first_name, last_name, rut, email, plate, premium, received_at)"
            " values (%s, 'Rosa', 'Díaz', %s, %s, %s, true, %s)",
            (app_id, rut, f"{plate.lower()}@example.cl", plate, received_at),
        )
    return app_id, received_at


def approve(received_at: datetime) -> None:
    """What members_premium does, limited to this test's application."""
    with db.connect() as conn:
        decided = membership.decide_pending(
            conn,
            premium=True,
            decided_by="test_locations_approval",
            received_from=received_at,
            received_until=received_at + timedelta(microseconds=1),
        )
    assert [d.status for d in decided] == ["approved"]


def unregistered_alerts(plate: str) -> list[tuple[uuid.UUID, datetime]]:
    with db.connect() as conn:
        return conn.execute(
            "select id, created_at from alerts where kind = 'unregistered_cart' and plate = %s order by created_at",
            (plate,),
        ).fetchall()


def test_a_cart_approved_while_moving_raises_no_unregistered_cart_after_its_approval() -> None:
    approved, stranger = new_plate(), new_plate()
    app_id, received_at = apply_for(approved)
    topics = private_topics()
    live = Instance(
        f"test-locations-approval-{uuid.uuid4()}", topics, db_role="locations",
        alert_suppress_seconds=SUPPRESS_SECONDS, members_refresh_seconds=3600.0,
    )  # fmt: skip
    lookups, learned = (
        metric("gremio_locations_member_lookups_total"),
        metric("gremio_locations_members_learned_total"),
    )
    moving = Pinger(approved, topics)
    try:
        assert live.runner.assigned.wait(60), "partition assignment"
        moving.start()
        wait_for(lambda: approved in live.carts(), what="the moving cart on the board")
        time.sleep(1.5)
        approve(received_at)  # in the middle of the pings: they keep coming meanwhile
        committed = now()  # the approval's commit is before this
        # Without the lookup the cache would not know it for an hour, and a new alert would
        # be raised once each SUPPRESS_SECONDS: keep it moving for well over two windows.
        time.sleep(1.0)
        unapproved = Pinger(stranger, topics)
        unapproved.start()
        time.sleep(1.0)  # five pings, well within one suppression window
        strays = unapproved.stop()
        time.sleep(3 * SUPPRESS_SECONDS)
        pings = moving.stop()
        last = pings[-1].lat
        wait_for(
            lambda: live.carts().get(approved, {}).get("lat") == last and stranger in live.carts(),
            what="every position processed",
        )
        board = live.carts()[approved]
        live_lookups = metric("gremio_locations_member_lookups_total") - lookups
        live_learned = metric("gremio_locations_members_learned_total") - learned
    finally:
        moving.halt.set()
        live.stop()
    try:
        sent_at = {alert_id(p.id, "unregistered_cart"): p.received_at for p in pings}
        alerts = unregistered_alerts(approved)
        assert alerts, "before its approval the cart was unregistered, and said so"
        for alert, created_at in alerts:
            assert sent_at[alert] < committed and created_at < committed, "an alert after the approval"
        # The check: alerts joined with members, raised after the member's approval.
        # approved_at is the decision's time, a moment before its commit: an alert in between
        # is true (its position arrived before the commit), after the commit none may be.
        with db.connect() as conn:
            late = conn.execute(
                "select a.id, a.created_at from alerts a join members m on m.plate = a.plate"
                " where a.kind = 'unregistered_cart' and m.application_id = %s and a.created_at > m.approved_at",
                (app_id,),
            ).fetchall()
        assert [row for row in late if row[1] >= committed] == []
        assert len(unregistered_alerts(stranger)) == 1, "an unapproved cart still raises exactly one"
        assert stranger in {p.plate for p in strays}
        assert (board["registered"], board["master"]) == (True, "Rosa Díaz")
        assert live_learned == 1
        # A lookup only when an alert would be raised: not one per ping.
        assert len(pings) + len(strays) >= 40
        assert live_lookups <= 5, f"{live_lookups} lookups"
    finally:
        with db.connect() as conn:
            conn.execute("delete from members where application_id = %s", (app_id,))
            conn.execute("delete from member_applications where id = %s", (app_id,))


def test_the_lookup_waits_out_a_database_outage_without_false_alerts(stack) -> None:
    """PostgreSQL away while a would-be alert is looked up: the batch is retried, not alerted."""
    plate = new_plate()
    app_id, received_at = apply_for(plate)
    approve(received_at)
    topics = private_topics()
    live = Instance(
        f"test-locations-approval-{uuid.uuid4()}", topics, db_role="locations", members_refresh_seconds=3600.0
    )
    try:
        assert live.runner.assigned.wait(60), "partition assignment"
        # The cache was read at start and knows the member: forget it, as if approved since.
        live.service.view.set_members({})
        retries = metric_retries(live.runner)
        stack.stop_postgres()
        try:
            at = now()
            ping = r.CartPosition(
                id=uuid.uuid4(), plate=plate, lat=START[0], lon=START[1], recorded_at=at, received_at=at
            )
            gk.produce_all(gk.producer(), [routed(ping, *topics)])
            wait_for(lambda: metric_retries(live.runner) > retries, what="a retried batch")
            assert plate not in live.carts(), "judged without its lookup"
        finally:
            stack.start_postgres()
        wait_for(lambda: plate in live.carts(), timeout=60, what="the position after the outage")
        assert live.carts()[plate]["registered"] is True
        assert unregistered_alerts(plate) == []
    finally:
        live.stop()
        with db.connect() as conn:
            conn.execute("delete from members where application_id = %s", (app_id,))
            conn.execute("delete from member_applications where id = %s", (app_id,))


def metric_retries(runner: Runner) -> float:
    group = runner.service.group_id
    return REGISTRY.get_sample_value("gremio_consumer_retries_total", {"group": group}) or 0.0
