"""The validation rules of DESIGN §4 and the record schemas of §3."""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gremio import records as r

NOW = datetime.now(UTC)


def errors(model, body, **context) -> dict[str, str]:
    """{field: error type} of a body that must fail, validated as JSON (as the API does)."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(json.dumps(body), context=context or None)
    return {".".join(map(str, e["loc"])): e["type"] for e in caught.value.errors()}


def sale(**fields) -> dict:
    return {
        "plate": "BBCL12", "client": "ana", "quantity": 2, "stock_remaining": 50,
        "location": {"lat": -33.44, "lon": -70.65}, **fields,
    }  # fmt: skip


def position(**fields) -> dict:
    return {"plate": "BBCL12", "lat": -33.44, "lon": -70.65, **fields}


def member(**fields) -> dict:
    return {
        "first_name": "Ana", "last_name": "Pérez", "rut": "12.345.678-5", "email": "ana@example.cl",
        "plate": "AB1234", **fields,
    }  # fmt: skip


# --- plates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("BBCL12", "BBCL12"),
        ("bbcl12", "BBCL12"),
        ("BB-CL-12", "BBCL12"),
        ("bb cl 12", "BBCL12"),
        ("BB·CL·12", "BBCL12"),
        ("BB.CL.12", "BBCL12"),
        ("ZZYX99", "ZZYX99"),
        ("AB1234", "AB1234"),
        ("ab-12-34", "AB1234"),
        ("AE 1234", "AE1234"),  # old plates may have vowels
    ],
)
def test_plates_are_normalized(written, normalized):
    assert r.normalize_plate(written) == normalized


@pytest.mark.parametrize(
    "plate",
    [
        "",
        "ABC123",
        "AB123",
        "AB12345",
        "BACL12",
        "BBCA12",
        "BBQL12",
        "BBMN12",
        "1234AB",
        "BBCL1",
        "BBCL123",
        "ÑBCL12",
    ],
)
def test_bad_plates_are_refused(plate):
    with pytest.raises(ValueError, match="not a Chilean plate"):
        r.normalize_plate(plate)


def test_a_plate_must_be_a_string():
    with pytest.raises(ValueError, match="must be a string"):
        r.normalize_plate(123456)


# --- RUTs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("12.345.678-5", "12345678-5"),
        ("12345678-5", "12345678-5"),
        ("123456785", "12345678-5"),
        (" 7.654.321-6 ", "7654321-6"),
        ("10.000.013-K", "10000013-K"),
        ("10000013-k", "10000013-K"),
        ("30.686.957-4", "30686957-4"),
        # Bodies under 1,000,000 are valid RUTs, though python-stdnum refuses them by length.
        ("999.999-K", "999999-K"),
        ("123-6", "123-6"),
        ("1.2-4", "12-4"),
        ("1-9", "1-9"),
        ("6-K", "6-K"),
        ("00000001-9", "1-9"),
    ],
)
def test_ruts_are_normalized(written, normalized):
    assert r.normalize_rut(written) == normalized


@pytest.mark.parametrize("rut", ["12.345.678-0", "12345678-K", "999.999-3", "1-8", "6-0", "30686957-5"])
def test_a_wrong_check_digit_is_refused(rut):
    with pytest.raises(ValueError, match="wrong check digit"):
        r.normalize_rut(rut)


@pytest.mark.parametrize(
    "rut", ["", "-", "0-0", "K", "12.345.678-X", "abc-1", "1234567890-1", "12,345,678-5"]
)
def test_malformed_ruts_are_refused(rut):
    with pytest.raises(ValueError, match="not a RUT"):
        r.normalize_rut(rut)


def test_a_rut_must_be_a_string():
    with pytest.raises(ValueError, match="must be a string"):
        r.normalize_rut(12345678)


# --- email, names, clients -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("ana@example.cl", "ana@example.cl"),
        ("Ana.Perez@EXAMPLE.CL", "Ana.Perez@example.cl"),
        ("josé@ñandú.cl", "josé@ñandú.cl"),
    ],
)
def test_emails_are_normalized(written, normalized):
    assert r.normalize_email(written) == normalized


@pytest.mark.parametrize(
    "email", ["", "ana", "ana@", "@example.cl", "ana@@example.cl", "ana at example.cl", "a b@c.cl"]
)
def test_malformed_emails_are_refused(email):
    with pytest.raises(ValueError, match=r"@-sign|invalid characters"):
        r.normalize_email(email)


def test_names_are_trimmed_and_between_1_and_80_characters():
    assert r.normalize_name("  María   José \u00a0") == "María José"
    assert r.normalize_name("x" * 80) == "x" * 80
    for bad in ("", "   ", "x" * 81, 7):
        with pytest.raises(ValueError, match="must be"):
            r.normalize_name(bad)


def test_clients_are_trimmed_and_compared_lower_cased():
    assert r.normalize_client(" Don  Pepe ") == "Don  Pepe"
    assert r.client_key(" Don Pepe ") == r.client_key("don pepe") == "don pepe"
    for bad in ("", "  ", "x" * 81, None):
        with pytest.raises(ValueError, match="must be"):
            r.normalize_client(bad)


# --- numbers and positions ------------------------------------------------------------------------


@pytest.mark.parametrize("quantity", [1, 2, 1000])
def test_quantities_from_1_to_1000(quantity):
    assert r.SaleIn.model_validate_json(json.dumps(sale(quantity=quantity))).quantity == quantity


@pytest.mark.parametrize("quantity", [0, -1, 1001, 2.5, 2.0, "2", True, None])
def test_other_quantities_are_refused(quantity):
    assert "quantity" in errors(r.SaleIn, sale(quantity=quantity))


@pytest.mark.parametrize("stock", [0, 19, 10000])
def test_stock_from_0_to_10000(stock):
    assert r.SaleIn.model_validate_json(json.dumps(sale(stock_remaining=stock))).stock_remaining == stock


@pytest.mark.parametrize("stock", [-1, 10001, 5.5, "5"])
def test_other_stock_is_refused(stock):
    assert "stock_remaining" in errors(r.SaleIn, sale(stock_remaining=stock))


@pytest.mark.parametrize(("lat", "lon"), [(90, 180), (-90, -180), (0, 1), (1, 0), (0.0, -70.6), (-33, -70)])
def test_positions_on_earth_are_accepted(lat, lon):
    found = r.CartPositionIn.model_validate_json(json.dumps(position(lat=lat, lon=lon)))
    assert (found.lat, found.lon) == (lat, lon)


@pytest.mark.parametrize(
    ("lat", "lon", "field"),
    [(91, -70, "lat"), (-90.0001, -70, "lat"), (-33, 180.5, "lon"), (-33, -181, "lon"), (True, -70, "lat"),
     ("-33.4", -70, "lat"), (None, -70, "lat")],
)  # fmt: skip
def test_positions_off_the_earth_are_refused(lat, lon, field):
    assert field in errors(r.CartPositionIn, position(lat=lat, lon=lon))


def test_nan_and_infinity_are_refused():
    for raw in (
        b'{"plate": "BBCL12", "lat": NaN, "lon": -70}',
        b'{"plate": "BBCL12", "lat": 1e999, "lon": -70}',
    ):
        with pytest.raises(ValidationError) as caught:
            r.CartPositionIn.model_validate_json(raw)
        assert caught.value.errors()[0]["loc"] == ("lat",)
    with pytest.raises(ValidationError):
        r.CartPositionIn.model_validate({"plate": "BBCL12", "lat": math.nan, "lon": -70})


def test_null_island_is_refused_naming_a_field_in_every_model():
    assert errors(r.CartPositionIn, position(lat=0, lon=0)) == {"lon": "value_error"}
    assert errors(r.FugitiveReportIn, {"lat": 0.0, "lon": 0.0}) == {"lon": "value_error"}
    assert errors(r.SaleIn, sale(location={"lat": 0, "lon": 0})) == {"location.lon": "value_error"}


# --- times ------------------------------------------------------------------------------------------


def test_times_up_to_5_minutes_ahead_are_accepted():
    now = datetime.now(UTC)
    for ahead in (timedelta(0), timedelta(minutes=4), -timedelta(days=3)):
        body = position(recorded_at=(now + ahead).isoformat())
        assert r.CartPositionIn.model_validate_json(json.dumps(body)).recorded_at == now + ahead


@pytest.mark.parametrize("ahead", [timedelta(minutes=6), timedelta(hours=1), timedelta(days=400)])
def test_times_further_ahead_are_refused(ahead):
    now = datetime.now(UTC)  # not the module's NOW: the limit is measured from the clock
    assert errors(r.CartPositionIn, position(recorded_at=(now + ahead).isoformat())) == {
        "recorded_at": "value_error"
    }
    assert errors(r.SaleIn, sale(sold_at=(now + ahead).isoformat())) == {"sold_at": "value_error"}


def test_the_future_limit_comes_from_the_validation_context():
    ahead = position(recorded_at=(datetime.now(UTC) + timedelta(seconds=90)).isoformat())
    assert errors(r.CartPositionIn, ahead, max_future_seconds=60) == {"recorded_at": "value_error"}
    r.CartPositionIn.model_validate_json(json.dumps(ahead), context={"max_future_seconds": 120})


def test_times_need_an_offset_and_keep_it():
    assert errors(r.CartPositionIn, position(recorded_at="2026-01-02T10:00:00")) == {
        "recorded_at": "timezone_aware"
    }
    # Within SALES_MAX_AGE_DAYS of the clock, as the API needs it.
    santiago = (datetime.now(UTC) - timedelta(hours=1)).astimezone(timezone(timedelta(hours=-3)))
    found = r.CartPositionIn.model_validate_json(json.dumps(position(recorded_at=santiago.isoformat())))
    assert found.recorded_at == santiago and found.recorded_at.utcoffset() == timedelta(hours=-3)
    assert errors(r.CartPositionIn, position(recorded_at="yesterday")) == {
        "recorded_at": "datetime_from_date_parsing"
    }


# --- whole bodies --------------------------------------------------------------------------------------


def test_spanish_aliases_are_accepted_everywhere():
    applied = r.MemberApplicationIn.model_validate_json(
        json.dumps(
            {"nombre": "Ana", "apellido": "Soto", "rut": "1-9", "correo": "a@b.cl", "patente": "ab1234"}
        )
    )
    assert (applied.first_name, applied.last_name, applied.email, applied.plate, applied.premium) == (
        "Ana", "Soto", "a@b.cl", "AB1234", False,
    )  # fmt: skip
    sold = r.SaleIn.model_validate_json(
        json.dumps({"patente": "bbcl12", "cliente": "x", "cantidad": 3, "hora": NOW.isoformat(), "stock": 7,
                    "ubicacion": {"lat": -33.4, "lon": -70.6}})
    )  # fmt: skip
    assert (sold.plate, sold.client, sold.quantity, sold.sold_at, sold.stock_remaining, sold.location.lat) == (
        "BBCL12", "x", 3, NOW, 7, -33.4,
    )  # fmt: skip
    pinged = r.CartPositionIn.model_validate_json(
        json.dumps({"patente": "BBCL12", "lat": -33.4, "lon": -70.6, "hora": NOW.isoformat()})
    )
    assert pinged.recorded_at == NOW
    reported = r.FugitiveReportIn.model_validate_json(
        json.dumps({"lat": -33.4, "lon": -70.6, "patente": "bb-cl-12"})
    )
    assert reported.plate == "BBCL12"


def test_errors_name_the_field_as_the_client_wrote_it():
    found = errors(r.SaleIn, without(sale(), "quantity") | {"cantidad": 0})
    assert found == {"cantidad": "greater_than_equal"}
    assert "ubicacion.lat" in errors(
        r.SaleIn, without(sale(), "location") | {"ubicacion": {"lat": 91, "lon": -70}}
    )


def without(body: dict, field: str) -> dict:
    return {k: v for k, v in body.items() if k != field}


def test_missing_and_unknown_fields_are_each_named():
    assert errors(r.SaleIn, {"plate": "BBCL12", "speed": 3}) == {
        "client": "missing", "quantity": "missing", "stock_remaining": "missing", "location": "missing",
        "speed": "extra_forbidden",
    }  # fmt: skip


def test_every_bad_member_field_is_reported_at_once():
    found = errors(
        r.MemberApplicationIn, member(rut="1-1", email="x", plate="?", first_name=" ", premium="yes")
    )
    assert set(found) == {"rut", "email", "plate", "first_name", "premium"}


def test_premium_must_be_a_real_boolean():
    assert r.MemberApplicationIn.model_validate_json(json.dumps(member(premium=True))).premium is True
    for fuzzy in ("yes", 1, "true", None):
        assert "premium" in errors(r.MemberApplicationIn, member(premium=fuzzy))


def test_report_fields_are_optional_but_bounded():
    bare = r.FugitiveReportIn.model_validate_json('{"lat": -33.4, "lon": -70.6}')
    assert (bare.description, bare.plate) == (None, None)
    r.FugitiveReportIn.model_validate_json(json.dumps({"lat": -33.4, "lon": -70.6, "description": "x" * 500}))
    assert "description" in errors(r.FugitiveReportIn, {"lat": -33.4, "lon": -70.6, "description": "x" * 501})
    assert "plate" in errors(r.FugitiveReportIn, {"lat": -33.4, "lon": -70.6, "plate": "nope"})


def test_batches_hold_1_to_max_batch_items_raw_sales():
    r.SaleBatchIn.model_validate_json(json.dumps({"sales": [sale()] * 500}))
    assert errors(r.SaleBatchIn, {"sales": [sale()] * 501}) == {"sales": "value_error"}
    assert errors(r.SaleBatchIn, {"sales": []}) == {"sales": "too_short"}
    assert errors(r.SaleBatchIn, {"sales": [sale()] * 11}, max_batch_items=10) == {"sales": "value_error"}
    assert errors(r.SaleBatchIn, {"sales": [sale()], "plate": "BBCL12"}) == {"plate": "extra_forbidden"}
    # Items are checked one by one later, so one bad item does not sink the envelope.
    assert (
        r.SaleBatchIn.model_validate_json(json.dumps({"sales": [sale(), 7, {"quantity": 0}]})).sales[1] == 7
    )


# --- records ----------------------------------------------------------------------------------------------


def test_requests_become_records_with_the_api_fields():
    received = NOW
    id_ = uuid.uuid4()
    sold = r.sale(r.SaleIn.model_validate(sale()), id_, received)
    assert (sold.id, sold.sold_at, sold.received_at, sold.lat, sold.lon) == (
        id_,
        received,
        received,
        -33.44,
        -70.65,
    )
    earlier = NOW - timedelta(minutes=10)
    assert r.sale(r.SaleIn.model_validate(sale(sold_at=earlier)), id_, received).sold_at == earlier
    pinged = r.cart_position(r.CartPositionIn.model_validate(position()), id_, received)
    assert pinged.recorded_at == received
    applied = r.member_application(r.MemberApplicationIn.model_validate(member(premium=True)), id_, received)
    assert (applied.rut, applied.premium) == ("12345678-5", True)
    reported = r.fugitive_report(
        r.FugitiveReportIn.model_validate({"lat": -33.4, "lon": -70.6}), id_, received
    )
    assert reported.plate is None


def test_records_round_trip_as_utf8_json_with_their_type_name():
    applied = r.member_application(
        r.MemberApplicationIn.model_validate(member(first_name="Ñandú")), uuid.uuid4(), NOW
    )
    raw = applied.to_bytes()
    assert "Ñandú".encode() in raw
    assert r.MemberApplication.from_bytes(raw) == applied
    assert {name: cls.type_name for name, cls in r.RECORD_TYPES.items()} == {
        name: name for name in r.RECORD_TYPES
    }


def test_ids_derive_from_the_idempotency_key_within_a_scope():
    assert r.derive_id("k1", "/v1/sales", "BBCL12") == r.derive_id("k1", "/v1/sales", "BBCL12")
    assert r.derive_id("k1", "/v1/sales", "BBCL12").version == 5
    assert r.derive_id("k1", "/v1/sales", "BBCL12") != r.derive_id("k1", "/v1/sales", "BBCL13")
    assert r.derive_id("k1", "/v1/sales", "BBCL12") != r.derive_id("k2", "/v1/sales", "BBCL12")
    assert r.derive_id("k1", "/v1/locations", "BBCL12") != r.derive_id("k1", "/v1/sales", "BBCL12")
    fresh = r.derive_id(None, "/v1/sales")
    assert fresh.version == 4 and fresh != r.derive_id(None, "/v1/sales")


# --- hostile text (issue 12: accepted means processable) -----------------------------------------------

HOSTILE = [
    ("\x00", "control character U+0000"),
    ("\x07", "control character U+0007"),
    ("\x7f", "control character U+007F"),
    ("\x85", "control character U+0085"),
    ("\x9b", "control character U+009B"),
    ("\u202e", "invisible format character U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("\u2066", "invisible format character U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    ("\u200b", "invisible format character U+200B (ZERO WIDTH SPACE)"),
    ("\u200d", "invisible format character U+200D (ZERO WIDTH JOINER)"),
    ("\ufeff", "invisible format character U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    ("\u00ad", "invisible format character U+00AD (SOFT HYPHEN)"),
    ("\u2028", "line separator U+2028 (LINE SEPARATOR)"),
    ("\u2029", "paragraph separator U+2029 (PARAGRAPH SEPARATOR)"),
    ("\ud800", "lone surrogate U+D800"),
]

_ID = uuid.UUID(int=1)
_RECORDS = {
    r.MemberApplication: {**member(), "id": _ID, "premium": False, "received_at": NOW},
    r.Sale: {
        "id": _ID, "plate": "BBCL12", "client": "ana", "quantity": 2, "sold_at": NOW, "stock_remaining": 5,
        "lat": -33.4, "lon": -70.6, "received_at": NOW,
    },
    r.CartPosition: {**position(), "id": _ID, "recorded_at": NOW, "received_at": NOW},
    r.FugitiveReport: {"id": _ID, "lat": -33.4, "lon": -70.6, "description": "x", "plate": "BBCL12",
                       "received_at": NOW},
}  # fmt: skip
# Every text field of every model that has one, with a valid body to put it in.
TEXT_FIELDS = [
    *((r.MemberApplicationIn, member(), f) for f in ("first_name", "last_name", "rut", "email", "plate")),
    *((r.SaleIn, sale(), f) for f in ("plate", "client")),
    (r.CartPositionIn, position(), "plate"),
    *((r.FugitiveReportIn, {"lat": -33.4, "lon": -70.6, "description": "x", "plate": "BBCL12"}, f)
      for f in ("description", "plate")),
    *((model, body, f) for model, body in _RECORDS.items()
      for f in ("first_name", "last_name", "rut", "email", "plate", "client", "description") if f in body),
]  # fmt: skip


def _spliced(field: str, value: str, char: str) -> str:
    """`char` hidden inside a valid value (for an email: in the local part)."""
    if field == "email":
        return value.replace("@", f"{char}@", 1)
    return value[:1] + char + value[1:]


@pytest.mark.parametrize(("char", "said"), HOSTILE, ids=[f"U+{ord(c):04X}" for c, _ in HOSTILE])
@pytest.mark.parametrize(
    ("model", "body", "field"), TEXT_FIELDS, ids=[f"{m.__name__}.{f}" for m, _, f in TEXT_FIELDS]
)
def test_hidden_characters_are_refused_in_every_text_field(model, body, field, char, said):
    hostile = {**body, field: _spliced(field, body[field], char)}
    with pytest.raises(ValidationError) as caught:
        model.model_validate(hostile)
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert said in error["msg"]
    # The message names the character, never the text it was hidden in.
    assert body[field] not in error["msg"] or field in ("rut", "plate")


@pytest.mark.parametrize(("char", "said"), [h for h in HOSTILE if h[0] != "\ud800"])
def test_hidden_characters_sent_as_json_escapes_are_refused_too(char, said):
    raw = json.dumps(member(first_name=f"A{char}na"))  # ensure_ascii: "\u202e", "\u0000"
    assert errors(r.MemberApplicationIn, json.loads(raw)) == {"first_name": "value_error"}
    with pytest.raises(ValidationError, match=re.escape(said)):
        r.MemberApplicationIn.model_validate_json(raw)


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\udc00y", "\\ud83d"])
def test_a_lone_surrogate_in_json_is_invalid_json_never_a_stored_string(escape):
    # pydantic-core (jiter) refuses a lone surrogate escape while parsing, before any field
    # validator: the API answers 400 "not valid JSON". A paired one is a real character.
    raw = json.dumps(member()).replace('"Ana"', f'"{escape}"')
    with pytest.raises(ValidationError) as caught:
        r.MemberApplicationIn.model_validate_json(raw)
    assert [e["type"] for e in caught.value.errors()] == ["json_invalid"]
    with pytest.raises(ValidationError):
        r.MemberApplication.model_validate_json(
            r.member_application(r.MemberApplicationIn.model_validate(member()), _ID, NOW)
            .to_bytes()
            .replace(b'"Ana"', f'"{escape}"'.encode())
        )
    paired = r.MemberApplicationIn.model_validate_json(
        json.dumps(member()).replace('"Ana"', '"\\ud83d\\ude00"')
    )
    assert paired.first_name == "\U0001f600"


def test_a_record_on_a_topic_carrying_nul_is_poison():
    from gremio.runner import Poison, decode

    good = r.sale(r.SaleIn.model_validate(sale()), _ID, NOW).to_bytes()

    class Message:
        def __init__(self, value: bytes) -> None:
            self._value = value

        def headers(self):
            return [("type", b"Sale")]

        def value(self):
            return self._value

    assert decode(Message(good), r.RECORD_TYPES).client == "ana"
    for hostile in (b'"ana\\u0000"', b'"ana\\u202e"', b'"ana\\ud800"', b'"\\u00e1\\u0085"'):
        with pytest.raises(Poison, match=r"client|JSON"):
            decode(Message(good.replace(b'"ana"', hostile)), r.RECORD_TYPES)


def test_text_is_nfc_and_trimmed():
    assert r.normalize_name("Jose\u0301") == "José"
    assert r.normalize_client("  Jose\u0301 Pe\u0301rez\u3000") == "José Pérez"
    assert r.normalize_email(" jose\u0301@example.cl ") == "josé@example.cl"
    assert r.normalize_description("  nin\u0303o  ") == "niño"
    for text in ("e\u0301", "\u212b", "\u1e9b\u0323"):  # decomposed, a singleton, a canonical reordering
        assert r.normalize_client(text) == unicodedata.normalize("NFC", text)
    body = r.SaleIn.model_validate_json(json.dumps(sale(client=" Cafe\u0301 17 ")))
    assert body.client == "Café 17"
    assert r.sale(body, _ID, NOW).client == "Café 17"
    assert "client" in errors(r.SaleIn, sale(client=" \u00a0 "))
    assert r.normalize_client("x" * 80 + "   ") == "x" * 80


def test_names_collapse_spaces_but_refuse_tabs_and_newlines():
    assert r.normalize_name(" Ana \u00a0  María ") == "Ana María"
    for typed in ("Ana\tMaría", "Ana\nMaría", "Ana\r\nMaría", "Ana\x0bMaría", "Ana\x1fMaría"):
        with pytest.raises(ValueError, match="control character"):
            r.normalize_name(typed)


def test_a_description_folds_whitespace_from_a_textarea_and_refuses_other_controls():
    folded = r.FugitiveReportIn.model_validate_json(
        json.dumps({"lat": -33.4, "lon": -70.6, "description": "  carro\r\nsin\tcredencial\n\n  aquí  "})
    )
    assert folded.description == "carro sin credencial aquí"
    assert r.normalize_description("x" * 500 + "\n\n") == "x" * 500
    r.FugitiveReportIn.model_validate({"lat": -33.4, "lon": -70.6, "description": "x" * 250 + "\n" * 300})
    for hostile in ("a\x00b", "a\x0bb", "a\x0cb", "a\x1bb", "a\x85b", "a\u2028b", "a\u202eb"):
        assert errors(r.FugitiveReportIn, {"lat": -33.4, "lon": -70.6, "description": hostile}) == {
            "description": "value_error"
        }


def test_text_that_is_not_a_string_is_refused():
    for normalize in (r.normalize_name, r.normalize_client, r.normalize_description, r.normalize_email):
        for value in (None, 7, b"ana", ["ana"]):
            with pytest.raises(ValueError, match="must be a string"):
                normalize(value)


# --- RUT and plate are ASCII -----------------------------------------------------------------------------

RUT_SPELLINGS = [
    "12345678-5", "12.345.678-5", "123456785", "12 345 678-5", " 12.345.678 - 5 ", "012.345.678-5",
    "0000012345678-5", "１２.３４５.６７８-５", "１２３４５６７８－５", "١٢٣٤٥٦٧٨-٥", "۱۲۳۴۵۶۷۸-۵",
    "१२३४५६७८-५", "12\u00a0345\u00a0678-5", "12.345.678-\uff15", "CL12345678-5", "12345678-5.",
]  # fmt: skip
K_SPELLINGS = ["10.000.013-K", "10000013-k", "10000013K", "１０００００１３－ｋ", "10.000.013-\uff2b", "10000013\u212a"]  # fmt: skip
REFUSED_RUTS = [
    "12.345.678-5\n", "12\t345678-5", "12345678\x00-5", "12.345.678\u200b-5", "\ufeff12345678-5",
    "12,345,678-5", "12·345·678-5", "12345678–5", "12345678-\u0130", "12345678-ß",
    "\u202e5-87654321", "12345678-5 x",
]  # fmt: skip


@pytest.mark.parametrize("spelling", RUT_SPELLINGS)
def test_every_spelling_of_a_rut_is_stored_the_same_way(spelling):
    assert r.normalize_rut(spelling) == "12345678-5"


@pytest.mark.parametrize("spelling", K_SPELLINGS)
def test_every_spelling_of_a_k_check_digit_is_an_upper_case_k(spelling):
    assert r.normalize_rut(spelling) == "10000013-K"


@pytest.mark.parametrize("spelling", REFUSED_RUTS)
def test_a_rut_spelled_any_other_way_is_refused(spelling):
    with pytest.raises(ValueError, match=r"not a RUT|contains the|wrong check digit"):
        r.normalize_rut(spelling)


def test_stored_ruts_are_ascii_digits_a_dash_and_a_check_digit():
    for spelling in RUT_SPELLINGS + K_SPELLINGS + ["1-9", "00000001-9", "999.999-K"]:
        assert re.fullmatch(r"[1-9][0-9]{0,7}-[0-9K]", r.normalize_rut(spelling)), spelling


@pytest.mark.parametrize(
    ("written", "normalized"),
    [("ＡＢ１２３４", "AB1234"), ("ｂｂｃｌ１２", "BBCL12"), ("ab-١٢٣٤", "AB1234"), ("BBCL١٢", "BBCL12"),
     ("BB－CL－12", "BBCL12"), ("AB\u00a01234", "AB1234"), ("AB\u30001234", "AB1234")],
)  # fmt: skip
def test_fullwidth_and_other_script_plates_fold_to_ascii(written, normalized):
    assert r.normalize_plate(written) == normalized


@pytest.mark.parametrize(
    "plate",
    ["ßBCL12", "BBCß12", "ıB1234", "Ab1234\u0307", "ΑΒ1234", "АВ1234", "BBCL12\n", "BBCL12\r\n", "\nBBCL12",
     "BB\tCL12", "BBCL\x0012", "BB\u200bCL12", "BBCL12\u2028", "BBCL\u00b912"],
)  # fmt: skip
def test_plates_that_only_look_ascii_are_refused(plate):
    with pytest.raises(ValueError, match=r"not a Chilean plate|contains the"):
        r.normalize_plate(plate)


def test_the_sharp_s_and_dotless_i_are_refused_before_upper_casing():
    # "ßb1234".upper() == "SSB1234" and "ıb1234".upper() == "IB1234": either would pass.
    for plate, char in (("ßS1234", "U+00DF"), ("ıB1234", "U+0131")):
        with pytest.raises(ValueError, match=re.escape(char)):
            r.normalize_plate(plate)
    assert "plate" in errors(r.CartPositionIn, position(plate="BBCL12\n"))


# --- how old a time may be ---------------------------------------------------------------------------------


def test_times_up_to_max_age_days_old_are_accepted_and_7_days_is_the_default():
    now = datetime.now(UTC)
    for age in (timedelta(days=6, hours=23), timedelta(days=1)):
        r.SaleIn.model_validate_json(json.dumps(sale(sold_at=(now - age).isoformat())))
        r.CartPositionIn.model_validate_json(json.dumps(position(recorded_at=(now - age).isoformat())))
    old = (now - timedelta(days=7, minutes=1)).isoformat()
    assert errors(r.SaleIn, sale(sold_at=old)) == {"sold_at": "value_error"}
    assert errors(r.CartPositionIn, position(recorded_at=old)) == {"recorded_at": "value_error"}


def test_the_age_limit_comes_from_the_validation_context_and_the_message_says_it():
    now = datetime.now(UTC)
    three_days = (now - timedelta(days=3)).isoformat()
    assert errors(r.SaleIn, sale(sold_at=three_days), max_age_days=2) == {"sold_at": "value_error"}
    r.SaleIn.model_validate_json(json.dumps(sale(sold_at=three_days)), context={"max_age_days": 4})
    with pytest.raises(ValidationError, match="is more than 2 days old; the oldest sale the guild accepts"):
        r.SaleIn.model_validate_json(json.dumps(sale(sold_at=three_days)), context={"max_age_days": 2})
    with pytest.raises(
        ValidationError, match="is more than 2 days old; the oldest position the guild accepts"
    ):
        r.CartPositionIn.model_validate_json(
            json.dumps(position(recorded_at=three_days)), context={"max_age_days": 2}
        )


def test_records_of_any_age_still_decode():
    # A drain or a replay reads records days after the API accepted them.
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    fields = {**_RECORDS[r.Sale], "sold_at": long_ago, "received_at": long_ago}
    assert r.Sale.from_bytes(r.Sale(**fields).to_bytes()).sold_at == long_ago
    fields = {**_RECORDS[r.CartPosition], "recorded_at": long_ago, "received_at": long_ago}
    assert r.CartPosition.from_bytes(r.CartPosition(**fields).to_bytes()).recorded_at == long_ago


def test_the_setting_is_sales_max_age_days(monkeypatch):
    from gremio.settings import Settings

    assert Settings().sales_max_age_days == 7
    monkeypatch.setenv("SALES_MAX_AGE_DAYS", "10")
    assert Settings().sales_max_age_days == 10


# --- the text rules' fast path --------------------------------------------------------------


def _clean_text_reference(value: str, collapse: bool = False, fold_whitespace: bool = False) -> str:
    """clean_text as it was before its printable-ASCII fast path: every character checked."""
    for char in value:
        refused = r._REFUSED_CATEGORIES.get(unicodedata.category(char))
        if refused and not (fold_whitespace and char in r._TYPED_WHITESPACE):
            raise ValueError(f"contains the {refused} {r._describe(char)}")
    text = unicodedata.normalize("NFC", value)
    return " ".join(text.split()) if collapse or fold_whitespace else text.strip()


def _ascii_fold_reference(value: str) -> str:
    """ascii_fold as it was before its ASCII fast path (a plate's separators)."""
    text = unicodedata.normalize("NFKC", _clean_text_reference(value))
    text = "".join(
        str(unicodedata.decimal(c)) if not c.isascii() and unicodedata.category(c) == "Nd" else c
        for c in text
    )
    text = r._PLATE_SEPARATORS.sub("", text)
    if not text.isascii():
        raise ValueError("not ASCII")
    return text


def _outcome(function, *args, **kwargs) -> tuple[str, str]:
    try:
        return "ok", function(*args, **kwargs)
    except ValueError as exc:
        return "refused", str(exc) if function is not _ascii_fold_reference else ""


# Any text a stranger could send: every code point but the lone surrogates JSON cannot carry
# as UTF-8 (they are tested by name above), with printable ASCII over-weighted.
TEXT = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40),
    st.text(alphabet=st.sampled_from(" \t\n\r\x00\x7f\u200b\u2028\u00a0ＡＢ１٢Kﬁé\u0301-.·"), max_size=20),
)


@settings(max_examples=600, deadline=None)
@given(TEXT, st.booleans(), st.booleans())
def test_clean_text_decides_as_checking_every_character_does(value, collapse, fold_whitespace):
    fast = _outcome(r.clean_text, value, collapse=collapse, fold_whitespace=fold_whitespace)
    assert fast == _outcome(_clean_text_reference, value, collapse, fold_whitespace)


@settings(max_examples=600, deadline=None)
@given(TEXT)
def test_ascii_fold_decides_as_folding_every_character_does(value):
    try:
        fast = ("ok", r.ascii_fold(value, "Chilean plate", r._PLATE_SEPARATORS))
    except ValueError:
        fast = ("refused", "")
    assert fast == _outcome(_ascii_fold_reference, value)
