"""Per-client-IP rate limits on the public endpoints, /v1/members and /v1/reports.

This is flask-limiter's own core, the `limits` library: the same rate strings ("20/minute")
and storage URIs (memory://, redis://...). It is checked in those two blueprints only:
flask-limiter's app-wide before_request hook cost about a fifth of the CPU of every
request, the carts' unlimited ones included (docs/BENCHMARKS.md).

A moving window: "20/minute" means at most 20 in any 60 s, never 40 across a minute's edge.
With memory:// every gunicorn worker counts on its own (docs/API.md says what that means).
"""

from __future__ import annotations

import math
import time

from flask import Flask, request
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ingest_api.problems import ApiProblem


class RateLimits:
    def __init__(self, storage_uri: str) -> None:
        self.window = MovingWindowRateLimiter(storage_from_string(storage_uri))

    def protect(self, app: Flask, blueprint: str, limit: str) -> None:
        """Refuse with 429 a client IP that goes over `limit` on this blueprint's endpoints."""
        item = parse(limit)

        def check() -> None:
            client = request.remote_addr or "unknown"
            if not self.window.hit(item, blueprint, client):
                reset_at, _ = self.window.get_window_stats(item, blueprint, client)
                wait = max(1, math.ceil(reset_at - time.time()))
                raise ApiProblem(
                    429,
                    f"rate limit exceeded ({item} per client); try again in {wait} s",
                    headers={"Retry-After": str(wait)},
                )

        app.before_request_funcs.setdefault(blueprint, []).append(check)
