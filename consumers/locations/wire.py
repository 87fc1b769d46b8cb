"""A fast decoder for the CartPositions on `locations`, exact or deferring to pydantic.

Positions are 86 % of the fleet's records and every one of them was validated by the API
before it reached the topic, so `CartPosition.model_validate_json` (~7-13 µs, most of it
the plate's normalization) is the largest cost of the service per record. `PositionDecoder`
decodes with msgspec instead (~1 µs) and takes the fast path only for a record in the
exact form gremio's producers write it:

- exactly the six fields, each of its JSON type (`forbid_unknown_fields`, no coercion);
- `id` a UUID; `plate` already normalized (one of the two Chilean formats, so
  `normalize_plate` would return it unchanged);
- `lat`/`lon` finite and within the model's bounds;
- both times in UTC as pydantic writes them (`2026-11-23T15:00:00.123456Z`).

Anything else — malformed JSON, a field missing or extra, another spelling of a time, a
plate to normalize, NaN — is decoded by `CartPosition.from_bytes` itself, so it is
normalized or refused (ValidationError, and the runner dead-letters it) exactly as before.
The fast path's result equals pydantic's for every record it takes
(tests/unit/test_locations_wire.py checks that with Hypothesis).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from gremio.records import NEW_PLATE, OLD_PLATE, CartPosition

# The one spelling of a time the fast path takes: UTC with a Z, 0-6 fractional digits.
_UTC_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z", re.ASCII)
_FIELDS = frozenset(CartPosition.model_fields)


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    id: uuid.UUID
    plate: str
    lat: float
    lon: float
    recorded_at: str
    received_at: str


_DECODER = msgspec.json.Decoder(_Wire)


class PositionDecoder:
    """Stands for CartPosition in a service's `accepts`: the runner calls `from_bytes`."""

    type_name = CartPosition.type_name

    @staticmethod
    def from_bytes(value: bytes) -> CartPosition:
        """The CartPosition in `value`; pydantic's ValidationError if it is not one."""
        try:
            wire = _DECODER.decode(value)
        except msgspec.DecodeError:  # also msgspec.ValidationError
            return CartPosition.from_bytes(value)
        lat, lon, plate = wire.lat, wire.lon, wire.plate
        if not (
            -90.0 <= lat <= 90.0  # False for NaN
            and -180.0 <= lon <= 180.0
            and (NEW_PLATE.fullmatch(plate) or OLD_PLATE.fullmatch(plate))
            and _UTC_TIME.fullmatch(wire.recorded_at)
            and _UTC_TIME.fullmatch(wire.received_at)
        ):
            return CartPosition.from_bytes(value)
        try:
            recorded_at = datetime.fromisoformat(wire.recorded_at)
            received_at = datetime.fromisoformat(wire.received_at)
        except ValueError:  # month 13, hour 25, ...
            return CartPosition.from_bytes(value)
        return _construct({
            "id": wire.id, "plate": plate, "lat": lat, "lon": lon, "recorded_at": recorded_at,
            "received_at": received_at,
        })  # fmt: skip


_new = object.__new__
_set = object.__setattr__
_SLOTS = ("__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")


def _construct_direct(fields: dict[str, Any]) -> CartPosition:
    """What `model_construct` makes of the six fields, without its per-field loop (it is
    ~2.5 of the ~3.5 µs the fast path would cost). It relies on how pydantic 2 lays out a
    model instance, so `_construct` is this only if the self-check at import finds it exact."""
    record = _new(CartPosition)
    _set(record, "__dict__", fields)
    _set(record, "__pydantic_fields_set__", set(_FIELDS))
    _set(record, "__pydantic_extra__", None)
    _set(record, "__pydantic_private__", None)
    return record


def _construct_documented(fields: dict[str, Any]) -> CartPosition:
    return CartPosition.model_construct(_FIELDS, **fields)


def _direct_is_exact() -> bool:
    """Whether `_construct_direct` gives what validation gives (pydantic's layout unchanged)."""
    sample = CartPosition(
        id=uuid.UUID(int=1), plate="BBCL12", lat=-33.4, lon=-70.6,
        recorded_at=datetime(2026, 1, 1, tzinfo=UTC), received_at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
    )  # fmt: skip
    direct = _construct_direct(dict(sample.__dict__))
    return (
        direct == sample
        and direct.model_dump() == sample.model_dump()
        and direct.model_fields_set == sample.model_fields_set
        and {k: getattr(direct, k, None) for k in _SLOTS} == {k: getattr(sample, k, None) for k in _SLOTS}
    )


_construct = _construct_direct if _direct_is_exact() else _construct_documented
