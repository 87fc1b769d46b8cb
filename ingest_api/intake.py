"""From an HTTP request to acknowledged records, the steps every endpoint shares.

Order of the checks (so a client learns the most useful thing first): rate limit (the
limiter, before the view) → cart token (401) → content type (415) → size (413) → JSON
(400) → fields (422) → the token's cart (403) → delivery (503) → 202.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Response, current_app, request
from pydantic import BaseModel, ValidationError

from gremio.kafka import Outgoing
from gremio.records import Record, request_id
from gremio.settings import Settings
from gremio.tokens import InvalidToken, from_ms, verify
from ingest_api import metrics
from ingest_api.delivery import Delivered, Delivery, NotDelivered
from ingest_api.problems import (
    REASONS,
    ApiProblem,
    endpoint_label,
    field_error,
    is_malformed_json,
    validation_errors,
)
from ingest_api.revocations import Revocations

M = TypeVar("M", bound=BaseModel)

MAX_IDEMPOTENCY_KEY = 255
BEARER = "bearer "


@dataclass(frozen=True)
class ApiState:
    """What the app's views share: the settings in force, the delivery path, and the revoked
    cart tokens this process knows of."""

    settings: Settings
    delivery: Delivery
    revocations: Revocations = field(default_factory=Revocations)


def state() -> ApiState:
    return current_app.extensions["gremio"]


def validation_context() -> dict[str, Any]:
    settings = state().settings
    return {
        "max_future_seconds": settings.max_future_seconds,
        "max_age_days": settings.sales_max_age_days,
        "max_batch_items": settings.max_batch_items,
    }


# --- the body -------------------------------------------------------------------------------


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def raw_json_body(max_bytes: int) -> bytes:
    """The body bytes, once its content type and size are right (415, 413)."""
    if not _is_json(request.mimetype):
        sent = request.content_type or "no Content-Type"
        raise ApiProblem(
            415,
            f"the body must be JSON (Content-Type: application/json), not {sent}",
            [field_error("Content-Type", f"expected application/json, got {sent}", "unsupported_media_type")],
        )
    request.max_content_length = max_bytes
    return request.get_data(cache=False)


def parse(model: type[M], raw: bytes | Any, prefix: str = "") -> M:
    """Validate bytes (JSON) or an already-parsed value as `model`; 400 or 422 with every bad field."""
    try:
        if isinstance(raw, bytes | bytearray):
            return model.model_validate_json(raw, context=validation_context())
        return model.model_validate(raw, context=validation_context())
    except ValidationError as exc:
        if is_malformed_json(exc):
            raise ApiProblem(
                400,
                "the body is not valid JSON",
                [field_error("body", str(exc.errors()[0]["msg"]), "json_invalid")],
            ) from None
        raise ApiProblem(422, "the request has invalid fields", validation_errors(exc, prefix)) from None


def body(model: type[M], max_bytes: int | None = None) -> M:
    """The request body validated as `model` (size limit MAX_BODY_BYTES unless given)."""
    return parse(model, raw_json_body(max_bytes or state().settings.max_body_bytes))


# --- who is asking ----------------------------------------------------------------------------------


def cart_plate() -> str:
    """The plate of the cart whose token came with the request, or 401 (missing, forged,
    signed with a retired key, or revoked: issued at or before its plate's revocation)."""
    header = request.headers.get("Authorization", "")
    challenge = {"WWW-Authenticate": 'Bearer realm="gremio carts"'}
    if not header.lower().startswith(BEARER) or not header[len(BEARER) :].strip():
        raise ApiProblem(
            401,
            "a cart token is required: Authorization: Bearer <token> (`gremio token PLATE` prints one)",
            [field_error("Authorization", "missing bearer token", "missing")],
            challenge,
        )
    api = state()
    try:
        token = verify(header[len(BEARER) :], api.settings)
    except InvalidToken as exc:
        raise ApiProblem(
            401,
            "the cart token is not valid",
            [field_error("Authorization", str(exc), "invalid_token")],
            challenge,
        ) from None
    revoked_ms = api.revocations.revoked_ms(token.plate)
    if revoked_ms is not None and token.issued_ms <= revoked_ms:
        revoked_at = from_ms(revoked_ms).isoformat(timespec="milliseconds")
        raise ApiProblem(
            401,
            f"the cart token was revoked at {revoked_at}: ask the guild for a new one"
            f" (`gremio token {token.plate}`)",
            [field_error("Authorization", "the token was revoked", "revoked_token")],
            {
                "WWW-Authenticate": 'Bearer realm="gremio carts", error="invalid_token", error_description="revoked"'
            },
        )
    return token.plate


def require_cart(authenticated: str, plate: str, field: str = "plate") -> None:
    """403 unless the record is about the cart the token belongs to."""
    if plate != authenticated:
        raise ApiProblem(
            403,
            f"this token belongs to cart {authenticated}; it cannot send records of cart {plate}",
            [field_error(field, f"must be {authenticated}, the token's cart", "forbidden")],
        )


def cart_body(model: type[M]) -> M:
    """The body of a cart endpoint: the cart's token (401), the body (4xx), and its `plate`
    the token's (403)."""
    authenticated = cart_plate()
    found = body(model)
    require_cart(authenticated, found.plate)  # type: ignore[attr-defined]
    return found


def idempotency_key() -> str | None:
    """The client's Idempotency-Key header: 1 to 255 visible ASCII characters, or 400."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not all(33 <= ord(c) <= 126 for c in key):
        raise ApiProblem(
            400,
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice)",
            [field_error("Idempotency-Key", "1 to 255 visible ASCII characters", "value_error")],
        )
    return key


def record_id(body: BaseModel, *scope: str) -> uuid.UUID:
    """A fresh id, or the one a retried request had: UUIDv5 of (path, scope, body digest, key).

    The digest of the validated body is in the scope, so two different requests sent with
    the same Idempotency-Key (two reporters who both chose "1") get two ids, and neither is
    dropped as a repeat of the other.
    """
    return request_id(idempotency_key(), request.path, body, *scope)


# --- delivery -----------------------------------------------------------------------------------------


def deliver(records: Sequence[Outgoing]) -> list[Delivered]:
    """Produce and wait for every acknowledgement, or 503 with Retry-After."""
    api = state()
    timeout = api.settings.delivery_timeout_seconds
    started = time.perf_counter()
    try:
        delivered = api.delivery.send(records, timeout)
    except NotDelivered as exc:
        for topic in {record.topic for record in records}:
            metrics.DELIVERY_FAILURES.labels(topic, exc.reason).inc()
        raise ApiProblem(
            503,
            f"the broker did not acknowledge the record in time ({exc.detail}): it may still have been"
            " stored. Retry with the same Idempotency-Key and body, so a record that did land is"
            " not stored twice.",
            headers={"Retry-After": str(max(1, math.ceil(timeout)))},
        ) from None
    metrics.DELIVERY_SECONDS.observe(time.perf_counter() - started)
    for landed in delivered:
        metrics.PRODUCED.labels(landed.topic).inc()
    return delivered


def accepted_json(record_id: uuid.UUID, landed: Delivered) -> dict[str, Any]:
    return {
        "id": str(record_id),
        "topic": landed.topic,
        "partition": landed.partition,
        "offset": landed.offset,
    }


def accepted(payload: Any) -> Response:
    metrics.ACCEPTED.labels(endpoint_label()).inc()
    return Response(json.dumps(payload), status=202, mimetype="application/json")


def accept_one(record: Record, topic: str, key: str, partition: int | None = None) -> Response:
    """Deliver one record and answer 202 with where it landed."""
    (landed,) = deliver([Outgoing.of(record, topic, key, partition)])
    return accepted(accepted_json(record.id, landed))  # type: ignore[attr-defined]


def count_item_rejections(count: int) -> None:
    """Batch items refused one by one (the batch itself was accepted)."""
    if count:
        metrics.REJECTED.labels(endpoint_label(), REASONS[422]).inc(count)
