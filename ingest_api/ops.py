"""Operations endpoints: /healthz, /readyz, /openapi.json, /metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from ingest_api import intake, metrics
from ingest_api.openapi import document
from ingest_api.problems import problem_response

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process answers (liveness); says nothing about Kafka."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """503 while Kafka is unreachable or the topics are missing (a cached, cheap check).

    `revocations` says whether this worker has read cart_revocations to its end and how many
    revoked carts it knows; a worker that cannot read them keeps serving (docs/API.md).
    """
    api = intake.state()
    ok, detail = api.delivery.ready()
    if not ok:
        return problem_response(503, detail, headers={"Retry-After": "5"})
    return jsonify(status="ready", detail=detail, revocations=api.revocations.status())


@bp.get("/openapi.json")
def openapi() -> Response:
    cached = current_app.extensions.get("gremio_openapi")
    if cached is None:
        cached = current_app.extensions["gremio_openapi"] = document(intake.state().settings)
    return jsonify(cached)


@bp.get("/metrics")
def prometheus() -> Response:
    text, content_type = metrics.exposition()
    return Response(text, content_type=content_type)
