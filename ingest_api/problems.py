"""Errors as `application/problem+json` (RFC 9457), with a field-by-field `errors` list."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Flask, Response, json, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from ingest_api import metrics

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# Why a request was refused, as the `reason` label of gremio_api_rejected_total.
REASONS = {
    400: "malformed",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal_error",
    503: "broker_unavailable",
}


class ApiProblem(Exception):
    """Raised anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: Iterable[Mapping[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.headers = dict(headers or {})


def field_error(field: str, message: str, code: str = "value_error") -> dict[str, str]:
    return {"field": field, "message": message, "code": code}


def field_path(loc: Iterable[int | str], prefix: str = "") -> str:
    """pydantic's error location as the client wrote it: `location.lat`, `sales[3].quantity`."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def validation_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """One entry per bad field; the input itself is never echoed back."""
    found = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        message = error["msg"].removeprefix("Value error, ")
        found.append(field_error(field_path(error["loc"], prefix), message, error["type"]))
    return found


def is_malformed_json(exc: ValidationError) -> bool:
    return any(error["type"] == "json_invalid" for error in exc.errors(include_url=False))


def problem_response(
    status: int,
    detail: str,
    errors: Iterable[Mapping[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.path,
        "errors": list(errors),
    }
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    response.headers.update(headers or {})
    return response


def endpoint_label() -> str:
    """The matched route (bounded label cardinality), never the raw path."""
    return request.url_rule.rule if request.url_rule else "unmatched"


def count_rejection(status: int) -> None:
    metrics.REJECTED.labels(endpoint_label(), REASONS.get(status, str(status))).inc()


def _on_problem(exc: ApiProblem) -> Response:
    count_rejection(exc.status)
    return problem_response(exc.status, exc.detail, exc.errors, exc.headers)


def _on_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    count_rejection(status)
    errors: list[dict[str, str]] = []
    detail = exc.description or HTTP_STATUS_CODES.get(status, "")
    if status == 413:
        limit = request.max_content_length
        detail = f"the body is over the limit of {limit} bytes" if limit else detail
        errors = [field_error("body", detail, "too_large")]
    headers = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type", "content-length")}
    return problem_response(status, detail, errors, headers)


def _on_unexpected(exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.path)
    count_rejection(500)
    return problem_response(500, "an unexpected error; it has been logged")


def init_app(app: Flask) -> None:
    """Every error the app gives is a problem document, framework errors included."""
    app.register_error_handler(ApiProblem, _on_problem)
    app.register_error_handler(HTTPException, _on_http_exception)
    app.register_error_handler(Exception, _on_unexpected)
