"""The ingest API against the real broker. `POST /v1/locations`: a position lands on its plate's partition."""

from __future__ import annotations

from gremio import kafka as gk
from gremio import topics as t
from tests.integration.api_support import PLATE, auth, check_landed, only_record, position
from tests.support import TopicProbe


def test_position_lands_on_its_plates_partition(client):
    for plate in (PLATE, "CDFG34", "XY9876"):
        probe = TopicProbe()
        answer = client.post("/v1/locations", json=position(plate=plate), headers=auth(plate))
        assert answer.status_code == 202, answer.get_json()
        msg = only_record(probe, "locations")
        expected = t.position_partition(plate, gk.partition_counts()["locations"])
        assert expected != t.FUGITIVE_PARTITION
        check_landed(msg, answer.get_json(), "CartPosition", plate, expected)
