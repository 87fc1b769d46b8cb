"""The ingest API against the real broker. `POST /v1/reports`: a fugitive report lands on locations p0."""

from __future__ import annotations

import pytest

from gremio import topics as t
from tests.integration.api_support import PLATE, check_landed, only_record, report
from tests.support import TopicProbe


@pytest.mark.parametrize("plate", [None, "bb cl 12"])
def test_fugitive_report_lands_on_locations_p0(client, plate):
    probe = TopicProbe()
    body = report() if plate is None else report(patente=plate)
    answer = client.post("/v1/reports", json=body)
    assert answer.status_code == 202, answer.get_json()
    msg = only_record(probe, "locations")
    key = PLATE if plate else answer.get_json()["id"]
    value = check_landed(msg, answer.get_json(), "FugitiveReport", key, t.FUGITIVE_PARTITION)
    assert value["plate"] == (PLATE if plate else None)
