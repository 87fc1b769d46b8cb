"""Per-client-IP rate limits on the public endpoints, /v1/members and /v1/reports.

This is flask-limiter's own core, the `limits` library: the same rate strings ("20/minute")
and storage URIs (memory://, redis://...). It is checked in those two blueprints only:
flask-limiter's app-wide before_request hook cost about a fifth of the CPU of every
request, the carts' unlimited ones included (docs/BENCHMARKS.md).

A moving window: "20/minute" means at most 20 in any 60 s, never 40 across a minute's edge.

**Shared counters.** With RATE_LIMIT_STORAGE_URI=redis://... (the local stack's redis-server,
compose's `redis` service) every worker of every instance counts in the same Redis, through
limits' atomic Lua script: a client gets exactly the limit. With memory:// each worker
counts on its own (docs/API.md says what that means).

**Redis down: fail open, to each worker's own counters.** The public endpoints take
applications and fugitive reports from people who will not try again, so an outage of the
limiter's storage must not refuse them (fail closed would turn a Redis outage into an API
outage), and must not unbound them either (fail open with no limit lets a flood through).
So a check that cannot reach Redis is counted in the worker's memory instead: the limit
then holds per worker, as with memory://. It is logged once per outage (a warning when
Redis is lost, a line when it is back) and counted in `gremio_api_rate_limit_fallbacks_total`.
After a failure Redis is not asked again for RETRY_SECONDS, so an outage costs no time per
request; short socket timeouts bound what a Redis that hangs can cost.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from urllib.parse import urlsplit

from flask import Flask, request
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import Counter

from ingest_api.problems import ApiProblem

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0  # after a failure, how long checks stay in the worker's memory
SOCKET_TIMEOUT_SECONDS = 0.5  # a Redis that does not answer costs a request at most this

FALLBACKS = Counter(
    "gremio_api_rate_limit_fallbacks",
    "Rate-limit checks counted in the worker's own memory because the shared storage (Redis) "
    "could not be reached",
)


class RateLimits:
    """The limiter of one worker: the shared storage, and its own memory for when that is down."""

    def __init__(self, storage_uri: str, retry_seconds: float = RETRY_SECONDS) -> None:
        scheme = urlsplit(storage_uri).scheme
        self.where = _masked(storage_uri)
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        if scheme != "memory":
            options: dict = {"wrap_exceptions": True}
            if scheme.startswith(("redis", "valkey")):
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                options.update(
                    socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                    socket_timeout=SOCKET_TIMEOUT_SECONDS,
                    retry=Retry(NoBackoff(), 1),  # once, on a fresh connection; then the fallback
                )
            self._shared = MovingWindowRateLimiter(storage_from_string(storage_uri, **options))
        self.retry_seconds = retry_seconds
        self._down_until = 0.0  # monotonic; > now: Redis failed lately, count locally
        self._down = False
        self._lock = threading.Lock()

    @property
    def shared(self) -> bool:
        """Counting in the shared storage right now (False: memory://, or it is down)."""
        return self._shared is not None and not self._down

    def hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, float]:
        """Count one request: (allowed, when its window frees a slot, epoch seconds)."""
        if self._shared is not None and time.monotonic() >= self._down_until:
            try:
                allowed = self._shared.hit(item, *identifiers)
                reset_at = 0.0 if allowed else self._shared.get_window_stats(item, *identifiers)[0]
            except StorageError as exc:
                self._lost(exc.storage_error)
            else:
                self._back()
                return allowed, reset_at
        if self._shared is not None:
            FALLBACKS.inc()
        allowed = self._local.hit(item, *identifiers)
        reset_at = 0.0 if allowed else self._local.get_window_stats(item, *identifiers)[0]
        return allowed, reset_at

    def _lost(self, error: Exception) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self.retry_seconds
            if not self._down:
                self._down = True
                log.warning(
                    "rate limits: %s unreachable (%s); counting in this worker's memory until it is back",
                    self.where,
                    type(error).__name__,
                )

    def _back(self) -> None:
        if self._down:
            with self._lock:
                if self._down:
                    self._down = False
                    log.info("rate limits: %s is back; counting there again", self.where)

    def protect(self, app: Flask, blueprint: str, limit: str) -> None:
        """Refuse with 429 a client IP that goes over `limit` on this blueprint's endpoints."""
        item = parse(limit)

        def check() -> None:
            client = request.remote_addr or "unknown"
            allowed, reset_at = self.hit(item, blueprint, client)
            if not allowed:
                wait = max(1, math.ceil(reset_at - time.time()))
                raise ApiProblem(
                    429,
                    f"rate limit exceeded ({item} per client); try again in {wait} s",
                    headers={"Retry-After": str(wait)},
                )

        app.before_request_funcs.setdefault(blueprint, []).append(check)


def _masked(uri: str) -> str:
    """The storage URI without its password, for logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return uri.replace(f":{parts.password}@", ":***@", 1)
