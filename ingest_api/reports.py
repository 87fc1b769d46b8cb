"""POST /v1/reports: anyone may report a cart working outside the guild (rate-limited)."""

from __future__ import annotations

from flask import Blueprint, Response

from gremio import records
from gremio import topics as t
from ingest_api import intake

bp = Blueprint("reports", __name__)


@bp.post("/v1/reports")
def report() -> Response:
    """Fugitive reports go to locations p0, keyed by the reported plate (or the report id)."""
    body = intake.body(records.FugitiveReportIn)
    fugitive = records.fugitive_report(body, intake.record_id(body), records.now_utc())
    key = fugitive.plate or str(fugitive.id)
    return intake.accept_one(fugitive, t.LOCATIONS.name, key, t.FUGITIVE_PARTITION)
