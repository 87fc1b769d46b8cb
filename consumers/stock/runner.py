"""The shared runner, taking a waiting backlog several batches at a time (issue 16).

The batch of STOCK_BATCH_SIZE sales stays the unit of decision (DESIGN §5): a batch is
full at 5 sales, or due STOCK_BATCH_FLUSH_SECONDS after its first, exactly as on the
shared runner. What changes is how often the effects are made durable. When a batch is
full and more sales are already waiting in the consumer (a backlog), the runner takes
them at once, without waiting, up to STOCK_MAX_BATCHES_PER_COMMIT batches, and hands
the full batches to the service together: the service decides each batch in order and
makes them durable in one transaction, one produce flush, and then the runner commits
the offsets once. A partial batch at the end of what was waiting stays in hand, with its
own deadline, and is the start of the next run.

Failures keep their meaning (gremio.runner): on a permanent one the run of batches is
made durable again one batch at a time, each split as the shared runner splits a batch
(failures.isolate), so only the refused sale is dead-lettered; on a transient one every
held record, the partial batch's too, is sought back and consumed again after a backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Message

from gremio import failures
from gremio.failures import Failure
from gremio.runner import BATCHES, Envelope, Runner, Service

log = logging.getLogger(__name__)

Position = tuple[str, int, int]  # topic, partition, offset


class StockRunner(Runner):
    """Runner for the stock service: one commit for several consecutive batches of a backlog.

    With `max_batches` 1 it behaves as the shared runner does.
    """

    def __init__(self, service: Service, *args: Any, max_batches: int | None = None, **kwargs: Any) -> None:
        super().__init__(service, *args, **kwargs)
        self.max_batches = max_batches or getattr(service, "max_batches_per_commit", 1)
        self._log: list[Position] = []  # every record held, in the order consumed
        self._at: list[int] = []  # where each held sale is in _log (parallel to _pending)
        self._poison_at: list[int] = []  # where each poison record is in _log (parallel to _poison)
        self._batch_at: float | None = None  # when the batch being filled got its first sale
        self._gave_back = False

    # --- the loop ---------------------------------------------------------------------------

    def _poll_once(self) -> None:
        size = self.service.batch_size
        cap = size * self.max_batches
        filling = len(self._pending) % size
        timeout = self.poll_interval
        if filling and self._batch_at is not None:
            timeout = max(0.0, min(timeout, self._batch_at + self.service.batch_timeout - time.monotonic()))
        for msg in self.consumer.consume(num_messages=size - filling, timeout=timeout):
            self._accept(msg)
        if self._pending and len(self._pending) % size == 0 and len(self._pending) < cap:
            # A batch is full: whatever is already waiting joins it, without waiting for more.
            for msg in self.consumer.consume(num_messages=cap - len(self._pending), timeout=0):
                self._accept(msg)
        now = time.monotonic()
        self._tick(now)
        held = len(self._pending)
        full = held - held % size
        due = (
            held > full and self._batch_at is not None and now >= self._batch_at + self.service.batch_timeout
        )
        poison_only = not self._pending and bool(self._offsets)
        if due or poison_only or (full and full == held):
            self._flush()
        elif full:
            self._flush_full_batches(full)

    def _accept(self, msg: Message) -> None:
        pending, poison = len(self._pending), len(self._poison)
        super()._accept(msg)
        if msg.error() is not None:
            return
        index = len(self._log)
        self._log.append((msg.topic(), msg.partition(), msg.offset()))
        if len(self._pending) > pending:
            self._at.append(index)
            if pending % self.service.batch_size == 0:
                self._batch_at = time.monotonic()
        if len(self._poison) > poison:
            self._poison_at.append(index)

    def _flush_full_batches(self, cut: int) -> None:
        """Make the first `cut` sales durable and commit; the partial batch after them stays.

        Everything consumed after the partial batch's first sale (poison too) stays with it.
        The runner's first offsets are kept whole, so that a transient failure seeks every
        held partition back, the partial batch's included.
        """
        split = self._at[cut]
        tail_pending, tail_at = self._pending[cut:], [i - split for i in self._at[cut:]]
        poison = list(zip(self._poison, self._poison_at, strict=True))
        tail_poison = [(p, i - split) for p, i in poison if i >= split]
        tail_log, batch_at, first_at = self._log[split:], self._batch_at, self._first_at

        self._pending = self._pending[:cut]
        self._poison = [p for p, i in poison if i < split]
        self._offsets = _ends(self._log[:split])
        self._gave_back = False
        self._flush()
        if self._gave_back:  # all of it sought back and dropped: consumed again after the backoff
            return
        self._pending, self._at = tail_pending, tail_at
        self._poison, self._poison_at = [p for p, _ in tail_poison], [i for _, i in tail_poison]
        self._log = tail_log
        self._offsets = _ends(tail_log)
        self._first = {}
        for topic, partition, offset in tail_log:
            self._first.setdefault((topic, partition), offset)
        self._batch_at, self._first_at = batch_at, first_at

    def _process(self, batch: list[Envelope]) -> list[tuple[Envelope, str]]:
        """A run of batches at once; refused for good, one batch at a time as the shared runner would."""
        size = self.service.batch_size
        if len(batch) <= size:
            return super()._process(batch)
        batches = [batch[i : i + size] for i in range(0, len(batch), size)]
        try:
            returned = list(self.service.process(list(batch)) or ())
        except Exception as exc:
            if failures.classify(exc) is not Failure.PERMANENT:
                raise
            log.warning(
                "a run of %d batches was refused (%s): making them durable one batch at a time",
                len(batches),
                failures.reason(exc),
            )
            returned = []
            for part in batches:  # (a loop: super() does not work inside a comprehension)
                returned += super()._process(part)
        BATCHES.labels(self.service.group_id).inc(len(batches) - 1)  # the runner counts one
        return returned

    def _give_back(self, exc: BaseException, revoking: Any) -> None:
        self._gave_back = True
        super()._give_back(exc, revoking)

    def _drop(self) -> None:
        super()._drop()
        self._log, self._at, self._poison_at, self._batch_at = [], [], [], None


def _ends(positions: Iterable[Position]) -> dict[tuple[str, int], int]:
    """The offset to commit per partition: past the last of these records."""
    ends: dict[tuple[str, int], int] = {}
    for topic, partition, offset in positions:
        ends[(topic, partition)] = max(ends.get((topic, partition), 0), offset + 1)
    return ends
