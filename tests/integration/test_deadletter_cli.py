"""`gremio deadletter` (gremio/deadletter.py) against the real broker and database.

Two records are produced to a source topic of the test's own (on partitions 1 and 0: the
partition is what `members` and `locations` give meaning to), consumed back, and
dead-lettered with gremio.kafka.send_dead_letters the way the consumers do. Then the CLI
lists them, shows one, replays them to where they came from, and refuses a second replay.
"""

from __future__ import annotations

import io
import os
import subprocess
import uuid

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from rich.console import Console

from gremio import db
from gremio import deadletter as dl
from gremio import kafka as gk
from gremio import topics as t
from gremio.settings import REPO_ROOT, get_settings
from tests.support import high_watermarks, make_topic, read_range

REASON = "[bold red]bad[/] value: field quantity \x1b[31m"
RAW = b"\xff\xfe not utf-8 [/b] \x1b[2J"


def consume_one(topic: str, partition: int, offset: int) -> Message:
    consumer = Consumer(get_settings().kafka_config(**{"group.id": f"probe-{uuid.uuid4()}"}))
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        for _ in range(100):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                return msg
        raise AssertionError(f"{topic}[{partition}]@{offset} not readable")
    finally:
        consumer.close()


def console() -> Console:
    return Console(file=io.StringIO(), width=250, color_system=None)


def output(out: Console) -> str:
    return out.file.getvalue()


@pytest.fixture
def dead_letters() -> dict:
    """Two records on a source topic, consumed and dead-lettered; their originals and handles."""
    source = make_topic(f"dlq_source_{uuid.uuid4().hex[:10]}", 4)
    record_id = str(uuid.uuid4())
    json_value = f'{{"id": "{record_id}", "plate": "BBCL12", "quantity": "[/b]"}}'.encode()
    originals = [
        (source, b"BBCL12", json_value, [("type", b"Sale"), ("trace", b"\x00\xff")], 1),
        (source, b"\xc3\xb1key", RAW, [("type", b"FugitiveReport")], 0),
    ]
    acked = gk.produce_all(gk.producer(), originals)
    consumed = [consume_one(source, m.partition(), m.offset()) for m in acked]
    before = high_watermarks([t.DEADLETTER.name])
    gk.send_dead_letters(gk.producer(), [(msg, REASON) for msg in consumed])
    after = high_watermarks([t.DEADLETTER.name])
    letters = read_range(before, after)
    by_source_partition = {int(gk.header(m, t.DLQ_SOURCE_PARTITION)): m for m in letters}
    assert len(by_source_partition) == 2
    handles = {p: f"{m.partition()}@{m.offset()}" for p, m in by_source_partition.items()}
    return {
        "source": source,
        "record_id": record_id,
        "originals": originals,
        "acked": acked,
        "handles": handles,
    }


def test_list_show_replay_and_a_second_replay_is_refused(dead_letters):
    source, handles = dead_letters["source"], dead_letters["handles"]

    # list: the reason, escaped (markup shows literally, the escape code as U+FFFD), no payload.
    out = console()
    assert dl.list_command(limit=50, source_topic=source, console=out) == 0
    listed = output(out)
    for handle in handles.values():
        assert handle in listed
    assert "[bold red]bad[/] value: field quantity \ufffd[31m" in listed
    assert "BBCL12" not in listed and "not utf-8" not in listed
    assert "\x1b" not in listed

    # show: headers and value, escaped; non-UTF-8 bytes shown as \xNN.
    out = console()
    assert dl.show_command(handles[1], console=out) == 0
    shown = output(out)
    assert f'"id": "{dead_letters["record_id"]}"' in shown
    assert '"quantity": "[/b]"' in shown
    assert "trace: \\x00\\xff" in shown
    assert f"source: {source} partition 1 offset {dead_letters['acked'][0].offset()}" in shown
    assert "error: [bold red]bad[/] value: field quantity \\x1b[31m" in shown
    out = console()
    assert dl.show_command(handles[0], console=out) == 0
    shown = output(out)
    assert "\\xff\\xfe not utf-8 [/b] \\x1b[2J" in shown
    assert "key: ñkey" in shown
    assert "\x1b" not in shown

    # replay: back to the source topic and partition with the original key, bytes and headers.
    start = high_watermarks([source])
    out = console()
    assert dl.replay_command([handles[1], handles[0]], console=out) == 0, output(out)
    replayed = sorted(read_range(start, high_watermarks([source])), key=lambda m: m.partition(), reverse=True)
    assert [(m.topic(), m.key(), m.value(), m.headers() or [], m.partition()) for m in replayed] == [
        (topic, key, value, headers, partition)
        for topic, key, value, headers, partition in dead_letters["originals"]
    ]
    with db.connect() as conn:
        rows = conn.execute(
            "select source_partition, record_id, replays from deadletter_replays where source_topic = %s"
            " order by source_partition",
            (source,),
        ).fetchall()
    assert rows == [(0, None, 1), (1, dead_letters["record_id"], 1)]

    # A second replay is refused, and sends nothing; --again sends it once more.
    start = high_watermarks([source])
    out = console()
    assert dl.replay_command([handles[1]], console=out) == 1
    assert "replayed before" in output(out)
    assert high_watermarks([source]) == start
    out = console()
    assert dl.replay_command([handles[1]], again=True, console=out) == 0, output(out)
    (again,) = read_range(start, high_watermarks([source]))
    assert (again.partition(), again.value()) == (1, dead_letters["originals"][0][2])
    with db.connect() as conn:
        replays = conn.execute(
            "select replays from deadletter_replays where source_topic = %s and source_partition = 1",
            (source,),
        ).fetchone()[0]
    assert replays == 2


def test_the_command_line_lists_shows_and_refuses_unknown_handles(dead_letters):
    gremio = [str(REPO_ROOT / ".venv" / "bin" / "gremio"), "deadletter"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*gremio, *args], env=os.environ.copy(), capture_output=True, text=True, timeout=60, check=False
        )

    listed = run("--topic", dead_letters["source"], "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    assert dead_letters["handles"][1] in listed.stdout
    assert "[bold red]bad[/] value" in listed.stdout
    shown = run("show", dead_letters["handles"][0])
    assert shown.returncode == 0, shown.stderr
    assert "\\xff\\xfe not utf-8" in shown.stdout
    missing = run("show", "0@999999999")
    assert missing.returncode == 1
    assert "no dead letter at offset 999999999" in missing.stdout
    assert run("replay").returncode == 2
    assert run("replay", "nonsense").returncode == 1


def test_replay_all_from_a_topic_since_a_time(dead_letters):
    out = console()
    assert dl.replay_command(all_from=dead_letters["source"], since="10m", console=out) == 0, output(out)
    assert output(out).count("replayed") == 2
    out = console()
    assert dl.replay_command(all_from=dead_letters["source"], since="10m", console=out) == 1
    assert output(out).count("replayed before") == 2
