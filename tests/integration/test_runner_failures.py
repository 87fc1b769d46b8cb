"""The shared run loop when making a batch durable fails: permanent, transient, fatal.

A fake Service on the real broker: a record its `process` refuses (ValueError) is found by
splitting the batch and dead-lettered alone; a transient failure (a timeout, PostgreSQL's
OperationalError) is retried after a backoff, committing and dead-lettering nothing until
it passes; anything else stops the runner uncommitted.
"""

from __future__ import annotations

import logging
import threading
import uuid

import psycopg
import pytest
from prometheus_client import REGISTRY

from gremio import kafka as gk
from gremio import topics as t
from gremio.runner import Envelope, Runner
from tests.integration.test_runner import Recorder, _committed, _sale
from tests.support import TopicProbe, commit_at_end, new_plate, wait_for


def _records(sales, plate: str) -> list:
    return [(t.SALES.name, plate.encode(), s.to_bytes(), [("type", b"Sale")], None) for s in sales]


def _deadlettered(group: str, reason: str) -> float:
    labels = {"group": group, "topic": t.SALES.name, "reason": reason}
    return REGISTRY.get_sample_value("gremio_consumer_deadlettered_total", labels) or 0.0


class Running:
    """A Runner in a thread from the current end of `sales`; the exception it ended with, if any."""

    def __init__(self, service: Recorder) -> None:
        self.probe = TopicProbe([t.SALES.name, t.DEADLETTER.name])
        commit_at_end(service.group_id)
        self.service = service
        self.runner = Runner(service)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.runner.assigned.wait(60), "partition assignment"

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:
            self.failure = exc

    def committed(self) -> int:
        return _committed(self.service.group_id, self.probe)

    def dead_letters(self, key: bytes) -> list:
        return [m for m in self.probe.records(t.DEADLETTER.name) if m.key() == key]

    def stop(self) -> None:
        self.runner.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the runner did not stop"


class Refuses(Recorder):
    """Raises ValueError for any batch holding one of `bad`; records the batches it takes."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bad: set[uuid.UUID] = set()
        self.calls = 0

    def process(self, batch: list[Envelope]) -> None:
        self.calls += 1
        if any(e.record.id in self.bad for e in batch):
            raise ValueError("this sale is refused")
        super().process(batch)


def test_a_record_refused_by_process_is_dead_lettered_alone_and_the_rest_committed():
    service = Refuses(batch_size=7, batch_timeout=1.0)
    run = Running(service)
    plate = new_plate()
    sales = [_sale(plate) for _ in range(6)]
    bad = sales[3]
    service.bad = {bad.id}
    records = _records(sales, plate)
    records.insert(1, (t.SALES.name, plate.encode(), b"{not json", [("type", b"Sale")], None))
    acked = gk.produce_all(gk.producer(), records)
    good = [s.id for s in sales if s is not bad]
    wait_for(lambda: sum(len(b) for b in service.batches) >= len(good), what="the good sales")
    dead = wait_for(lambda: len(d := run.dead_letters(plate.encode())) >= 2 and d, what="2 dead letters")
    wait_for(lambda: run.committed() == len(records), what="every offset committed")
    run.stop()
    assert run.failure is None, run.failure

    assert [e.record.id for b in service.batches for e in b] == good  # each once, in order
    assert service.calls > 1, "the batch was split"
    assert len(dead) == 2
    by_offset = {int(gk.header(m, "source_offset")): m for m in dead}
    refused = by_offset[acked[4].offset()]  # sales[3], after the poison at 1
    assert refused.value() == bad.to_bytes()
    assert gk.header(refused, "type") == "Sale"
    assert gk.header(refused, "source_topic") == t.SALES.name
    assert int(gk.header(refused, "source_partition")) == acked[4].partition()
    assert gk.header(refused, "error") == "ValueError: this sale is refused"
    assert by_offset[acked[1].offset()].value() == b"{not json"
    assert _deadlettered(service.group_id, "refused") == 1
    assert _deadlettered(service.group_id, "undecodable") == 1


class Flaky(Recorder):
    """Fails its first `failing` calls with `error`; notes the group's committed progress at each."""

    def __init__(self, failing: int, error: Exception, **kwargs) -> None:
        super().__init__(**kwargs)
        self.failing, self.error = failing, error
        self.calls = 0
        self.seen_committed: list[int] = []
        self.run: Running | None = None

    def process(self, batch: list[Envelope]) -> None:
        self.calls += 1
        assert self.run is not None
        self.seen_committed.append(self.run.committed())
        if self.calls <= self.failing:
            raise self.error
        super().process(batch)


@pytest.mark.parametrize(
    "error",
    [TimeoutError("timed out"), psycopg.OperationalError("server closed the connection unexpectedly")],
    ids=["timeout", "operational-error"],
)
def test_a_transient_failure_is_retried_without_dead_letters_or_commits(error, caplog):
    caplog.set_level(logging.WARNING, logger="gremio.runner")
    service = Flaky(3, error, batch_size=4, batch_timeout=0.5)
    run = Running(service)
    service.run = run
    plate = new_plate()
    sales = [_sale(plate) for _ in range(4)]
    gk.produce_all(gk.producer(), _records(sales, plate))
    wait_for(lambda: service.batches, timeout=60, what="the batch after the retries")
    wait_for(lambda: run.committed() == len(sales), what="the offsets committed")
    run.stop()
    assert run.failure is None, run.failure

    assert service.calls >= 4
    assert service.seen_committed == [0] * service.calls, "nothing committed before the success"
    assert [e.record.id for b in service.batches for e in b] == [s.id for s in sales]  # once each
    assert run.dead_letters(plate.encode()) == []
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 3
    what = "PostgreSQL unavailable" if isinstance(error, psycopg.Error) else "transient failure"
    assert all(line.startswith(what) and type(error).__name__ in line for line in retries)
    assert plate not in " ".join(retries), "no record contents in the log"
    assert REGISTRY.get_sample_value("gremio_consumer_retries_total", {"group": service.group_id}) == 3


class Returns(Recorder):
    """Not splittable: processes each batch once and returns the records of `bad` as refused."""

    splittable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bad: set[uuid.UUID] = set()

    def process(self, batch: list[Envelope]) -> list[tuple[Envelope, str]]:
        super().process(batch)
        return [(e, "ValueError: not this one") for e in batch if e.record.id in self.bad]


def test_a_service_that_is_not_split_returns_its_refused_records():
    service = Returns(batch_size=5, batch_timeout=0.5)
    run = Running(service)
    plate = new_plate()
    sales = [_sale(plate) for _ in range(5)]
    service.bad = {sales[2].id}
    acked = gk.produce_all(gk.producer(), _records(sales, plate))
    [letter] = wait_for(lambda: run.dead_letters(plate.encode()), what="the dead letter")
    wait_for(lambda: run.committed() == len(sales), what="the offsets committed")
    run.stop()
    assert run.failure is None, run.failure
    assert [e.record.id for b in service.batches for e in b] == [s.id for s in sales]
    assert int(gk.header(letter, "source_offset")) == acked[2].offset()
    assert gk.header(letter, "error") == "ValueError: not this one"
    assert _deadlettered(service.group_id, "refused") == 1


class Raises(Recorder):
    def __init__(self, error: Exception, splittable: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.error, self.splittable = error, splittable

    def process(self, batch: list[Envelope]) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "splittable"),
    [(KeyError("a bug"), True), (ValueError("refused, but this service cannot be split"), False)],
    ids=["fatal", "permanent-unsplittable"],
)
def test_a_fatal_failure_stops_the_runner_uncommitted(error, splittable):
    service = Raises(error, splittable, batch_size=3, batch_timeout=0.5)
    run = Running(service)
    plate = new_plate()
    gk.produce_all(gk.producer(), _records([_sale(plate) for _ in range(3)], plate))
    run.thread.join(60)
    assert not run.thread.is_alive(), "the runner should have stopped"
    assert run.failure is error
    assert run.committed() == 0
    assert run.dead_letters(plate.encode()) == []
