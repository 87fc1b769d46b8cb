"""1,000 poison records in each consumed topic, interleaved with valid ones.

`sales` (read by the stock service, the location service and the daily drain),
`locations` (the location service) and `members` (the membership DAGs' drain, run here
as the operator itself into member_applications) each get 1,000 valid records and 1,000
poison ones, alternating on the same partitions (same keys), in four kinds, 250 of each:

* invalid JSON (cut off, or not UTF-8 at all);
* wrong schema (valid JSON: a field missing, a value out of range, an unknown field);
* a 1 MB value (1,000,000 bytes: the record with one text field blown up, random text);
* a wrong `type` header (a valid record, labelled `Alert`).

Every poison record must end in `deadletter` once per consumer that read it, with its
key, its value byte for byte, its original headers and the source headers; every valid
record must be processed (orders, the live view, rows); and no service may die.
"""

from __future__ import annotations

import base64
import json
import os
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from stdnum.cl import rut as stdnum_rut

from gremio import db
from gremio import topics as t
from gremio.records import CartPosition, FugitiveReport, MemberApplication, Record, Sale
from tests.reliability.oracle import (
    check_orders,
    dead_letters,
    digest,
    drain,
    expected_orders,
    fleet,
    ids_in_table,
    produce_raw,
)
from tests.support import (
    caught_up,
    commit_at_end,
    committed,
    high_watermarks,
    make_table,
    make_topic,
    new_plate,
    routed,
    wait_for,
)

POISON = 1_000  # per topic
MB = 1_000_000
KINDS = ("invalid_json", "wrong_schema", "one_megabyte", "wrong_type")
# The text field a 1 MB value blows up, per record type.
BIG_FIELD = {
    Sale: "client",
    CartPosition: "plate",
    FugitiveReport: "description",
    MemberApplication: "first_name",
}


def poison(kind: str, valid: Record, rng: random.Random) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A poison value (and its headers) made from a valid record."""
    typed = [("type", valid.type_name.encode())]
    doc = valid.model_dump(mode="json")
    if kind == "invalid_json":
        cut = valid.to_bytes()[: rng.randrange(5, 40)]
        return (cut if rng.random() < 0.5 else b"\xff\xfe" + cut), typed
    if kind == "wrong_schema":
        field = rng.choice([f for f in doc if f != "id"])
        change = rng.choice(("missing", "bad", "unknown"))
        if change == "missing" and type(valid).model_fields[field].is_required():
            del doc[field]
        elif change in ("bad", "missing"):
            doc[field] = -(10**9) if isinstance(doc[field], int | float) else {"nested": True}
        else:
            doc["surprise"] = "field"
        return json.dumps(doc).encode(), typed
    if kind == "one_megabyte":
        big = BIG_FIELD[type(valid)]
        doc[big] = ""
        room = MB - len(json.dumps(doc).encode())
        doc[big] = base64.b64encode(os.urandom(room))[:room].decode()
        value = json.dumps(doc).encode()
        assert len(value) == MB
        return value, typed
    return valid.to_bytes(), [("type", b"Alert")]  # a valid record under a wrong type


def interleave(valid: list[Record], rng: random.Random, route=routed) -> tuple[list, set[int]]:
    """valid, poison, valid, poison...: produce tuples, and the indexes of the poison ones."""
    records, poisoned = [], set()
    for i, record in enumerate(valid):
        topic, key, value, headers, partition = route(record)
        records.append((topic, key, value, headers, partition))
        bad, bad_headers = poison(KINDS[i % len(KINDS)], record, rng)
        poisoned.add(len(records))
        records.append((topic, key, bad, bad_headers, partition))
    return records, poisoned


def a_sale(fields: dict) -> Sale:
    at = datetime.now(UTC)
    location = fields.pop("location")
    return Sale(id=uuid.uuid4(), received_at=at, lat=location["lat"], lon=location["lon"], **fields)


def an_application(rng: random.Random) -> MemberApplication:
    body = str(rng.randrange(2_000_000, 25_000_000))
    plate = new_plate(rng)
    return MemberApplication(
        id=uuid.uuid4(), first_name="Poison", last_name="Test", rut=f"{body}-{stdnum_rut.calc_check_digit(body)}",
        email=f"{plate.lower()}@example.cl", plate=plate, premium=rng.random() < 0.3,
        received_at=datetime.now(UTC),
    )  # fmt: skip


def member_route(app: MemberApplication):
    partition = t.member_partition(app.premium)
    return (t.MEMBERS.name, app.rut.encode(), app.to_bytes(), [("type", b"MemberApplication")], partition)


def test_poison_goes_to_deadletter_every_valid_record_is_processed_and_no_service_dies(services, figures):
    rng = random.Random(1)
    carts = fleet(20, seed=11)
    plates = [cart.plate for cart in carts]
    sales = [a_sale(carts[i % 20].next_sale()) for i in range(POISON)]
    now = datetime.now(UTC)
    walkers = [new_plate(rng) for _ in range(30)]
    places = []
    for i in range(POISON):
        if i % 10 == 9:
            places.append(
                FugitiveReport(
                    id=uuid.uuid4(), lat=-33.45, lon=-70.66, description="sin logo", received_at=now
                )
            )
        else:
            plate = walkers[i % 30]
            at = now - timedelta(seconds=30) + timedelta(milliseconds=i)
            places.append(
                CartPosition(
                    id=uuid.uuid4(),
                    plate=plate,
                    lat=-33.44 + i / 1e5,
                    lon=-70.65,
                    recorded_at=at,
                    received_at=now,
                )
            )
    applications = [an_application(rng) for _ in range(POISON)]

    groups = {
        name: f"reliability-{name}-{uuid.uuid4()}" for name in ("stock", "locations", "sales", "members")
    }
    commit_at_end(groups["stock"], [t.SALES.name])
    commit_at_end(groups["locations"], [t.LOCATIONS.name, t.SALES.name])
    commit_at_end(groups["sales"], [t.SALES.name])
    commit_at_end(groups["members"], [t.MEMBERS.name])
    dlq_marks = high_watermarks([t.DEADLETTER.name])
    stock = services.stock(groups["stock"])
    # Producing 750 MB of poison takes longer than a cart's 60 s on the board; this test is
    # about poison, not expiry, so the board keeps carts for an hour.
    live = services.locations(groups["locations"], LIVE_TTL_SECONDS="3600")
    wait_for(
        lambda: "assigned" in stock.output() and "assigned" in live.output(), timeout=90, what="assigned"
    )

    produced = {}
    poisoned = {}
    for topic, valid, route in (
        (t.SALES.name, sales, routed),
        (t.LOCATIONS.name, places, routed),
        (t.MEMBERS.name, applications, member_route),
    ):
        records, bad = interleave(valid, rng, route)
        landed = in_produce_order(records, produce_raw(records))
        produced[topic] = records
        poisoned[topic] = [(records[i], landed[i]) for i in sorted(bad)]

    caught_up(groups["stock"], [t.SALES.name])
    caught_up(groups["locations"], [t.SALES.name, t.LOCATIONS.name])
    board = live.live()
    sales_drain = drain(t.SALES.name, "sales", "gremio.records.Sale", groups["sales"], stall_timeout=60.0)
    members_drain = drain(
        t.MEMBERS.name,
        "member_applications",
        "gremio.records.MemberApplication",
        groups["members"],
        message_columns={"kafka_partition": "partition", "kafka_offset": "offset"},
        stall_timeout=60.0,
    )

    # No service died, and each counted its poison.
    counted = {
        "stock": stock.metric("gremio_consumer_deadlettered_total", topic="sales"),
        "locations/sales": live.metric("gremio_consumer_deadlettered_total", topic="sales"),
        "locations/locations": live.metric("gremio_consumer_deadlettered_total", topic="locations"),
    }
    assert stock.alive and live.alive
    assert stock.terminate() == 0 and live.terminate() == 0
    assert counted == dict.fromkeys(counted, float(POISON))
    assert (sales_drain["read"], sales_drain["inserted"], sales_drain["deadlettered"]) == (
        2 * POISON,
        POISON,
        POISON,
    )
    assert (members_drain["read"], members_drain["inserted"], members_drain["deadlettered"]) == (
        2 * POISON,
        POISON,
        POISON,
    )

    # Every valid record was processed.
    check_orders(expected_orders(((0, i), s) for i, s in enumerate(sales)), plates)
    assert set(ids_in_table("sales", [s.id for s in sales]).values()) == {1}
    assert len(ids_in_table("sales", [s.id for s in sales])) == POISON
    assert len(ids_in_table("member_applications", [a.id for a in applications])) == POISON
    shown = {cart["plate"]: cart for cart in board["carts"]}
    newest = {}
    for place in places:
        if isinstance(place, CartPosition):
            newest[place.plate] = max(newest.get(place.plate, place.recorded_at), place.recorded_at)
    for sale in sales:
        newest[sale.plate] = max(newest.get(sale.plate, sale.sold_at), sale.sold_at)
    assert {p: shown[p]["recorded_at"] for p in newest if p in shown} == {
        p: at.isoformat() for p, at in newest.items()
    }
    reports = [p.id for p in places if isinstance(p, FugitiveReport)]
    assert len(ids_in_table("fugitive_reports", reports)) == len(reports)

    # Every poison record is in deadletter, once per consumer that read it, as it was.
    readers = {t.SALES.name: 3, t.LOCATIONS.name: 1, t.MEMBERS.name: 1}
    dead = dead_letters(dlq_marks)
    by_source = Counter()
    mismatched = []
    originals = {
        (msg.topic(), msg.partition(), msg.offset()): record
        for topic in poisoned
        for record, msg in poisoned[topic]
    }
    for letter in dead:
        source = (
            letter.header("source_topic"),
            int(letter.header("source_partition")),
            int(letter.header("source_offset")),
        )
        by_source[source] += 1
        record = originals.get(source)
        if record is None:
            mismatched.append(("not poison", source))
            continue
        _, key, value, headers, _ = record
        original_headers = [(k, v) for k, v in letter.headers if not k.startswith("source_") and k != "error"]
        if (letter.key, letter.digest, letter.size, original_headers) != (
            key,
            digest(value),
            len(value),
            headers,
        ):
            mismatched.append(("altered", source))
        if not letter.header("error"):
            mismatched.append(("no error", source))
    assert not mismatched, mismatched[:5]
    assert {source: by_source[source] for source in originals} == {
        source: readers[source[0]] for source in originals
    }
    kinds = Counter(
        KINDS[(i // 2) % len(KINDS)] for topic in produced for i in range(1, len(produced[topic]), 2)
    )
    figures.update(
        poison_per_topic=POISON,
        valid_per_topic=POISON,
        poison_kinds=dict(kinds),
        dead_letters=len(dead),
        deadlettered_by=counted
        | {"sales drain": sales_drain["deadlettered"], "members drain": members_drain["deadlettered"]},
        valid_processed={
            "sales (drain)": POISON,
            "members (drain)": POISON,
            "orders": "as the rule says",
            "live carts": len(newest),
        },
        services_died=0,
    )
    with db.connect() as conn:
        conn.execute("delete from member_applications where id = any(%s)", ([a.id for a in applications],))


def in_produce_order(records: list, acked: list) -> list:
    """The acknowledged message of each record: a key's records keep their order on their partition."""
    by_key: dict[bytes, list] = {}
    for msg in sorted(acked, key=lambda m: m.offset()):
        by_key.setdefault(msg.key(), []).append(msg)
    for msgs in by_key.values():
        msgs.reverse()
    found = [by_key[key].pop() for _, key, *_ in records]
    assert all(digest(m.value()) == digest(r[2]) for m, r in zip(found, records, strict=True))
    return found


def test_a_flood_of_1_mb_poison_is_drained_in_bounded_chunks_losing_and_doubling_nothing():
    """The drain ends a chunk once its poison holds poison_bytes_per_transaction, and seeks back
    to what it had fetched but not read: every valid record is stored once, every poison
    record dead-lettered once, and the offsets end at the marks."""
    rng = random.Random(3)
    name = f"drain_flood_{uuid.uuid4().hex[:10]}"
    topic, table = make_topic(name, 2), make_table(name, "sales")
    carts = fleet(2, seed=3)
    valid = [a_sale(carts[i % 2].next_sale()) for i in range(60)]
    records = []
    for sale in valid:
        records.append(routed(sale, sales=topic))
        records.append(
            (topic, sale.plate.encode(), poison("one_megabyte", sale, rng)[0], [("type", b"Sale")], None)
        )
    acked = produce_raw(records)
    dlq_marks = high_watermarks([t.DEADLETTER.name])

    result = drain(topic, table, "gremio.records.Sale", f"group-{name}", poison_bytes_per_transaction=3 * MB)

    assert (result["read"], result["inserted"], result["deadlettered"]) == (120, 60, 60)
    assert result["transactions"] >= 60 // 3, "a chunk holds at most about 3 MB of poison"
    assert len(ids_in_table(table, [s.id for s in valid])) == 60
    poisoned = {(m.partition(), m.offset()) for m in acked if len(m.value()) == MB}
    dead = [d for d in dead_letters(dlq_marks) if d.header("source_topic") == topic]
    assert sorted(
        (int(d.header("source_partition")), int(d.header("source_offset"))) for d in dead
    ) == sorted(poisoned)
    ends = {(topic, p): 1 + max(m.offset() for m in acked if m.partition() == p) for p in (0, 1)}
    assert {tp: o for tp, o in committed(f"group-{name}").items() if tp in ends} == ends
