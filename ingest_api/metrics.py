"""The API's Prometheus metrics, served at /metrics.

Under gunicorn every worker is a process with its own counters, so gunicorn_conf.py turns
on prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set before any worker
imports prometheus_client) and /metrics adds up every worker's files. Run in one process
(tests, `flask run`), the plain registry is used.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

ACCEPTED = Counter("gremio_api_accepted", "Requests answered 202", ["endpoint"])
REJECTED = Counter(
    "gremio_api_rejected",
    "Requests (and batch items) refused, by reason: invalid, malformed, unauthorized, forbidden, "
    "too_large, unsupported_media_type, rate_limited, broker_unavailable, ...",
    ["endpoint", "reason"],
)
PRODUCED = Counter("gremio_api_produced", "Records acknowledged by the broker", ["topic"])
DELIVERY_FAILURES = Counter(
    "gremio_api_delivery_failures",
    "Records the broker did not acknowledge (timeout, error, queue_full, fatal)",
    ["topic", "reason"],
)
DELIVERY_SECONDS = Histogram(
    "gremio_api_delivery_seconds",
    "From produce to the broker's acknowledgement, per request",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def exposition() -> tuple[bytes, str]:
    """The metrics text of every worker (multiprocess mode) or of this process."""
    try:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # ValueError unless PROMETHEUS_MULTIPROC_DIR is set
    except ValueError:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
