"""Which failures pass and which are for good: one classification for the run loop and the drains.

A consumer or drain that meets an error while making a batch durable asks `classify`:

* **transient**: the failure is the world's, not the record's (PostgreSQL restarting, a
  connection lost, a timeout, a serialization failure or deadlock, the broker unreachable).
  Retry the same records with `Backoff`; never dead-letter them, never commit past them.
* **permanent**: the record itself is refused (the database rejects the row: `DataError`,
  an `IntegrityError` other than the expected idempotency conflict, which `ON CONFLICT`
  absorbs; an encoding error; the handler's own `ValueError`). `isolate` splits the batch
  until the refused records stand alone: those are dead-lettered with the error, and the
  rest of the batch is processed.
* **fatal**: anything else (a programming error, a missing table, a refused privilege, a
  fatal Kafka error). It is not the record's fault and retrying will not help: it
  propagates, and the service stops loudly rather than dead-letter every record it reads.

This follows Kafka Connect's `errors.tolerance`: retriable errors are retried, others go to
the dead-letter queue with headers that say why, and the task carries on.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TypeVar

import psycopg
from confluent_kafka import KafkaError, KafkaException

from gremio.logs import redact_personal_data

T = TypeVar("T")


class Failure(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    FATAL = "fatal"


# Kafka errors that are the record's own: the broker will never take it.
_KAFKA_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD,
}
# PostgreSQL errors that pass: the server is going away or coming back, or the transaction
# lost a race. OperationalError covers most of them (class 08, 53, 57, 40); these are the
# members of other classes that pass too.
_PG_TRANSIENT = (
    psycopg.OperationalError,
    psycopg.InterfaceError,  # the connection is closed or broken
    psycopg.errors.IdleInTransactionSessionTimeout,
    psycopg.errors.TransactionRollback,
)


def classify(exc: BaseException) -> Failure:
    """Whether `exc`, raised while making records durable, passes, is the record's, or neither."""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege | psycopg.errors.UndefinedTable):
        return Failure.FATAL
    if isinstance(exc, _PG_TRANSIENT):
        return Failure.TRANSIENT
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return Failure.PERMANENT
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is None:
            return Failure.TRANSIENT
        if err.fatal():
            return Failure.FATAL
        if err.code() in _KAFKA_PERMANENT:
            return Failure.PERMANENT
        # Unknown broker trouble is treated as passing: a record is never dead-lettered
        # on an unclear answer.
        return Failure.TRANSIENT
    if isinstance(exc, TimeoutError | ConnectionError):
        return Failure.TRANSIENT
    if isinstance(exc, ValueError):  # includes UnicodeError and pydantic's ValidationError
        return Failure.PERMANENT
    return Failure.FATAL


def reason(exc: BaseException) -> str:
    """The error as a dead letter's reason: its class and first line, without the record's text."""
    name = type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    # A driver's message can quote a value ("invalid input syntax ...: \"...\""): no RUT or
    # e-mail leaves in a reason, which goes to logs and to the dead letter's headers.
    return redact_personal_data(f"{name}{f' [{sqlstate}]' if sqlstate else ''}: {first}")[:500]


def isolate(items: Sequence[T], apply: Callable[[Sequence[T]], None]) -> list[tuple[T, BaseException]]:
    """Apply `items`; on a permanent failure split them in halves and apply each, in order.

    Returns the items refused on their own, with their errors; every other item was
    applied. Transient and fatal failures propagate (whatever was applied before stays
    applied, so `apply` must be idempotent). k refused items among n cost O(k log n) applies.
    """
    try:
        apply(items)
        return []
    except Exception as exc:
        if classify(exc) is not Failure.PERMANENT:
            raise
        if len(items) <= 1:
            return [(item, exc) for item in items]
    middle = len(items) // 2
    return isolate(items[:middle], apply) + isolate(items[middle:], apply)


class Backoff:
    """Exponential backoff with jitter for transient failures: 0.5 s, 1 s, 2 s, ... up to `cap`."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first, self.cap = first, cap
        self.attempts = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2**self.attempts)
        self.attempts += 1
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not a secret)

    def reset(self) -> None:
        self.attempts = 0

    def wait(self, stop: threading.Event | None = None) -> float:
        """Sleep the next delay (woken early by `stop`); returns the delay."""
        delay = self.next_delay()
        if stop is not None:
            stop.wait(delay)
        else:
            threading.Event().wait(delay)
        return delay
