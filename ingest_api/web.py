"""The public report page at `/`: where anyone reports a fugitive cart (POST /v1/reports).

The page itself is static (templates/report.html, static/report.js and report.css) over
the shared offline map of gremio.web; the server only fills in the service area, the
description limit and the URL to post to. It is not in /openapi.json: it is a page for
people, not part of the API.
"""

from __future__ import annotations

from flask import Blueprint, Response, url_for

from gremio import records
from gremio.web import page, service_area
from ingest_api import intake

bp = Blueprint("web", __name__)


def _description_max() -> int:
    """The description's length limit, as the record's schema (the one truth) states it."""
    field = records.FugitiveReportIn.model_json_schema()["properties"]["description"]
    return next(choice["maxLength"] for choice in field.get("anyOf", [field]) if "maxLength" in choice)


@bp.get("/")
def report_page() -> Response:
    config = {
        "area": service_area(intake.state().settings),
        "reports_url": url_for("reports.report"),
        "description_max": _description_max(),
    }
    return page("report.html", url_for("static", filename="report.js"), config)
