"""POST /v1/members: anyone may apply to join the guild (rate-limited per client IP)."""

from __future__ import annotations

from flask import Blueprint, Response

from gremio import records
from gremio import topics as t
from ingest_api import intake

bp = Blueprint("members", __name__)


@bp.post("/v1/members")
def apply() -> Response:
    """Premium applications go to members p1 (decided within a minute), regular ones to p0."""
    body = intake.body(records.MemberApplicationIn)
    application = records.member_application(body, intake.record_id(body, body.rut), records.now_utc())
    return intake.accept_one(
        application, t.MEMBERS.name, application.rut, t.member_partition(application.premium)
    )
