"""KafkaDrainOperator: drain a Kafka topic into a PostgreSQL table, exactly up to where it stood.

The contract (docs/SALES_DAILY.md, "The drain operator"):

* At task start it captures the high watermark of every selected partition and reads each
  one from the consumer group's committed offset (or the partition's beginning) up to that
  mark, and no further: records produced later wait for the next run. It knows how many
  records to expect, so it never sits out an idle poll timeout.
* Every record is decoded with a pydantic model (`gremio.runner.decode`, the consumers'
  rules). Poison goes to `deadletter` with the standard headers.
* Rows are loaded per chunk in one transaction: an optional `prepare` step (the sales
  drain makes the chunk's day partitions there, gremio/sales_partitions.py), then a binary
  COPY straight into the target; if that meets a row already stored (a unique violation: a
  redelivery, or a re-read after a crash), the COPY is rolled back to a savepoint and the
  chunk goes the careful way: COPY into a temporary staging table, then `INSERT ... SELECT
  ... ON CONFLICT (conflict_columns) DO NOTHING`. Only after the commit (and after the
  broker acknowledged the chunk's dead letters) are the chunk's offsets committed. A
  failure anywhere re-reads from the last committed offset, and the conflict clause makes
  the re-read harmless: nothing lost, nothing doubled.
* Failures are told apart by `gremio.failures.classify`. A row PostgreSQL refuses (a NUL
  byte, a CHECK or trigger, an IntegrityError the conflict clause does not absorb) is the
  record's: the chunk is rolled back and split (`failures.isolate`, each part in its own
  transaction) until the refused rows stand alone; their messages go to `deadletter` with
  the error, the rest is inserted, and the drain carries on. A transient failure
  (PostgreSQL restarting, a connection lost, a deadlock, the broker away) is retried from
  the last committed offsets with backoff for up to `transient_timeout`, then the task
  fails and Airflow's retries take over. Anything else fails the task at once.

Kafka is reached through the providers' KafkaConsumerHook/KafkaProducerHook (connection
`kafka_default`), PostgreSQL through PostgresHook (`gremio_db`). The postgres provider
hands out a psycopg 3 connection whenever psycopg 3 and SQLAlchemy 2 are installed (our
pins); the operator relies on psycopg 3's COPY and refuses a psycopg2 connection clearly.

This module is imported when DAG files are parsed, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    import psycopg
    from confluent_kafka import Consumer, Message, Producer, TopicPartition

    from gremio.records import Record

# Bytes one consume() call may bring into memory: the number of messages asked for follows
# the sizes seen (10,000 records of a few hundred bytes; a few dozen of 1 MB).
CONSUME_BYTES = 32 * 1024 * 1024

# What a `message_columns` entry can take from the Kafka message itself.
MESSAGE_FIELDS = ("topic", "partition", "offset", "timestamp", "key")

CONSUMER_OVERRIDES = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # The end of a partition is reported, so a mark that sits on a control record (a
    # transaction marker, never delivered) still counts as reached.
    "enable.partition.eof": True,
    "fetch.max.bytes": 32 * 1024 * 1024,
}


class KafkaDrainOperator(BaseOperator):
    """Drain `topic` (optionally only some `partitions`) into `table`, idempotently by `conflict_columns`.

    :param topic: the Kafka topic to drain.
    :param table: the target table; it must have a unique constraint on `conflict_columns`
        (a partitioned table's includes its partition key: `("id", "sold_at")` for sales).
    :param record: the pydantic record model, as a class or a dotted path
        (``"gremio.records.Sale"``). Only messages whose ``type`` header names it are accepted.
    :param group_id: the consumer group whose committed offsets say where the drain resumes.
        Give each drain its own group; no subscribing consumer may share it.
    :param columns: target columns and the record fields that fill them: a mapping
        ``{column: field}``, a list of names used for both, or None for every model field.
    :param message_columns: extra target columns filled from the Kafka message:
        ``{column: "partition" | "offset" | "topic" | "timestamp" | "key"}``.
    :param partitions: drain only these partitions (default: all of them).
    :param prepare: a dotted path to ``f(conn, columns, rows) -> set[int]``, run in each
        chunk's transaction before its rows are written: it may make what they need (the
        sales drain's day partitions) and returns the indexes of rows to leave out.
    :param rows_per_transaction: records per COPY-and-insert transaction and offset commit.
    :param poison_bytes_per_transaction: a chunk also ends once its poison (held in memory
        until the chunk's commit, then dead-lettered) reaches this many bytes, so a flood of
        large poison records cannot exhaust the worker's memory.
    :param bytes_per_transaction: a chunk also ends once the messages it holds reach this many
        bytes: each row is kept with its message until the chunk's commit, so that a row
        PostgreSQL refuses can be dead-lettered as the original message.
    :param stall_timeout: seconds without any record, while records below the captured marks
        remain unread, before the task fails (the broker is unreachable or the data is gone).
    :param transient_timeout: seconds a run of transient failures (PostgreSQL restarting, a
        connection lost, a deadlock, the broker away) is retried in the task, from the last
        committed offsets with backoff, before the task fails and Airflow's retries take
        over. Each committed chunk starts the count afresh; 0 fails at the first one.
    """

    template_fields: Sequence[str] = ("topic", "table", "group_id")
    ui_color = "#f4d7a1"

    def __init__(
        self,
        *,
        topic: str,
        table: str,
        record: str | type[Record],
        group_id: str,
        columns: Mapping[str, str] | Sequence[str] | None = None,
        message_columns: Mapping[str, str] | None = None,
        partitions: Sequence[int] | None = None,
        conflict_columns: Sequence[str] = ("id",),
        prepare: str | None = None,
        kafka_config_id: str = "kafka_default",
        postgres_conn_id: str = "gremio_db",
        deadletter_topic: str = "deadletter",
        rows_per_transaction: int = 50_000,
        poison_bytes_per_transaction: int = 64 * 1024 * 1024,
        bytes_per_transaction: int = 256 * 1024 * 1024,
        stall_timeout: float = 120.0,
        transient_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        bad = {source for source in (message_columns or {}).values() if source not in MESSAGE_FIELDS}
        if bad:
            raise ValueError(f"message_columns sources {sorted(bad)} are not among {MESSAGE_FIELDS}")
        if rows_per_transaction < 1:
            raise ValueError("rows_per_transaction must be at least 1")
        if poison_bytes_per_transaction < 1 or bytes_per_transaction < 1:
            raise ValueError("poison_bytes_per_transaction and bytes_per_transaction must be at least 1")
        self.topic = topic
        self.table = table
        self.record = record
        self.group_id = group_id
        self.columns = columns
        self.message_columns = dict(message_columns or {})
        self.partitions = list(partitions) if partitions is not None else None
        self.conflict_columns = list(conflict_columns)
        self.prepare = prepare
        self.kafka_config_id = kafka_config_id
        self.postgres_conn_id = postgres_conn_id
        self.deadletter_topic = deadletter_topic
        self.rows_per_transaction = rows_per_transaction
        self.poison_bytes_per_transaction = poison_bytes_per_transaction
        self.bytes_per_transaction = bytes_per_transaction
        self.stall_timeout = stall_timeout
        self.transient_timeout = transient_timeout

    # --- what goes where ----------------------------------------------------------------

    def record_model(self) -> type[Record]:
        if isinstance(self.record, str):
            module, _, name = self.record.rpartition(".")
            return getattr(importlib.import_module(module), name)
        return self.record

    def column_map(self, model: type[Record]) -> dict[str, str]:
        """Target column → record field."""
        if self.columns is None:
            mapping = {name: name for name in model.model_fields}
        elif isinstance(self.columns, Mapping):
            mapping = dict(self.columns)
        else:
            mapping = {name: name for name in self.columns}
        unknown = sorted(set(mapping.values()) - set(model.model_fields))
        if unknown:
            raise ValueError(f"{model.__name__} has no fields {unknown}")
        clash = sorted(set(mapping) & set(self.message_columns))
        if clash:
            raise ValueError(f"columns {clash} are filled both from the record and from the message")
        return mapping

    # --- the drain ----------------------------------------------------------------------------

    def execute(self, context: Any) -> dict[str, Any]:
        model = self.record_model()
        fields = self.column_map(model)
        drain = _Drain(self, model, fields)
        try:
            return drain.run()
        finally:
            drain.close()


class _Chunk:
    """One chunk: its rows and, in step, the messages they came from; its poison and offsets."""

    __slots__ = ("failure", "msgs", "offsets", "poison", "read", "refused", "rows")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.msgs: list[Message] = []  # msgs[i] is the message rows[i] was decoded from
        self.poison: list[tuple[Message, str]] = []
        self.refused: list[tuple[Message, str]] = []
        self.offsets: dict[int, int] = {}
        self.read = 0
        self.failure: BaseException | None = None  # a permanent failure staging or inserting it whole


class _Drain:
    """One execution of the operator: its consumer, connections and bookkeeping."""

    def __init__(self, op: KafkaDrainOperator, model: type[Record], fields: dict[str, str]) -> None:
        from gremio.failures import Backoff

        self.op = op
        self.log = op.log
        self.model = model
        self.accepts = {model.__name__: model}
        self.type_header = model.__name__.encode()
        self.validate_json = model.__pydantic_validator__.validate_json
        self.columns = [*fields, *op.message_columns]
        self.record_values = attrgetter(*fields.values()) if len(fields) > 1 else _one(fields)
        self.message_sources = list(op.message_columns.values())
        self.consumer: Consumer = _consumer(op.kafka_config_id, op.group_id)
        self.producer: Producer | None = None
        self.conns: list[psycopg.Connection] = []
        self.types: list[int] = []
        self.stats = {
            "read": 0,
            "inserted": 0,
            "deadlettered": 0,
            "undecodable": 0,
            "refused": 0,
            "transactions": 0,
            "transient_retries": 0,
            "conflicted_chunks": 0,  # chunks that met rows already stored (the careful way)
        }
        self.pending: dict[int, int] = {}  # id(connection) → rows its open transaction wrote
        self.prepare = _callable(op.prepare) if op.prepare else None
        self.refusals: dict[str, int] = {}  # error (class and SQLSTATE) → rows refused with it
        self.seconds = {"reading": 0.0, "fetching": 0.0, "inserting": 0.0}
        self.message_bytes = 1 << 20  # the typical size of the messages lately fetched (until seen: large)
        self.position: dict[int, int] = {}  # partition → the offset committed last (where a retry resumes)
        self.backoff = Backoff(first=0.5, cap=10.0)
        self.failing_since: float | None = None  # when the current run of transient failures began

    def close(self) -> None:
        self.consumer.close()
        if self.producer is not None:
            self.producer.flush(10)
        self.drop_connections()

    def drop_connections(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):  # a broken connection is being let go of
                conn.close()
        self.conns = []

    def run(self) -> dict[str, Any]:
        from gremio.failures import Failure, classify, reason

        plan = self.plan()
        summary = {
            "topic": self.op.topic,
            "group_id": self.op.group_id,
            "partitions": {str(p): {"from": s, "to": h} for p, (s, h) in plan.items()},
        }
        marks = {p: h for p, (s, h) in plan.items()}
        self.position = {p: s for p, (s, h) in plan.items()}
        self.log.info(
            "draining %s into %s: %d records below the marks captured at start (%s)",
            self.op.topic,
            self.op.table,
            sum(h - s for s, h in plan.values()),
            ", ".join(f"p{p} {s}→{h}" for p, (s, h) in sorted(plan.items())) or "no partitions",
        )
        started = time.monotonic()
        while True:
            todo = {p: h for p, h in marks.items() if self.position[p] < h}
            if not todo:
                break
            try:
                self.drain_pass(todo, started)
                break
            except Exception as exc:
                # A transient failure (PostgreSQL restarting, a connection lost, a deadlock, the
                # broker away) is the world's, not a record's: resume from the offsets committed
                # last, after a backoff, for at most transient_timeout; then the task fails and
                # Airflow's retries take over. Nothing is dead-lettered or committed for it.
                if classify(exc) is not Failure.TRANSIENT:
                    raise
                now = time.monotonic()
                if self.failing_since is None:
                    self.failing_since = now
                left = self.op.transient_timeout - (now - self.failing_since)
                if left <= 0:
                    self.log.error(
                        "transient failures for %.0f s (the last: %s): failing the task",
                        now - self.failing_since,
                        reason(exc),
                    )
                    raise
                delay = min(self.backoff.next_delay(), left)
                self.stats["transient_retries"] += 1
                self.log.warning(
                    "transient failure (%s): resuming from the committed offsets %s in %.1f s",
                    reason(exc),
                    ", ".join(f"p{p}@{o}" for p, o in sorted(self.position.items())),
                    delay,
                )
                _metric("gremio.drain.transient_retries", 1, {"topic": self.op.topic})
                self.drop_connections()
                time.sleep(delay)
        self.log.info(
            "drained in %.1f s: reading, decoding and staging %.1f s (of which waiting for Kafka %.1f s),"
            " inserting %.1f s, the two overlapping",
            time.monotonic() - started,
            self.seconds["reading"],
            self.seconds["fetching"],
            self.seconds["inserting"],
        )
        deadletters = {"undecodable": self.stats["undecodable"], "refused": self.stats["refused"]}
        if self.stats["deadlettered"]:
            self.log.warning(
                "dead-lettered %d records of %s: %d undecodable, %d refused by PostgreSQL%s",
                self.stats["deadlettered"],
                self.op.topic,
                self.stats["undecodable"],
                self.stats["refused"],
                f" ({', '.join(f'{why}: {n}' for why, n in sorted(self.refusals.items()))})"
                if self.refusals
                else "",
            )
        return {
            **summary,
            **self.stats,
            "deadletters": {self.op.topic: deadletters},
            "refusals": dict(sorted(self.refusals.items())),
        }

    def drain_pass(self, todo: dict[int, int], started: float) -> None:
        """Drain from the committed offsets to the marks (`todo`: partition → mark)."""
        from confluent_kafka import TopicPartition

        if not self.conns:
            self.conns = [self.connect(), self.connect()]
        assigned = [TopicPartition(self.op.topic, p, self.position[p]) for p in sorted(todo)]
        self.consumer.assign(assigned)
        self.consumer.resume(assigned)  # partitions paused at their mark by an earlier pass
        # Two connections take turns: while one writes a chunk (prepare, COPY, commit, in a
        # thread that mostly waits on PostgreSQL), the next chunk is read and decoded. A
        # chunk's dead letters and offsets follow its commit, in order. A chunk PostgreSQL
        # refuses as a whole is split on its own connection, in the main thread, when its
        # turn to settle comes.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drain-insert") as inserter:
            inserting: tuple[Future | None, _Chunk, psycopg.Connection] | None = None
            turn = 0
            while todo:
                conn = self.conns[turn % 2]
                turn += 1
                began = time.monotonic()
                with _cyclic_gc_paused():
                    chunk = self.read_chunk(todo)
                self.seconds["reading"] += time.monotonic() - began
                # The connection's previous chunk has settled (two turns ago): it is free.
                written = inserter.submit(self.store, conn, chunk)
                if inserting is not None:
                    previous, inserting = inserting, None
                    self.settle(*previous, started)
                inserting = (written, chunk, conn)
            if inserting is not None:
                previous, inserting = inserting, None
                self.settle(*previous, started)

    def settle(
        self, inserted: Future | None, chunk: _Chunk, conn: psycopg.Connection, started: float
    ) -> None:
        """Once a chunk is committed in PostgreSQL: its dead letters, then its offsets."""
        from confluent_kafka import TopicPartition

        from gremio.failures import Failure, classify

        if inserted is not None:
            try:
                inserted.result()
            except Exception as exc:
                if classify(exc) is not Failure.PERMANENT:
                    raise
                chunk.failure = exc
        if chunk.failure is not None:
            self.split(conn, chunk)
        self.deadletter(chunk)
        if chunk.offsets:
            self.consumer.commit(
                offsets=[TopicPartition(self.op.topic, p, o) for p, o in chunk.offsets.items()],
                asynchronous=False,
            )
            self.position.update(chunk.offsets)
        self.stats["read"] += chunk.read
        self.failing_since = None  # progress: a later transient failure gets the whole bound again
        self.backoff.reset()
        elapsed = max(time.monotonic() - started, 1e-9)
        self.log.info(
            "committed offsets %s; %d read, %d new rows, %d dead-lettered (%.0f records/s)",
            ", ".join(f"p{p}@{o}" for p, o in sorted(chunk.offsets.items())),
            self.stats["read"],
            self.stats["inserted"],
            self.stats["deadlettered"],
            self.stats["read"] / elapsed,
        )

    def plan(self) -> dict[int, tuple[int, int]]:
        """partition → (first offset to read, high watermark captured now)."""
        from confluent_kafka import TopicPartition

        meta = self.consumer.list_topics(self.op.topic, timeout=30).topics.get(self.op.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise RuntimeError(f"topic {self.op.topic!r} is not available: {meta and meta.error}")
        existing = sorted(meta.partitions)
        wanted = existing if self.op.partitions is None else sorted(self.op.partitions)
        missing = sorted(set(wanted) - set(existing))
        if missing:
            raise ValueError(f"{self.op.topic} has no partitions {missing} (it has {existing})")
        committed = {tp.partition: tp.offset for tp in self.committed(wanted)}
        plan = {}
        for p in wanted:
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.op.topic, p), timeout=30, cached=False
            )
            start = committed.get(p, -1)
            if 0 <= start < low:
                self.log.warning(
                    "%s[%d]: offsets %d..%d expired before they were drained", self.op.topic, p, start, low
                )
            if start > high:
                self.log.warning(
                    "%s[%d]: group %s committed offset %d, past the end (%d): was the topic recreated?",
                    self.op.topic, p, self.op.group_id, start, high,
                )  # fmt: skip
            plan[p] = (max(start, low), high)
        return plan

    def committed(self, partitions: list[int], timeout: float = 60.0) -> list[TopicPartition]:
        """The group's committed offsets, waiting out a coordinator that is moving or loading."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        passing = {
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError.REQUEST_TIMED_OUT,
            KafkaError._TIMED_OUT,
            KafkaError._TRANSPORT,
        }
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.consumer.committed(
                    [TopicPartition(self.op.topic, p) for p in partitions], timeout=30
                )
            except KafkaException as exc:
                err = exc.args[0]
                if not (err.retriable() or err.code() in passing) or time.monotonic() > deadline:
                    raise
                self.log.info("offsets of group %s not available yet (%s); retrying", self.op.group_id, exc)
                time.sleep(0.5)

    # --- a chunk ------------------------------------------------------------------------------

    def store(self, conn: psycopg.Connection, chunk: _Chunk) -> None:
        """The chunk's one transaction: write its rows and commit (in the inserter thread).

        A permanent failure (PostgreSQL refuses a value: a NUL byte, a CHECK) rolls back and
        is noted on the chunk, which is then split when it settles; any other propagates.
        """
        self.stage(conn, chunk)
        if chunk.failure is None:
            self.insert(conn)

    def stage(self, conn: psycopg.Connection, chunk: _Chunk) -> None:
        """Open a transaction and write the chunk's rows into the target, uncommitted."""
        from gremio.failures import Failure, classify

        try:
            self.pending[id(conn)] = self.write(conn, chunk.rows)
        except Exception as exc:
            _rollback(conn)
            if classify(exc) is not Failure.PERMANENT:
                raise
            chunk.failure = exc

    def write(self, conn: psycopg.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
        """Prepare and write `rows` in the open transaction; the number of new rows.

        The fast way is a binary COPY straight into the target, under a savepoint. Only if
        that meets a row already there (a unique violation) does the chunk take the careful
        way: staging table, then INSERT ... ON CONFLICT DO NOTHING.
        """
        import psycopg
        from psycopg import sql

        if not rows:
            return 0
        began = time.monotonic()
        if self.prepare is not None:
            skip = self.prepare(conn, self.columns, rows)
            if skip:
                rows = [row for i, row in enumerate(rows) if i not in skip]
        cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        try:
            with conn.transaction(), conn.cursor() as cur:
                self.copy(
                    cur, sql.SQL("copy {} ({}) from stdin (format binary)").format(self._table(), cols), rows
                )
            inserted = len(rows)
        except psycopg.errors.UniqueViolation:
            self.stats["conflicted_chunks"] += 1
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "create temp table drain_stage (like {} including defaults) on commit drop"
                    ).format(self._table())
                )
                self.copy(cur, sql.SQL("copy drain_stage ({}) from stdin (format binary)").format(cols), rows)
                cur.execute(
                    sql.SQL(
                        "insert into {} ({}) select {} from drain_stage on conflict ({}) do nothing"
                    ).format(
                        self._table(),
                        cols,
                        cols,
                        sql.SQL(", ").join(map(sql.Identifier, self.op.conflict_columns)),
                    )
                )
                inserted = cur.rowcount
                cur.execute("drop table drain_stage")
        self.seconds["inserting"] += time.monotonic() - began
        return inserted

    def copy(self, cur: psycopg.Cursor, statement, rows: Sequence[tuple[Any, ...]]) -> None:
        # Binary COPY: the column types come from the table, and psycopg's C dumpers are
        # several times faster than rendering text.
        with cur.copy(statement) as copy:
            copy.set_types(self.types)
            write = copy.write_row
            for row in rows:
                write(row)

    def insert(self, conn: psycopg.Connection) -> None:
        """Commit what `stage` wrote on this connection: the chunk's one transaction."""
        try:
            conn.commit()
        except BaseException:
            _rollback(conn)
            raise
        self.stats["inserted"] += self.pending.pop(id(conn), 0)
        self.stats["transactions"] += 1

    def split(self, conn: psycopg.Connection, chunk: _Chunk) -> None:
        """The slow path for a chunk PostgreSQL refused: find the refused rows, insert the others.

        failures.isolate halves the chunk until the refused rows stand alone; each part is
        staged and inserted in a transaction of its own on the chunk's connection (what
        commits stays committed, and the conflict clause makes a re-try harmless). The
        refused rows' messages join the chunk's dead letters.
        """
        from gremio.failures import isolate, reason

        rows, failure = chunk.rows, chunk.failure
        self.log.warning(
            "PostgreSQL refused a chunk of %d rows (%s): splitting it to find the refused ones",
            len(rows),
            reason(failure),
        )

        def apply(part: Sequence[int]) -> None:
            try:
                self.pending[id(conn)] = self.write(conn, [rows[i] for i in part])
            except BaseException:
                _rollback(conn)
                raise
            self.insert(conn)  # commits, or rolls back and raises

        everything = list(range(len(rows)))
        if len(everything) <= 1:
            refused = [(i, failure) for i in everything]
        else:  # the whole chunk is known to fail: start with its halves
            middle = len(everything) // 2
            refused = isolate(everything[:middle], apply) + isolate(everything[middle:], apply)
        chunk.refused = [(chunk.msgs[i], reason(exc)) for i, exc in refused]
        chunk.failure = None
        for _, why in chunk.refused:
            kind = why.split(":", 1)[0]
            self.refusals[kind] = self.refusals.get(kind, 0) + 1

    def read_chunk(self, todo: dict[int, int]) -> _Chunk:
        """Decode up to rows_per_transaction records below the marks; finished partitions leave `todo`.

        The chunk keeps every row with its message until the chunk settles (a row PostgreSQL
        refuses is dead-lettered as its original message), so it also ends once those
        messages hold bytes_per_transaction, or once its poison holds
        poison_bytes_per_transaction (400 poison values of 1 MB in one chunk once raised the
        worker's peak memory by 780 MB). What was fetched but not read is sought back to, so
        the next chunk starts exactly where this one stopped.
        """
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        from gremio.runner import Poison

        chunk = _Chunk()
        rows, msgs, poison, offsets = chunk.rows, chunk.msgs, chunk.poison, chunk.offsets
        room = self.op.rows_per_transaction
        poison_room = self.op.poison_bytes_per_transaction
        held_room = self.op.bytes_per_transaction
        decode, row = self.decode, self.row
        last_seen = time.monotonic()
        while todo and room > 0 and poison_room > 0 and held_room > 0:
            began = time.monotonic()
            wanted = max(1, min(room, 10_000, CONSUME_BYTES // self.message_bytes))
            fetched = self.consumer.consume(num_messages=wanted, timeout=1.0)
            self.seconds["fetching"] += time.monotonic() - began
            if fetched:
                last_seen = time.monotonic()
                self.message_bytes = max(64, sum(len(m.value() or b"") for m in fetched) // len(fetched))
            elif time.monotonic() - last_seen > self.op.stall_timeout:
                raise RuntimeError(
                    f"no records from {self.op.topic} partitions {sorted(todo)} for "
                    f"{self.op.stall_timeout:.0f} s although the marks say there are more"
                )
            read = 0
            for index, msg in enumerate(fetched):
                if poison_room <= 0 or held_room <= 0:
                    self.rewind(todo, fetched[index:])
                    break
                p, offset = msg.partition(), msg.offset()
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                    if p in todo and offset >= todo[p]:
                        offsets[p] = todo.pop(p)
                        self.consumer.pause([TopicPartition(self.op.topic, p)])
                    continue
                mark = todo.get(p)
                if mark is None:
                    continue  # a partition already done: its later records are the next run's
                if offset >= mark:
                    # Nothing below the mark is left to read (control records, or data that
                    # expired under us): done, and this record is the next run's.
                    offsets[p] = todo.pop(p)
                    self.consumer.pause([TopicPartition(self.op.topic, p)])
                    continue
                offsets[p] = offset + 1
                read += 1
                try:
                    rows.append(row(decode(msg), msg))
                    msgs.append(msg)
                    held_room -= len(msg.value() or b"") + 1
                except Poison as exc:
                    poison.append((msg, str(exc)))
                    poison_room -= len(msg.value() or b"") + 1
                if offset + 1 >= mark:
                    del todo[p]
                    self.consumer.pause([TopicPartition(self.op.topic, p)])
            chunk.read += read
            room -= read
        return chunk

    def rewind(self, todo: dict[int, int], unread: Sequence[Message]) -> None:
        """Seek back to the first of these fetched but unread messages: the next chunk reads them."""
        from confluent_kafka import TopicPartition

        first: dict[int, int] = {}
        for msg in unread:
            if msg.error() is None and msg.partition() in todo:
                first.setdefault(msg.partition(), msg.offset())
        for p, offset in first.items():
            self.consumer.seek(TopicPartition(self.op.topic, p, offset))

    def decode(self, msg: Message) -> Record:
        """The record, or Poison: gremio.runner.decode, with a fast path for the usual case.

        Most records carry the right `type` header and validate; for those the model's
        validator is called directly. Anything else goes through runner.decode, which
        raises Poison with the consumers' standard reason.
        """
        from gremio.runner import decode

        value = msg.value()
        for key, type_name in msg.headers() or ():
            if key == "type":
                if type_name == self.type_header and value is not None:
                    try:
                        return self.validate_json(value)
                    except ValueError:
                        break
                break
        return decode(msg, self.accepts)

    def row(self, record: Record, msg: Message) -> tuple[Any, ...]:
        values = self.record_values(record)
        if not self.message_sources:
            return values
        return (*values, *(_message_value(msg, source) for source in self.message_sources))

    # --- effects ---------------------------------------------------------------------------------

    def _table(self):
        from psycopg import sql

        return sql.Identifier(*self.op.table.split("."))

    def connect(self) -> psycopg.Connection:
        import psycopg
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        conn = PostgresHook(postgres_conn_id=self.op.postgres_conn_id).get_conn()
        if not isinstance(conn, psycopg.Connection):
            conn.close()
            raise RuntimeError(
                "the drain needs psycopg 3 (its COPY); the postgres provider gave "
                f"{type(conn).__module__}: install psycopg>=3 and SQLAlchemy>=2"
            )
        conn.autocommit = False
        conn.execute("select set_config('application_name', %s, false)", (f"drain {self.op.topic}",))
        # Room for a whole chunk's staging table in memory (before the session's first temp table).
        conn.execute("set temp_buffers = '128MB'")
        types = dict(
            conn.execute(
                "select attname, atttypid::int from pg_attribute"
                " where attrelid = %s::regclass and attnum > 0 and not attisdropped",
                (self.op.table,),
            ).fetchall()
        )
        conn.commit()
        missing = [c for c in self.columns if c not in types]
        if missing:
            raise ValueError(f"table {self.op.table} has no columns {missing}")
        self.types = [types[c] for c in self.columns]
        return conn

    def deadletter(self, chunk: _Chunk) -> None:
        """Send the chunk's poison and refused rows to the dead-letter topic; wait for the acknowledgement."""
        letters = [*chunk.poison, *chunk.refused]
        if not letters:
            return
        from gremio import kafka as gk

        if self.producer is None:
            self.producer = _producer(self.op.kafka_config_id)
        gk.send_dead_letters(self.producer, letters, self.op.deadletter_topic)
        self.stats["deadlettered"] += len(letters)
        self.stats["undecodable"] += len(chunk.poison)
        self.stats["refused"] += len(chunk.refused)
        for kind, count in (("undecodable", len(chunk.poison)), ("refused", len(chunk.refused))):
            if count:
                _metric("gremio.drain.deadlettered", count, {"topic": self.op.topic, "reason": kind})


@contextlib.contextmanager
def _cyclic_gc_paused():
    """Python's cyclic garbage collector off while a chunk is read and decoded.

    A chunk keeps tens of thousands of rows alive, and each collection the allocations
    trigger walks them all again: about 3 µs of a record's ~20 µs (docs/BENCHMARKS.md,
    "Where the drain's time goes"). Reading a chunk makes no reference cycles to speak of
    (the rows are freed by reference counting); whatever a poison record's exception leaves
    is bounded by the chunk's poison budget and collected once the collector is back on.
    """
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _rollback(conn: psycopg.Connection) -> None:
    """Roll back, if the connection still can (one lost with the server cannot, and need not)."""
    with contextlib.suppress(Exception):  # the failure being handled is the one worth raising
        conn.rollback()


def _metric(name: str, count: int, tags: dict[str, str]) -> None:
    """Count in Airflow's metrics (StatsD or OpenTelemetry, when configured); never fails the drain."""
    with contextlib.suppress(Exception):  # metrics are best effort
        from airflow.sdk.observability.stats import incr

        incr(name, count=count, tags=tags)


def _callable(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _one(fields: dict[str, str]):
    (name,) = fields.values()
    getter = attrgetter(name)
    return lambda record: (getter(record),)


def _message_value(msg: Message, source: str) -> Any:
    if source == "timestamp":
        from datetime import UTC, datetime

        return datetime.fromtimestamp(msg.timestamp()[1] / 1000, UTC)
    if source == "key":
        key = msg.key()
        return key.decode("utf-8", "replace") if key is not None else None
    return getattr(msg, source)()


def _consumer(kafka_config_id: str, group_id: str) -> Consumer:
    """A consumer from the connection, with the group and offset handling the drain needs."""
    from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook

    class DrainConsumerHook(KafkaConsumerHook):
        def _get_client(self, config: dict[str, Any]) -> Consumer:
            return super()._get_client({**config, **CONSUMER_OVERRIDES, "group.id": group_id})

    return DrainConsumerHook(topics=[], kafka_config_id=kafka_config_id).get_conn


def _producer(kafka_config_id: str) -> Producer:
    """An idempotent acks=all producer from the connection, for dead letters."""
    from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook

    from gremio.kafka import PRODUCER_DEFAULTS

    class DeadletterProducerHook(KafkaProducerHook):
        def _get_client(self, config: dict[str, Any]) -> Producer:
            config = {k: v for k, v in config.items() if k != "group.id"}  # a consumer setting
            return super()._get_client({**config, **PRODUCER_DEFAULTS})

    return DeadletterProducerHook(kafka_config_id=kafka_config_id).get_conn
