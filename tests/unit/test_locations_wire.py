"""The location service's fast CartPosition decoder equals pydantic's, or is pydantic's."""

from __future__ import annotations

import json
import math
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consumers.locations import wire
from consumers.locations.service import LocationService
from consumers.locations.wire import PositionDecoder
from gremio.records import CartPosition

GOOD = {
    "id": "65ab9531-1f6a-4ba5-ae38-eb3878e6b6bb",
    "plate": "BBCL12",
    "lat": -33.4378,
    "lon": -70.65045,
    "recorded_at": "2026-12-03T17:53:49.786309Z",
    "received_at": "2026-12-03T17:53:49.9Z",
}


def outcome(decode, value: bytes) -> tuple[str, object]:
    try:
        record = decode(value)
    except ValidationError as exc:
        return "refused", [(e["loc"], e["type"]) for e in exc.errors()]
    assert type(record) is CartPosition
    dumped = record.model_dump()
    return "ok", (
        dumped,
        {k: type(v) for k, v in dumped.items()},
        record.model_fields_set,
        record.model_dump_json(),
    )


def same(value: bytes) -> None:
    assert outcome(PositionDecoder.from_bytes, value) == outcome(CartPosition.from_bytes, value)


def test_the_service_decodes_positions_with_it():
    assert LocationService.accepts["CartPosition"] is PositionDecoder
    # The pinned pydantic lays models out as the direct construction expects (else the
    # decoder falls back to model_construct: still exact, ~2.5 µs slower per position).
    assert wire._construct is wire._construct_direct


def test_a_record_as_the_api_writes_it_takes_the_fast_path_and_equals_pydantic():
    record = CartPosition.from_bytes(json.dumps(GOOD).encode())
    assert PositionDecoder.from_bytes(record.to_bytes()) == record
    same(record.to_bytes())


@pytest.mark.parametrize(
    "change",
    [
        {"plate": "bbcl12"}, {"plate": "BB-CL-12"}, {"plate": "ＢＢＣＬ１２"}, {"plate": "BBCL12\n"},
        {"plate": "QQ1234X"}, {"plate": 12}, {"lat": "−33.4"}, {"lat": "-33.4"}, {"lat": True},
        {"lat": 91}, {"lat": -33}, {"lon": -180.0000001}, {"lat": None}, {"lat": 1e400},
        {"recorded_at": "2026-12-03T17:53:49+00:00"}, {"recorded_at": "2026-12-03 17:53:49Z"},
        {"recorded_at": "2026-12-03T17:53:49"}, {"recorded_at": "2026-13-03T17:53:49Z"},
        {"recorded_at": "2026-12-03T17:53:49.1234567Z"}, {"recorded_at": 1796320357},
        {"recorded_at": "2026-12-03T24:00:00Z"}, {"id": "not-a-uuid"}, {"id": "65AB95311F6A4BA5AE38EB3878E6B6BB"},  # pragma: allowlist secret
        {"id": "urn:uuid:65ab9531-1f6a-4ba5-ae38-eb3878e6b6bb"}, {"extra": 1},
    ],
)  # fmt: skip
def test_every_other_spelling_is_pydantics_decision(change):
    same(json.dumps({**GOOD, **change}).encode())


@pytest.mark.parametrize(
    "value",
    [b"", b"null", b"[]", b"{", b"\xff\xfe", b'{"lat": NaN}', json.dumps({k: GOOD[k] for k in list(GOOD)[:-1]}).encode(),
     json.dumps(GOOD).encode()[:-1] + b',"plate":"bbcl12"}', json.dumps(GOOD).encode().replace(b"-33.4378", b"NaN")],
)  # fmt: skip
def test_malformed_bytes_are_refused_as_before(value):
    same(value)


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_FIELD = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), _TEXT,
    st.sampled_from(["BBCL12", "AB1234", "ab1234", "BCDF-12", "2026-12-03T17:53:49Z", "2026-02-30T00:00:00Z",
                     "0000-01-01T00:00:00Z", "2026-12-03T17:53:49.000000Z", "2026-12-03T17:53:60Z",
                     str(uuid.UUID(int=0)), "65ab9531-1f6a-4ba5-ae38-eb3878e6b6bb"]),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "other"]), _FIELD, max_size=8), st.booleans())
def test_any_object_decodes_as_pydantic_decodes_it(fields, from_good):
    body = {**GOOD, **fields} if from_good else fields
    same(json.dumps(body).encode())


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.datetimes(timezones=st.just(__import__("datetime").UTC)),
    st.from_regex(r"\A[BCDFGHJKLPRSTVWXYZ]{4}[0-9]{2}\Z|\A[A-Z]{2}[0-9]{4}\Z"),
)
def test_valid_positions_round_trip_through_the_fast_path(lat, lon, at, plate):
    record = CartPosition(id=uuid.uuid4(), plate=plate, lat=lat, lon=lon, recorded_at=at, received_at=at)
    decoded = PositionDecoder.from_bytes(record.to_bytes())
    assert decoded == record and not math.isnan(decoded.lat)
    same(record.to_bytes())
