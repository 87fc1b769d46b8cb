"""The real services meet the two kinds of failure a record's effect can have (gremio.failures).

* **Permanent**: PostgreSQL refuses one row. A trigger added for the test refuses one sale
  (stock, on `replenishment_sales`) or one fugitive report (locations, on
  `fugitive_reports`) with SQLSTATE 22021, as it would a text it cannot store; the record
  models accept both. Only that record is dead-lettered, with its source and the error;
  every other record of its batch is in the tables, and the service carries on.
* **Transient**: PostgreSQL is restarted while a batch's transaction is in flight (held on
  a row lock, so the restart lands mid-batch). Nothing is dead-lettered, nothing is lost
  or doubled (orders, reports, alerts on the table and on the topic), and the service
  does not exit: it retries after a backoff and carries on.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from psycopg import sql

from consumers.locations.view import alert_id
from gremio import db
from gremio import topics as t
from gremio.records import Alert, CartPosition, FugitiveReport, ReplenishmentOrder
from tests.integration.test_stock import sale_record, sales_for
from tests.reliability.oracle import check_orders, dead_letters, expected_orders, ids_in_table, produce_raw
from tests.support import (
    TopicProbe,
    commit_at_end,
    committed,
    high_watermarks,
    new_plate,
    routed,
    wait_for,
    waits_on_lock,
)

REFUSED_SQLSTATE = "22021"  # character_not_in_repertoire: a DataError, as for a NUL in a text


@contextlib.contextmanager
def refusing(table: str, column: str, value: str) -> Iterator[None]:
    """PostgreSQL refuses (SQLSTATE 22021) any row of `table` whose `column` is `value`, until the end."""
    name = f"test_refuse_{uuid.uuid4().hex[:12]}"
    function = sql.SQL(
        "create function {}() returns trigger language plpgsql as $$ begin"
        " raise exception 'refused by the test' using errcode = {}; end $$"
    ).format(sql.Identifier(name), sql.Literal(REFUSED_SQLSTATE))
    trigger = sql.SQL(
        "create trigger {} before insert on {} for each row when (new.{}::text = {}) execute function {}()"
    ).format(
        sql.Identifier(name), sql.Identifier(table), sql.Identifier(column), sql.Literal(value),
        sql.Identifier(name),
    )  # fmt: skip
    with db.connect(autocommit=True) as conn:
        conn.execute(function)
        conn.execute(trigger)
    try:
        yield
    finally:
        with db.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop trigger if exists {} on {}").format(sql.Identifier(name), sql.Identifier(table))
            )
            conn.execute(sql.SQL("drop function if exists {}()").format(sql.Identifier(name)))


def letters_from(marks: dict, acked: list) -> list:
    """The dead letters since `marks` whose source is one of these acknowledged messages."""
    ours = {(m.topic(), m.partition(), m.offset()) for m in acked}
    return [
        d
        for d in dead_letters(marks)
        if (
            d.header("source_topic"),
            int(d.header("source_partition") or -1),
            int(d.header("source_offset") or -1),
        )
        in ours
    ]


def committed_past(group: str, acked: list) -> None:
    """Wait until `group` has committed past each of these acknowledged messages.

    (support.caught_up waits for every partition's end, and a partition nothing was ever
    written to has no committed offset on a fresh broker.)
    """
    ends: dict[tuple[str, int], int] = {}
    for m in acked:
        ends[(m.topic(), m.partition())] = max(ends.get((m.topic(), m.partition()), 0), m.offset() + 1)
    wait_for(
        lambda: all(committed(group).get(tp, -1) >= end for tp, end in ends.items()),
        timeout=180,
        interval=0.5,
        what=f"{group} to commit past its {len(acked)} records",
    )


def applied_sales(ids: list[uuid.UUID]) -> Counter:
    with db.connect() as conn:
        rows = conn.execute("select sale_id from replenishment_sales where sale_id = any(%s)", (ids,))
        return Counter(row[0] for row in rows.fetchall())


def cart_stock(plate: str) -> tuple | None:
    with db.connect() as conn:
        return conn.execute(
            "select stock_remaining, sale_id from cart_stock where plate = %s", (plate,)
        ).fetchone()


def report(description: str) -> FugitiveReport:
    now = datetime.now(UTC)
    return FugitiveReport(id=uuid.uuid4(), lat=-33.45, lon=-70.66, description=description, received_at=now)


def a_position(plate: str) -> CartPosition:
    now = datetime.now(UTC)
    return CartPosition(
        id=uuid.uuid4(), plate=plate, lat=-33.44, lon=-70.65, recorded_at=now, received_at=now
    )


# --- permanent: one row refused ---------------------------------------------------------------


def test_a_sale_the_database_refuses_is_dead_lettered_alone_and_the_stock_service_carries_on(
    services, figures
):
    group = f"reliability-stock-{uuid.uuid4()}"
    commit_at_end(group)
    marks = high_watermarks([t.DEADLETTER.name])
    plain, mixed = new_plate(), new_plate()
    good = sales_for(plain, [50, 15, 60, 12])
    others = sales_for(mixed, [70, 40, 10, 30])
    bad = others[2]  # it would open an order
    stock = services.stock(group)
    wait_for(lambda: "assigned" in stock.output(), timeout=90, what="the stock service assigned")
    with refusing("replenishment_sales", "sale_id", str(bad.id)):
        acked = produce_raw([sale_record(s) for s in [*good, *others]])
        dead = wait_for(lambda: letters_from(marks, acked), timeout=90, what="the refused sale dead-lettered")
        committed_past(group, acked)
    kept = [s for s in [*good, *others] if s is not bad]

    assert stock.alive, stock.output()[-3000:]
    [letter] = letters_from(marks, acked)
    source = next(m for m in acked if m.value() == bad.to_bytes())
    assert (letter.header("source_topic"), int(letter.header("source_offset"))) == (
        t.SALES.name,
        source.offset(),
    )
    assert f"[{REFUSED_SQLSTATE}]" in letter.header("error") and "refused by the test" in letter.header(
        "error"
    )
    assert letter.key == mixed.encode()
    assert stock.metric("gremio_consumer_deadlettered_total", topic=t.SALES.name, reason="refused") == 1
    assert applied_sales([s.id for s in [*good, *others]]) == Counter({s.id: 1 for s in kept})
    check_orders(expected_orders(((0, i), s) for i, s in enumerate(kept)), [plain, mixed])
    assert cart_stock(plain) == (12, good[-1].id)
    assert cart_stock(mixed) == (30, others[-1].id)

    # It carries on: the next sales are processed as usual.
    later = sales_for(mixed, [25], start=others[-1].sold_at + timedelta(seconds=1))
    produce_raw([sale_record(s) for s in later])
    wait_for(lambda: cart_stock(mixed) == (25, later[0].id), timeout=60, what="a sale after the refusal")
    assert stock.terminate() == 0
    figures.update(dead_letters=len(dead), sales=len(good) + len(others), refused=1)


def test_a_report_the_database_refuses_is_dead_lettered_alone_and_the_location_service_carries_on(
    services, figures
):
    group = f"reliability-locations-{uuid.uuid4()}"
    commit_at_end(group, [t.LOCATIONS.name, t.SALES.name])
    marks = high_watermarks([t.DEADLETTER.name])
    live = services.locations(group)
    wait_for(lambda: "assigned" in live.output(), timeout=90, what="the location service assigned")
    plate = new_plate()
    good = [report(f"sin logo {i}") for i in range(4)]
    bad = report(f"refuse me {uuid.uuid4()}")
    batch = [a_position(plate), good[0], good[1], bad, good[2], good[3]]
    with refusing("fugitive_reports", "description", bad.description):
        acked = produce_raw([routed(record) for record in batch])
        wait_for(lambda: letters_from(marks, acked), timeout=90, what="the refused report dead-lettered")
        committed_past(group, acked)

    assert live.alive, live.output()[-3000:]
    [letter] = letters_from(marks, acked)
    source = next(m for m in acked if m.value() == bad.to_bytes())
    assert (letter.header("source_topic"), int(letter.header("source_offset"))) == (
        t.LOCATIONS.name,
        source.offset(),
    )
    assert f"[{REFUSED_SQLSTATE}]" in letter.header("error")
    assert live.metric("gremio_consumer_deadlettered_total", topic=t.LOCATIONS.name, reason="refused") == 1
    assert ids_in_table("fugitive_reports", [r.id for r in [*good, bad]]) == Counter({r.id: 1 for r in good})
    # The refused report's alert went with it; the others' alerts are there once each.
    alerts = ids_in_table("alerts", [alert_id(r.id, "fugitive_report") for r in [*good, bad]])
    assert alerts == Counter({alert_id(r.id, "fugitive_report"): 1 for r in good})
    assert plate in live.carts()

    # It carries on: the next report is recorded as usual.
    after = report("sin logo, después")
    produce_raw([routed(after)])
    wait_for(
        lambda: ids_in_table("fugitive_reports", [after.id]), timeout=60, what="a report after the refusal"
    )
    assert live.terminate() == 0
    figures.update(reports=len(batch) - 1, refused=1)


# --- transient: PostgreSQL restarted mid-batch --------------------------------------------------


def produced_while_a_row_is_held(stack, group: str, application_name: str, hold: tuple, records) -> list:
    """Hold one row in an open transaction, produce `records`, and once the session named
    `application_name` waits on that row (mid-batch), restart PostgreSQL; return the acked
    records once `group` committed past them."""
    blocker = db.connect(autocommit=False)
    blocker.execute(*hold)
    try:
        acked = produce_raw(records)
        wait_for(
            lambda: waits_on_lock(application_name),
            timeout=90,
            what=f"{application_name} to wait on the held row",
        )
        stack.stop_postgres()
        stack.start_postgres()
        committed_past(group, acked)
    finally:
        stack.start_postgres()
        blocker.close()
    return acked


def test_postgres_restarted_mid_batch_the_stock_service_retries_and_loses_nothing(services, stack, figures):
    group = f"reliability-stock-{uuid.uuid4()}"
    app = f"stock {uuid.uuid4().hex[:12]}"  # application_name keeps 63 bytes
    commit_at_end(group)
    marks = high_watermarks([t.DEADLETTER.name])
    probe = TopicProbe([t.REPLENISHMENTS.name])
    plates = [new_plate() for _ in range(3)]
    sales = [s for plate in plates for s in sales_for(plate, [50, 15, 60, 12, 8])]
    held = sales[7]
    stock = services.stock(group, PGAPPNAME=app)
    wait_for(lambda: "assigned" in stock.output(), timeout=90, what="the stock service assigned")
    # An uncommitted claim of one sale: the batch holding it waits on the row lock, mid-transaction.
    hold = ("insert into replenishment_sales (sale_id) values (%s)", (held.id,))
    acked = produced_while_a_row_is_held(stack, group, app, hold, [sale_record(s) for s in sales])

    assert stock.alive, stock.output()[-3000:]
    assert letters_from(marks, acked) == []
    assert applied_sales([s.id for s in sales]) == Counter({s.id: 1 for s in sales})
    expected = expected_orders(((0, i), s) for i, s in enumerate(sales))
    check_orders(expected, plates)
    published = Counter(
        ReplenishmentOrder.from_bytes(m.value()).sale_id
        for m in probe.records(t.REPLENISHMENTS.name)
        if m.key() and m.key().decode() in plates
    )
    assert published == Counter(dict.fromkeys(expected, 1)), "each order published once"
    out = stock.output()
    assert "PostgreSQL unavailable" in out and "retrying in" in out
    assert (stock.metric("gremio_consumer_retries_total") or 0) >= 1
    assert stock.terminate() == 0
    figures.update(
        sales=len(sales), orders=len(expected), retries=stock.metric("gremio_consumer_retries_total")
    )


def test_postgres_restarted_mid_batch_the_location_service_retries_and_loses_nothing(
    services, stack, figures
):
    group = f"reliability-locations-{uuid.uuid4()}"
    app = f"locations {uuid.uuid4().hex[:12]}"  # application_name keeps 63 bytes
    commit_at_end(group, [t.LOCATIONS.name, t.SALES.name])
    marks = high_watermarks([t.DEADLETTER.name])
    probe = TopicProbe([t.ALERTS.name])
    reports = [report(f"sin logo {i}") for i in range(5)]
    held = reports[2]
    live = services.locations(group, PGAPPNAME=app)
    wait_for(lambda: "assigned" in live.output(), timeout=90, what="the location service assigned")
    # An uncommitted row with one report's id: the batch holding it waits on it, mid-transaction.
    hold = ("insert into fugitive_reports (id, lat, lon, received_at) values (%s, 0, 0, now())", (held.id,))
    acked = produced_while_a_row_is_held(stack, group, app, hold, [routed(r) for r in reports])

    assert live.alive, live.output()[-3000:]
    assert letters_from(marks, acked) == []
    ids = [r.id for r in reports]
    assert ids_in_table("fugitive_reports", ids) == Counter(dict.fromkeys(ids, 1))
    with db.connect() as conn:
        stored = conn.execute("select description from fugitive_reports where id = %s", (held.id,)).fetchone()
    assert stored == (held.description,), "the report's own row, not the blocker's"
    alert_ids = [alert_id(r.id, "fugitive_report") for r in reports]
    assert ids_in_table("alerts", alert_ids) == Counter(dict.fromkeys(alert_ids, 1))
    keys = {str(r.id).encode() for r in reports}
    on_topic = Counter(
        Alert.from_bytes(m.value()).id for m in probe.records(t.ALERTS.name) if m.key() in keys
    )
    assert on_topic == Counter(dict.fromkeys(alert_ids, 1)), "each alert published once"
    out = live.output()
    assert "PostgreSQL unavailable" in out and "retrying in" in out
    assert live.terminate() == 0
    figures.update(reports=len(reports), alerts=len(alert_ids))
