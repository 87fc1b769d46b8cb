"""POST /v1/locations: a cart's position ping (the cart's own token)."""

from __future__ import annotations

from flask import Blueprint, Response

from gremio import records
from gremio import topics as t
from ingest_api import intake

bp = Blueprint("locations", __name__)


@bp.post("/v1/locations")
def ping() -> Response:
    """Positions go to locations p1..p(n-1), one partition per plate (p0 is for reports)."""
    body = intake.cart_body(records.CartPositionIn)
    position = records.cart_position(body, intake.record_id(body, body.plate), records.now_utc())
    partitions = intake.state().delivery.partitions(t.LOCATIONS)
    return intake.accept_one(
        position, t.LOCATIONS.name, position.plate, t.position_partition(position.plate, partitions)
    )
