"""KafkaDrainOperator (plugins/kafka_drain.py) against the real broker and database.

Each test drains its own topic into its own table, so the operator is exercised the way
other DAGs will reuse it: another record model, a partition filter, message columns.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import MemberApplication, Record, Sale
from gremio.settings import get_settings
from tests.support import TopicProbe, make_table, make_topic, wait_for

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
PLATES = ("BBCL12", "CDFG34", "DFGH56", "FGHJ78")


@pytest.fixture
def name() -> str:
    return f"drain_{uuid.uuid4().hex[:10]}"


def a_sale(i: int, **changes) -> Sale:
    fields = {
        "id": uuid.uuid4(),
        "plate": PLATES[i % len(PLATES)],
        "client": f"client {i}",
        "quantity": 1 + i % 5,
        "sold_at": NOW + timedelta(seconds=i),
        "stock_remaining": 50,
        "lat": -33.45,
        "lon": -70.66,
        "received_at": NOW + timedelta(seconds=i),
    }
    return Sale(**{**fields, **changes})


def produce(topic: str, records: list[Record], partition: int | None = None, raw: list[bytes] = ()) -> None:
    gk.produce_all(
        gk.producer(),
        [
            (topic, r.plate.encode(), r.to_bytes(), [("type", r.type_name.encode())], partition)
            for r in records
        ]
        + [(topic, b"BBCL12", value, [("type", b"Sale")], partition) for value in raw],
    )


def drain(topic: str, table: str, **kwargs):
    from kafka_drain import KafkaDrainOperator

    options = {"record": "gremio.records.Sale", "group_id": f"group-{topic}", "stall_timeout": 60.0, **kwargs}
    if options["record"] == "gremio.records.Sale":  # tables like `sales`: keyed (id, sold_at)
        options.setdefault("conflict_columns", ("id", "sold_at"))
    op = KafkaDrainOperator(task_id="drain", topic=topic, table=table, **options)
    return op.execute(context={})


def count(table: str) -> int:
    with db.connect() as conn:
        return conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table))).fetchone()[0]


def committed(group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer(get_settings().kafka_config(**{"group.id": group}))
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def test_drains_everything_once_and_commits_after_the_database(name):
    topic, table = make_topic(name, 4), make_table(name, "sales")
    sales = [a_sale(i) for i in range(120)]
    probe = TopicProbe([t.DEADLETTER.name])
    produce(topic, [*sales, *sales[:7]], raw=[b'{"id": "not a sale"}'])  # 7 redelivered, 1 poison
    wrong_type = sales[0].to_bytes()  # a valid sale, but labelled as something else
    gk.produce_all(gk.producer(), [(topic, b"BBCL12", wrong_type, [("type", b"Alert")], None)])

    result = drain(topic, table, rows_per_transaction=25)

    assert result["read"] == 129
    assert result["inserted"] == 120
    assert result["deadlettered"] == 2
    assert result["transactions"] >= 5
    assert count(table) == 120
    assert sum(o for o in committed(f"group-{topic}", topic, 4).values() if o > 0) == 129
    dead = [m for m in probe.records(t.DEADLETTER.name) if gk.header(m, t.DLQ_SOURCE_TOPIC) == topic]
    assert [m.value() for m in dead] == [b'{"id": "not a sale"}', wrong_type]
    assert gk.header(dead[0], t.DLQ_ERROR).startswith("invalid Sale")
    assert gk.header(dead[1], t.DLQ_ERROR).startswith("type header 'Alert' is not one of")
    assert gk.header(dead[1], "type") == "Alert", "the original headers travel along"
    with db.connect() as conn:
        stored = conn.execute(
            sql.SQL("select id, client, quantity, sold_at from {} order by sold_at").format(
                sql.Identifier(table)
            )
        ).fetchall()
    assert stored == [(s.id, s.client, s.quantity, s.sold_at) for s in sales]

    # Nothing new: nothing read. New records: only they are read.
    assert drain(topic, table)["read"] == 0
    produce(topic, [a_sale(1000 + i) for i in range(5)])
    again = drain(topic, table)
    assert (again["read"], again["inserted"]) == (5, 5)
    assert count(table) == 125


def test_stops_at_the_marks_taken_at_start_while_records_keep_arriving(name):
    topic, table = make_topic(name, 2), make_table(name, "sales")
    produce(topic, [a_sale(i) for i in range(2000)])
    stop = threading.Event()
    produced = []

    def keep_producing() -> None:
        prod = gk.producer()
        while not stop.is_set():
            batch = [a_sale(10_000 + len(produced) + i) for i in range(20)]
            gk.produce_all(
                prod, [(topic, s.plate.encode(), s.to_bytes(), [("type", b"Sale")], None) for s in batch]
            )
            produced.extend(batch)

    writer = threading.Thread(target=keep_producing, daemon=True)
    writer.start()
    wait_for(lambda: len(produced) >= 100, what="records arriving during the drain")
    try:
        first = drain(topic, table, rows_per_transaction=500)
    finally:
        stop.set()
        writer.join(30)

    marks = {int(p): span["to"] for p, span in first["partitions"].items()}
    assert first["read"] == sum(span["to"] - span["from"] for span in first["partitions"].values())
    assert count(table) == first["read"]
    assert committed(f"group-{topic}", topic, 2) == marks
    # What arrived after the marks is left for the next run, which takes all of it.
    second = drain(topic, table)
    assert second["read"] == 2000 + len(produced) - first["read"] > 0
    assert count(table) == 2000 + len(produced)


def test_does_not_sit_out_a_poll_timeout_when_there_is_nothing_new(name):
    topic, table = make_topic(name, 2), make_table(name, "sales")
    produce(topic, [a_sale(i) for i in range(3)])
    done: list[dict] = []
    # A stall timeout far beyond the test's patience: only an exact stop can finish in time.
    runner = threading.Thread(
        target=lambda: done.append(drain(topic, table, stall_timeout=3600)), daemon=True
    )
    runner.start()
    wait_for(lambda: done, timeout=60, what="the drain to return")
    assert done[0]["read"] == 3


def member(i: int, premium: bool) -> MemberApplication:
    return MemberApplication(
        id=uuid.uuid4(),
        first_name="Rosa",
        last_name=f"Fuentes {i}",
        rut=_rut(10_000_000 + i),
        email=f"rosa{i}@example.cl",
        plate=f"BBCL{10 + i}",
        premium=premium,
        received_at=NOW,
    )


def _rut(body: int) -> str:
    from stdnum.cl import rut

    return f"{body}-{rut.calc_check_digit(str(body))}"


def test_one_partition_with_columns_from_the_message_as_member_applications_need(name):
    topic, table = make_topic(name, 2), make_table(name, "member_applications")
    regular = [member(i, premium=False) for i in range(4)]
    premium = [member(10 + i, premium=True) for i in range(3)]
    produce(topic, regular, partition=t.MEMBERS_REGULAR_PARTITION)
    produce(topic, premium, partition=t.MEMBERS_PREMIUM_PARTITION)

    result = drain(
        topic,
        table,
        record="gremio.records.MemberApplication",
        partitions=[t.MEMBERS_PREMIUM_PARTITION],
        message_columns={"kafka_partition": "partition", "kafka_offset": "offset"},
    )

    assert result["read"] == 3
    with db.connect() as conn:
        rows = conn.execute(
            sql.SQL("select id, status, kafka_partition, kafka_offset from {} order by kafka_offset").format(
                sql.Identifier(table)
            )
        ).fetchall()
    assert rows == [(m.id, "pending", 1, offset) for offset, m in enumerate(premium)]
    offsets = committed(f"group-{topic}", topic, 2)
    assert offsets[1] == 3
    assert offsets[0] < 0, "the regular partition is left for its own drain"


def test_refuses_columns_the_model_does_not_have():
    from kafka_drain import KafkaDrainOperator

    op = KafkaDrainOperator(
        task_id="x", topic="sales", table="sales", record=Sale, group_id="g", columns={"id": "nope"}
    )
    with pytest.raises(ValueError, match="no fields"):
        op.column_map(Sale)
    with pytest.raises(ValueError, match="message_columns"):
        KafkaDrainOperator(
            task_id="y", topic="s", table="s", record=Sale, group_id="g", message_columns={"x": "headers"}
        )


# --- rows PostgreSQL refuses, and failures that pass ---------------------------------------------


def refuse_clients(table: str, *clients: str) -> None:
    """A trigger on `table` that refuses these clients as PostgreSQL refuses a NUL byte (22021, a DataError)."""
    with db.connect() as conn:
        conn.execute(
            sql.SQL(
                "create function {fn}() returns trigger language plpgsql as $$ begin"
                " if new.client = any({clients}) then"
                " raise exception 'refused client' using errcode = '22021'; end if;"
                " return new; end $$"
            ).format(fn=sql.Identifier(f"{table}_refuse"), clients=sql.Literal(list(clients)))
        )
        conn.execute(
            sql.SQL("create trigger refuse before insert on {} for each row execute function {}()").format(
                sql.Identifier(table), sql.Identifier(f"{table}_refuse")
            )
        )


def dead_letters_of(probe: TopicProbe, topic: str) -> list:
    return [m for m in probe.records(t.DEADLETTER.name) if gk.header(m, t.DLQ_SOURCE_TOPIC) == topic]


def test_rows_postgresql_refuses_are_dead_lettered_alone_and_the_rest_is_inserted(name):
    topic, table = make_topic(name, 2), make_table(name, "sales")
    sales = [a_sale(i) for i in range(40)]
    refused = {sales[7].client, sales[29].client}  # interleaved, in one chunk
    refuse_clients(table, *refused)
    probe = TopicProbe([t.DEADLETTER.name])
    acked = gk.produce_all(
        gk.producer(), [(topic, s.plate.encode(), s.to_bytes(), [("type", b"Sale")], None) for s in sales]
    )

    result = drain(topic, table, rows_per_transaction=1000)

    assert (result["read"], result["inserted"], result["refused"], result["undecodable"]) == (40, 38, 2, 0)
    assert result["deadlettered"] == 2
    assert result["deadletters"] == {topic: {"undecodable": 0, "refused": 2}}
    assert result["refusals"] == {"CharacterNotInRepertoire [22021]": 2}
    with db.connect() as conn:
        stored = conn.execute(sql.SQL("select id from {}").format(sql.Identifier(table))).fetchall()
    assert {row[0] for row in stored} == {s.id for s in sales if s.client not in refused}
    ends = {
        p: 1 + max(m.offset() for m in acked if m.partition() == p) for p in {m.partition() for m in acked}
    }
    assert {p: o for p, o in committed(f"group-{topic}", topic, 2).items() if p in ends} == ends

    dead = dead_letters_of(probe, topic)
    source = {m.value(): m for m in acked}  # acknowledgements come in delivery order
    assert sorted(Sale.from_bytes(m.value()).client for m in dead) == sorted(refused)
    for m in dead:
        original = source[m.value()]
        assert m.key() == original.key()
        assert gk.header(m, "type") == "Sale", "the original headers travel along"
        assert gk.header(m, t.DLQ_SOURCE_PARTITION) == str(original.partition())
        assert gk.header(m, t.DLQ_SOURCE_OFFSET) == str(original.offset())
        assert gk.header(m, t.DLQ_ERROR).startswith("CharacterNotInRepertoire [22021]: refused client")

    # A re-run meets nothing: nothing read, nothing dead-lettered again.
    again = drain(topic, table)
    assert (again["read"], again["inserted"], again["deadlettered"]) == (0, 0, 0)
    assert len(dead_letters_of(probe, topic)) == 2
    assert count(table) == 38


def test_refused_at_copy_or_by_a_constraint_in_later_chunks_the_drain_carries_on(name):
    """COPY itself refuses a value (too long for the column), an INSERT breaks a CHECK: each
    chunk with a refused row takes the slow path; the others, and the undecodable, as before."""
    topic, table = make_topic(name, 1), make_table(name, "sales")
    with db.connect() as conn:
        conn.execute(
            sql.SQL("alter table {} alter column client type varchar(20)").format(sql.Identifier(table))
        )
        conn.execute(
            sql.SQL("alter table {} add constraint not_thirteen check (quantity <> 13)").format(
                sql.Identifier(table)
            )
        )
    sales = [a_sale(i) for i in range(100)]
    sales[12] = a_sale(12, client="a client name far too long for twenty")
    sales[55] = a_sale(55, quantity=13)
    sales[56] = a_sale(56, quantity=13)
    probe = TopicProbe([t.DEADLETTER.name])
    produce(topic, sales, raw=[b"not json"])

    result = drain(topic, table, rows_per_transaction=20)

    assert (result["read"], result["inserted"]) == (101, 97)
    assert (result["refused"], result["undecodable"], result["deadlettered"]) == (3, 1, 4)
    assert result["refusals"] == {"StringDataRightTruncation [22001]": 1, "CheckViolation [23514]": 2}
    assert count(table) == 97
    assert committed(f"group-{topic}", topic, 1) == {0: 101}
    dead = dead_letters_of(probe, topic)
    assert [int(gk.header(m, t.DLQ_SOURCE_OFFSET)) for m in dead] == [12, 55, 56, 100]
    assert gk.header(dead[0], t.DLQ_ERROR).startswith("StringDataRightTruncation [22001]")
    assert gk.header(dead[1], t.DLQ_ERROR).startswith("CheckViolation [23514]")


def test_a_fatal_error_fails_the_drain_dead_lettering_nothing(name):
    topic, table = make_topic(name, 1), make_table(name, "sales")
    with db.connect() as conn:
        conn.execute(
            sql.SQL(
                "create function {fn}() returns trigger language plpgsql as $$ begin"
                " raise exception 'a bug' using errcode = '42703'; end $$"
            ).format(fn=sql.Identifier(f"{table}_bug"))
        )
        conn.execute(
            sql.SQL("create trigger bug before insert on {} for each row execute function {}()").format(
                sql.Identifier(table), sql.Identifier(f"{table}_bug")
            )
        )
    probe = TopicProbe([t.DEADLETTER.name])
    produce(topic, [a_sale(i) for i in range(5)])

    import psycopg

    with pytest.raises(psycopg.errors.UndefinedColumn):
        drain(topic, table)
    assert count(table) == 0
    assert committed(f"group-{topic}", topic, 1)[0] < 0
    assert dead_letters_of(probe, topic) == []
