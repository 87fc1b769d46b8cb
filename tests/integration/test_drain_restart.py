"""A PostgreSQL restart in the middle of a drain is a transient failure: the task rides it out.

The drain (plugins/kafka_drain.py) is run in this process on a topic and table of the test's
own. One sale is held back (a connection inserts its id without committing) so the drain
waits on it after some chunks are committed; then the throwaway PostgreSQL is restarted
under it. The drain backs off, reconnects and resumes from its committed offsets in the same
execution: it returns, every sale is stored once, nothing is dead-lettered, and the offsets
end at the marks. (tests/reliability/test_daily_drain_postgres_restart.py covers the path
where the failure outlasts the drain's bound and Airflow's retry takes over.)
"""

from __future__ import annotations

import threading
import uuid

from psycopg import sql

from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import Sale
from tests.integration.test_drain import a_sale, committed, count, drain
from tests.support import TopicProbe, make_table, make_topic, wait_for, waits_on_lock

SALES = 3_000
CHUNK = 300


def test_postgres_restarted_mid_drain_is_ridden_out_losing_doubling_and_dead_lettering_nothing(stack):
    name = f"drain_restart_{uuid.uuid4().hex[:10]}"
    topic, table = make_topic(name, 2), make_table(name, "sales")
    sales = [a_sale(i) for i in range(SALES)]
    probe = TopicProbe([t.DEADLETTER.name])
    acked = gk.produce_all(
        gk.producer(), [(topic, s.plate.encode(), s.to_bytes(), [("type", b"Sale")], None) for s in sales]
    )
    # Held back: the last sale of the fullest partition, so chunks before it commit first.
    fullest = max({m.partition() for m in acked}, key=lambda p: sum(m.partition() == p for m in acked))
    held = Sale.from_bytes(
        max((m for m in acked if m.partition() == fullest), key=lambda m: m.offset()).value()
    )
    blocker = db.connect(autocommit=False)
    blocker.execute(
        sql.SQL(
            "insert into {} (id, plate, client, quantity, sold_at, stock_remaining, lat, lon, received_at)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(sql.Identifier(table)),
        (held.id, held.plate, held.client, held.quantity, held.sold_at,
         held.stock_remaining, held.lat, held.lon, held.received_at),
    )  # fmt: skip
    fault: dict[str, int] = {}

    def restart_postgres_mid_drain() -> None:
        try:
            wait_for(
                lambda: waits_on_lock(f"drain {topic}"), timeout=120, what="the drain to reach the held sale"
            )
            fault["committed_before"] = sum(
                o for o in committed(f"group-{topic}", topic, 2).values() if o > 0
            )
            stack.stop_postgres()
            stack.start_postgres()
            fault["restarted"] = 1
        finally:
            stack.start_postgres()

    restarter = threading.Thread(target=restart_postgres_mid_drain, daemon=True)
    restarter.start()
    try:
        result = drain(topic, table, rows_per_transaction=CHUNK)
    finally:
        restarter.join(180)
        blocker.close()
        stack.start_postgres()

    assert fault.get("restarted"), "PostgreSQL was restarted during the drain"
    assert fault["committed_before"] >= CHUNK, "part of the drain was committed before the restart"
    assert result["transient_retries"] >= 1
    assert (result["read"], result["inserted"], result["deadlettered"], result["refused"]) == (
        SALES,
        SALES,
        0,
        0,
    )
    assert count(table) == SALES
    with db.connect() as conn:
        ids = {
            row[0]
            for row in conn.execute(sql.SQL("select id from {}").format(sql.Identifier(table))).fetchall()
        }
    assert ids == {s.id for s in sales}
    ends = {p: 1 + max(m.offset() for m in acked if m.partition() == p) for p in (0, 1)}
    assert committed(f"group-{topic}", topic, 2) == ends
    assert [m for m in probe.records(t.DEADLETTER.name) if gk.header(m, t.DLQ_SOURCE_TOPIC) == topic] == []
