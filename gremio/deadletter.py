"""`gremio deadletter`: the operator's view of the `deadletter` topic, and the way back.

A dead letter is a record a consumer could never process (undecodable, an unknown `type`,
a value no model accepts), sent to `deadletter` with its original key, bytes and headers
plus `source_topic`, `source_partition`, `source_offset` and `error`
(gremio.kafka.deadletter_headers). Its handle is its own place in `deadletter`:
`PARTITION@OFFSET`, e.g. `1@42`.

* `list`: the newest dead letters (source, reason, age), newest last. Payloads may hold
  personal data, so the list shows none.
* `show P@O`: one dead letter's headers and value, escaped and truncated.
* `replay P@O ...`: after a fix, send the records back to their source topic and source
  partition (the partition means something: `members` p0 regular / p1 premium,
  `locations` p0 fugitive reports) with the original key, bytes and headers. A replay is
  recorded in `deadletter_replays` once the broker has acknowledged it, keyed by the source
  record, and the same source record is not replayed again without `again=True`. A crash
  between the acknowledgement and the record means one more replay of the same record id,
  which the consumers skip: they are idempotent by id.

The topic is read with a plain consumer that is assigned partitions and never joins a
group or commits, from offsets computed from the watermarks, and every read is bounded in
time. docs/OPERATIONS.md says when to use which.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gremio import topics as t
from gremio.safetext import printable, screen
from gremio.settings import Settings, get_settings

DLQ_HEADERS = (t.DLQ_SOURCE_TOPIC, t.DLQ_SOURCE_PARTITION, t.DLQ_SOURCE_OFFSET, t.DLQ_ERROR)
SHOW_MAX_BYTES = 4096
REPLAY_LOCK = 0x67_72_65_6D_2D_64_6C  # "grem-dl": one replayer at a time
REASON_WIDTH = 160
_HANDLE = re.compile(r"^\s*(\d+)\s*@\s*(\d+)\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DeadLetterError(Exception):
    """Something the operator asked for that cannot be done; the message says why."""


# --- one dead letter ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_message(cls, msg: Message) -> DeadLetter:
        kind, millis = msg.timestamp()
        when = datetime.fromtimestamp(millis / 1000, UTC) if kind and millis >= 0 else None
        headers = tuple(
            (k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in msg.headers() or ()
        )
        return cls(msg.partition(), msg.offset(), when, msg.key(), msg.value() or b"", headers)

    @property
    def handle(self) -> str:
        return f"{self.partition}@{self.offset}"

    def _last(self, name: str) -> str | None:
        """deadletter_headers appends its headers after the original ones: the last one wins."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def source_topic(self) -> str | None:
        return self._last(t.DLQ_SOURCE_TOPIC)

    @property
    def source_partition(self) -> int | None:
        return _int(self._last(t.DLQ_SOURCE_PARTITION))

    @property
    def source_offset(self) -> int | None:
        return _int(self._last(t.DLQ_SOURCE_OFFSET))

    @property
    def error(self) -> str:
        return self._last(t.DLQ_ERROR) or ""

    @property
    def source(self) -> tuple[str, int, int] | None:
        """(topic, partition, offset) of the original record, or None if the headers lack it."""
        topic, partition, offset = self.source_topic, self.source_partition, self.source_offset
        if not topic or partition is None or offset is None:
            return None
        return topic, partition, offset

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        """The record's own headers: these minus the last of each header deadletter_headers added."""
        drop = {
            index
            for name in DLQ_HEADERS
            for index in [max((i for i, (k, _) in enumerate(self.headers) if k == name), default=-1)]
            if index >= 0
        }
        return [(k, v) for i, (k, v) in enumerate(self.headers) if i not in drop]

    @property
    def record_id(self) -> str | None:
        """The record's `id` (its idempotency key), if the value is a JSON object with one."""
        try:
            doc = json.loads(self.value)
        except ValueError:
            return None
        ident = doc.get("id") if isinstance(doc, dict) else None
        return str(ident) if isinstance(ident, (str, int)) else None

    def age(self, now: datetime | None = None) -> timedelta | None:
        if self.timestamp is None:
            return None
        return (now or datetime.now(UTC)) - self.timestamp


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def parse_handle(text: str) -> tuple[int, int]:
    """`1@42` → (1, 42): the dead letter's partition and offset in `deadletter`."""
    match = _HANDLE.match(text)
    if not match:
        raise DeadLetterError(f"{text!r} is not a dead letter's handle: expected PARTITION@OFFSET, e.g. 1@42")
    return int(match[1]), int(match[2])


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`30m`, `2h`, `7d` (ago), or an ISO 8601 time (with an offset; UTC if it has none)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text)
    if match:
        return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DeadLetterError(
            f"{text!r} is not a time: expected 30m, 2h, 7d or 2026-11-28T09:00-03:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- reading the topic ------------------------------------------------------------------------------


class _Reader:
    """A consumer that is assigned partitions and reads offset ranges; no group, no commits."""

    def __init__(self, settings: Settings, timeout: float, topic: str = t.DEADLETTER.name) -> None:
        self.topic = topic
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": "gremio-deadletter-cli",  # required by the client; never joined
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                }
            )
        )

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.close()

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadLetterError(f"timed out after {self.timeout:g} s reading {self.topic} (try --timeout)")
        return left

    def partitions(self) -> list[int]:
        meta = self.consumer.list_topics(self.topic, timeout=self._left()).topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise DeadLetterError(f"topic {self.topic} does not exist (gremio topics creates it)")
        return sorted(meta.partitions)

    def watermarks(self, partition: int) -> tuple[int, int]:
        return self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=self._left(), cached=False
        )

    def read(self, partition: int, start: int, end: int) -> list[DeadLetter]:
        """The records at offsets [start, end) of one partition (fewer if some are gone)."""
        if start >= end:
            return []
        self.consumer.assign([TopicPartition(self.topic, partition, start)])
        got: list[DeadLetter] = []
        try:
            while True:
                for msg in self.consumer.consume(500, timeout=min(0.5, self._left())):
                    if msg.error() is not None:
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            return got
                        raise KafkaException(msg.error())
                    if msg.offset() >= end:
                        return got
                    if msg.offset() >= start:
                        got.append(DeadLetter.from_message(msg))
                    if msg.offset() >= end - 1:
                        return got
        finally:
            self.consumer.unassign()


def _matches(letter: DeadLetter, source_topic: str | None, since: datetime | None) -> bool:
    if source_topic is not None and letter.source_topic != source_topic:
        return False
    return since is None or (letter.timestamp is not None and letter.timestamp >= since)


def recent(
    limit: int = 20,
    source_topic: str | None = None,
    since: datetime | None = None,
    timeout: float = 10.0,
    settings: Settings | None = None,
) -> list[DeadLetter]:
    """The newest `limit` dead letters (0: all), optionally only from `source_topic` and since
    `since`, newest last.

    Each partition is read backwards from its high watermark in growing windows, until it has
    `limit` matches, reaches `since` or its start: without a filter that is the last `limit`
    records of each partition.
    """
    settings = settings or get_settings()
    found: list[DeadLetter] = []
    with _Reader(settings, timeout) as reader:
        for partition in reader.partitions():
            low, end = reader.watermarks(partition)
            window = max(limit, 1) if limit > 0 and source_topic is None else max(limit, 500)
            matching: list[DeadLetter] = []
            while end > low and (limit <= 0 or len(matching) < limit):
                start = low if limit <= 0 and since is None else max(low, end - window)
                chunk = reader.read(partition, start, end)
                matching = [d for d in chunk if _matches(d, source_topic, since)] + matching
                if (
                    since is not None
                    and chunk
                    and chunk[0].timestamp is not None
                    and chunk[0].timestamp < since
                ):
                    break
                end, window = start, window * 2
            found += matching[-limit:] if limit > 0 else matching
    found.sort(key=lambda d: (d.timestamp or datetime.min.replace(tzinfo=UTC), d.partition, d.offset))
    return found[-limit:] if limit > 0 else found


def fetch(
    handles: Iterable[str], timeout: float = 10.0, settings: Settings | None = None
) -> list[DeadLetter]:
    """The dead letters at these handles, in the order asked; DeadLetterError if one is not there."""
    settings = settings or get_settings()
    wanted = [(text, *parse_handle(text)) for text in handles]
    out: list[DeadLetter] = []
    with _Reader(settings, timeout) as reader:
        partitions = set(reader.partitions())
        for text, partition, offset in wanted:
            if partition not in partitions:
                raise DeadLetterError(f"{text}: {reader.topic} has no partition {partition}")
            low, high = reader.watermarks(partition)
            got = reader.read(partition, offset, offset + 1) if low <= offset < high else []
            if not got or got[0].offset != offset:
                held = f"it holds offsets {low}..{high - 1}" if high > low else "it is empty"
                raise DeadLetterError(
                    f"{text}: no dead letter at offset {offset} of partition {partition} ({held})"
                )
            out.append(got[0])
    return out


# --- replay ---------------------------------------------------------------------------------------


@dataclass
class ReplayOutcome:
    replayed: list[tuple[DeadLetter, int, int]] = field(default_factory=list)  # (letter, partition, offset)
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)  # (letter, why)


def replay(
    letters: Sequence[DeadLetter], again: bool = False, settings: Settings | None = None
) -> ReplayOutcome:
    """Send `letters` back to their source topic and partition; record each after the ack.

    Refused (and reported, nothing sent for them): a dead letter without the source headers,
    whose source partition no longer exists, replayed before (unless `again`), or a second
    dead letter of a source record already in this batch.
    """
    from gremio import db
    from gremio import kafka as gk

    settings = settings or get_settings()
    outcome = ReplayOutcome()
    chosen: dict[tuple[str, int, int], DeadLetter] = {}
    counts = gk.partition_counts(settings)
    for letter in letters:
        source = letter.source
        if source is None:
            outcome.refused.append((letter, "no source_topic/source_partition/source_offset headers"))
        elif source[0] == t.DEADLETTER.name:
            outcome.refused.append((letter, f"its source is {t.DEADLETTER.name} itself"))
        elif source[1] >= counts.get(source[0], 0):
            outcome.refused.append((letter, f"{source[0]} has no partition {source[1]}"))
        elif source in chosen:
            outcome.refused.append((letter, f"same source record as {chosen[source].handle}"))
        else:
            chosen[source] = letter
    if not chosen:
        return outcome
    with db.connect(settings) as conn:
        # One replayer at a time, from the check to the record: two operators replaying the
        # same dead letter at once cannot both pass the check.
        conn.execute("select pg_advisory_xact_lock(%s)", (REPLAY_LOCK,))
        sources = list(chosen)
        before = {
            (topic, partition, offset): (replays, replayed_at)
            for topic, partition, offset, _, replays, replayed_at in conn.execute(
                db.query("deadletter_replayed"),
                {
                    "topics": [s[0] for s in sources],
                    "partitions": [s[1] for s in sources],
                    "offsets": [s[2] for s in sources],
                },
            )
        }
        if not again:
            for source, (replays, replayed_at) in before.items():
                letter = chosen.pop(source)
                when = replayed_at.astimezone(UTC).isoformat(timespec="seconds")
                outcome.refused.append(
                    (letter, f"replayed before ({replays}x, last {when}); --again replays it once more")
                )
        if not chosen:
            return outcome
        todo = list(chosen.items())
        delivered = gk.produce_all(
            gk.producer(settings),
            [
                (topic, letter.key, letter.value, letter.original_headers, partition)
                for (topic, partition, _), letter in todo
            ],
        )
        # Acknowledged: now record. Within one partition, delivery reports come in produce
        # order (idempotent producer), which pairs each record with its new offset.
        acked: dict[tuple[str, int], list[Message]] = defaultdict(list)
        for msg in delivered:
            acked[(msg.topic(), msg.partition())].append(msg)
        params: dict[str, list[Any]] = defaultdict(list)
        for (topic, partition, offset), letter in todo:
            msg = acked[(topic, partition)].pop(0)
            outcome.replayed.append((letter, msg.partition(), msg.offset()))
            params["topics"].append(topic)
            params["partitions"].append(partition)
            params["offsets"].append(offset)
            params["record_ids"].append(letter.record_id)
            params["dl_partitions"].append(letter.partition)
            params["dl_offsets"].append(letter.offset)
            params["to_partitions"].append(msg.partition())
            params["to_offsets"].append(msg.offset())
        conn.execute(db.query("deadletter_record_replays"), dict(params))
        conn.commit()
    return outcome


# --- screens --------------------------------------------------------------------------------------


def format_age(age: timedelta | None) -> str:
    if age is None:
        return "?"
    seconds = max(0, int(age.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def list_table(letters: Sequence[DeadLetter], now: datetime | None = None) -> Table:
    """The list screen: where each came from and why, never the payload."""
    now = now or datetime.now(UTC)
    table = Table(title=f"Dead letters ({len(letters)}, newest last)", title_justify="left")
    for name, justify in (("handle", "right"), ("age", "right"), ("source topic", "left"),
                          ("partition", "right"), ("offset", "right"), ("reason", "left")):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=name != "reason")
    for d in letters:
        reason = d.error if len(d.error) <= REASON_WIDTH else d.error[: REASON_WIDTH - 1] + "…"
        table.add_row(
            d.handle,
            format_age(d.age(now)),
            screen(d.source_topic or "?"),
            "?" if d.source_partition is None else str(d.source_partition),
            "?" if d.source_offset is None else str(d.source_offset),
            screen(reason),
        )
    return table


def shown_bytes(value: bytes | None) -> str:
    """Bytes as text an operator can read safely: UTF-8 where it is, `\\xff` where it is not,
    control and invisible characters escaped."""
    if value is None:
        return "(none)"
    return printable(value.decode("utf-8", "backslashreplace"), escape=True)


def value_lines(value: bytes, max_bytes: int = SHOW_MAX_BYTES) -> list[str]:
    """The value for `show`: pretty JSON if it is JSON, else its text; escaped, truncated."""
    head = value[:max_bytes]
    lines: list[str] | None = None
    if len(value) <= max_bytes:
        try:
            lines = json.dumps(json.loads(value), indent=2, ensure_ascii=False).splitlines()
        except ValueError:
            lines = None
    if lines is None:
        lines = head.decode("utf-8", "backslashreplace").split("\n")
    out = [printable(line, escape=True) for line in lines]
    if len(value) > max_bytes:
        out.append(f"… {len(value) - max_bytes} more bytes not shown (of {len(value)})")
    return out


def show_lines(
    letter: DeadLetter, max_bytes: int = SHOW_MAX_BYTES, now: datetime | None = None
) -> list[Text]:
    """The `show` screen, line by line, as rich Text (never markup)."""
    now = now or datetime.now(UTC)
    when = letter.timestamp.isoformat(timespec="seconds") if letter.timestamp else "?"
    source = letter.source
    where = f"{t.DEADLETTER.name} partition {letter.partition}, offset {letter.offset}"
    lines = [
        Text(f"dead letter {letter.handle} ({where})", style="bold"),
        Text(f"dead-lettered: {when} ({format_age(letter.age(now))} ago)"),
        screen(f"source: {source[0]} partition {source[1]} offset {source[2]}" if source else "source: ?"),
        screen(f"error: {letter.error}", escape=True),
        screen(f"record id: {letter.record_id or '?'}"),
        screen(f"key: {shown_bytes(letter.key)}"),
        Text("headers:"),
        *(screen(f"  {printable(k, escape=True)}: {shown_bytes(v)}") for k, v in letter.headers),
        Text(f"value ({len(letter.value)} bytes):"),
        *(screen(line) for line in value_lines(letter.value, max_bytes)),
    ]
    return lines


# --- the commands (gremio/cli.py parses, these run) --------------------------------------------------


def _console(console: Console | None) -> Console:
    if console is not None:
        return console
    console = Console()
    return console if console.is_terminal else Console(width=200)


def list_command(
    limit: int = 20,
    source_topic: str | None = None,
    since: str | None = None,
    timeout: float = 10.0,
    console: Console | None = None,
) -> int:
    """`gremio deadletter [list]`."""
    out = _console(console)
    try:
        letters = recent(limit, source_topic, parse_since(since) if since else None, timeout)
    except (DeadLetterError, KafkaException) as exc:
        out.print(screen(f"gremio deadletter: {exc}", "red"))
        return 1
    if not letters:
        out.print(
            "no dead letters"
            + (f" from {source_topic}" if source_topic else "")
            + (" in that time" if since else "")
        )
        return 0
    out.print(list_table(letters))
    return 0


def show_command(
    handle: str, max_bytes: int = SHOW_MAX_BYTES, timeout: float = 10.0, console: Console | None = None
) -> int:
    """`gremio deadletter show P@O`."""
    out = _console(console)
    try:
        (letter,) = fetch([handle], timeout)
    except (DeadLetterError, KafkaException) as exc:
        out.print(screen(f"gremio deadletter: {exc}", "red"))
        return 1
    for line in show_lines(letter, max_bytes):
        out.print(line, soft_wrap=True)
    return 0


def replay_command(
    handles: Sequence[str] = (),
    all_from: str | None = None,
    since: str | None = None,
    again: bool = False,
    timeout: float = 10.0,
    console: Console | None = None,
) -> int:
    """`gremio deadletter replay P@O [P@O ...]` or `--all-from TOPIC --since WHEN`.

    Exit status 0 if every chosen dead letter was replayed, 1 if any was refused or the topic
    could not be read, 2 if nothing was chosen.
    """
    out = _console(console)
    if not handles and not all_from:
        out.print(
            screen(
                "gremio deadletter replay: name dead letters (P@O ...) or --all-from TOPIC --since WHEN",
                "red",
            )
        )
        return 2
    try:
        letters = fetch(handles, timeout) if handles else []
        if all_from:
            if not since:
                raise DeadLetterError("--all-from needs --since (e.g. --since 2h)")
            letters += recent(0, all_from, parse_since(since), timeout)
        if not letters:
            out.print(f"no dead letters from {all_from} since {since}")
            return 0
        outcome = replay(letters, again=again)
    except (DeadLetterError, KafkaException) as exc:
        out.print(screen(f"gremio deadletter: {exc}", "red"))
        return 1
    for letter, partition, offset in outcome.replayed:
        topic, source_partition, source_offset = letter.source or ("?", -1, -1)
        done = f"replayed {topic}[{source_partition}]@{source_offset} as {topic}[{partition}]@{offset}"
        out.print(screen(f"{letter.handle}: {done} (record {letter.record_id or '?'})", "green"))
    for letter, why in outcome.refused:
        out.print(screen(f"{letter.handle}: not replayed: {why}", "yellow"))
    return 1 if outcome.refused else 0
