"""Record schemas: the single truth for the API, the consumers and the DAGs (DESIGN §3).

Each Kafka record type is a pydantic model whose class name is the value of the `type`
header. The API's request bodies are the `*In` models: the same field types, plus the
Spanish aliases, without the fields the API assigns (`id`, `received_at`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, Self

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from stdnum import exceptions as stdnum_errors
from stdnum.cl import rut as stdnum_rut

# Namespace for ids derived from a client's Idempotency-Key (UUIDv5).
ID_NAMESPACE = uuid.UUID("6f0b7a52-3c1e-5d8e-9a51-5e0c1a9d2b7f")

OLD_PLATE = re.compile(r"^[A-Z]{2}[0-9]{4}$")
NEW_PLATE = re.compile(r"^[BCDFGHJKLPRSTVWXYZ]{4}[0-9]{2}$")
_PLATE_SEPARATORS = re.compile(r"[\s\-\.·•_]+")
_RUT_BODY = re.compile(r"[1-9][0-9]{0,7}")
_RUT_CHECK = re.compile(r"[0-9K]")


# --- field-level normalizers ------------------------------------------------------------

# What no text field may hold (DESIGN §3): characters that are invisible, that reorder or
# break the text around them, or that no UTF-8 encoder can write. By Unicode category.
_REFUSED_CATEGORIES = {
    "Cc": "control character",  # C0, DEL and C1, NUL included
    "Cs": "lone surrogate",  # cannot be encoded as UTF-8
    "Cf": "invisible format character",  # bidi overrides and isolates, zero-width, BOM, soft hyphen...
    "Zl": "line separator",  # U+2028
    "Zp": "paragraph separator",  # U+2029
}
# What a phone textarea types between words: folded into one space where allowed.
_TYPED_WHITESPACE = frozenset("\t\n\r")


def _describe(char: str) -> str:
    """`U+202E (RIGHT-TO-LEFT OVERRIDE)`: the character named, never the text around it."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def clean_text(value: Any, *, collapse: bool = False, fold_whitespace: bool = False) -> str:
    """Text as every field keeps it: checked, NFC, trimmed.

    Refuses control characters, lone surrogates, invisible format characters and the
    line/paragraph separators, naming the first one found. `collapse` also turns each
    inner run of whitespace into one space; `fold_whitespace` does that too and lets tab,
    CR and LF through first (they are folded away), for text typed in a textarea.
    """
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if value.isascii() and value.isprintable():
        # The usual case, at no per-character cost: printable ASCII has none of the refused
        # characters (each of them is non-printable) and is its own NFC.
        text = value
    else:
        for char in value:
            refused = _REFUSED_CATEGORIES.get(unicodedata.category(char))
            if refused and not (fold_whitespace and char in _TYPED_WHITESPACE):
                raise ValueError(f"contains the {refused} {_describe(char)}")
        text = unicodedata.normalize("NFC", value)
    if collapse or fold_whitespace:
        return " ".join(text.split())
    return text.strip()


def ascii_fold(value: Any, what: str, separators: re.Pattern[str] | None = None) -> str:
    """An identifier (RUT, plate) as ASCII: NFKC, other-script decimal digits as 0-9, else refused.

    NFKC folds the fullwidth forms a phone keyboard may type ('ＡＢ１２３４'); digits of
    other scripts ('١٢') become ASCII digits; `separators` are then removed. Whatever is
    still not ASCII is refused, before any case mapping (upper() would turn 'ß' into 'SS'
    and 'ı' into 'I').
    """
    text = clean_text(value)
    if text.isascii():  # NFKC and the digit folding leave ASCII as it is
        return separators.sub("", text) if separators is not None else text
    text = unicodedata.normalize("NFKC", text)
    text = "".join(
        str(unicodedata.decimal(c)) if not c.isascii() and unicodedata.category(c) == "Nd" else c
        for c in text
    )
    if separators is not None:
        text = separators.sub("", text)
    for char in text:
        if not char.isascii():
            raise ValueError(f"is not a {what}: it contains the non-ASCII character {_describe(char)}")
    return text


def normalize_plate(value: Any) -> str:
    """Upper case without separators, and one of the two Chilean plate formats."""
    if not isinstance(value, str):
        raise ValueError("plate must be a string such as 'BBCL12' or 'AB1234'")
    plate = ascii_fold(value, "Chilean plate", _PLATE_SEPARATORS).upper()
    if not (OLD_PLATE.fullmatch(plate) or NEW_PLATE.fullmatch(plate)):
        raise ValueError(
            f"{value!r} is not a Chilean plate: expected two letters and four digits "
            "(AB1234) or four consonants and two digits (BBCL12)"
        )
    return plate


def normalize_rut(value: Any) -> str:
    """The RUT as `12345678-5`: digits, a dash and the modulo-11 check digit."""
    if not isinstance(value, str):
        raise ValueError("rut must be a string such as '12.345.678-5'")
    compact = stdnum_rut.compact(ascii_fold(value, "RUT"))
    body, check = compact[:-1].lstrip("0"), compact[-1:]
    if not _RUT_BODY.fullmatch(body) or not _RUT_CHECK.fullmatch(check):
        raise ValueError(f"{value!r} is not a RUT: expected digits, a dash and a check digit")
    try:
        if len(body) >= 7:
            # stdnum checks 8- and 9-character RUTs itself.
            stdnum_rut.validate(body + check)
        elif stdnum_rut.calc_check_digit(body) != check:
            # stdnum refuses bodies under 1,000,000 by length; they are still valid RUTs.
            raise stdnum_errors.InvalidChecksum()
    except stdnum_errors.InvalidChecksum:
        raise ValueError(f"{value!r} has a wrong check digit") from None
    except stdnum_errors.ValidationError as exc:
        raise ValueError(f"{value!r} is not a RUT: {exc.message}") from None
    return f"{body}-{check}"


def normalize_email(value: Any) -> str:
    """An email address checked and normalized by email-validator (no DNS lookups).

    The text rules run first, on what was sent, so a hidden character gets the same error as
    in any other field; email-validator then checks and normalizes the trimmed address.
    """
    if not isinstance(value, str):
        raise ValueError("email must be a string")
    try:
        return validate_email(clean_text(value), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


def _length_1_to_80(text: str) -> str:
    if not 1 <= len(text) <= 80:
        raise ValueError("must be 1 to 80 characters after trimming")
    return text


def normalize_name(value: Any) -> str:
    """A name, trimmed, each inner run of spaces as one; a tab or a newline in a name is refused."""
    return _length_1_to_80(clean_text(value, collapse=True))


def normalize_client(value: Any) -> str:
    """The client as the cart wrote them, trimmed and NFC; they are compared lower-cased too."""
    return _length_1_to_80(clean_text(value))


def normalize_description(value: Any) -> str:
    """A report's description: typed in a phone's textarea, so line breaks and tabs fold into spaces."""
    return clean_text(value, fold_whitespace=True)


def client_key(client: str) -> str:
    """How two client identifiers are compared (DESIGN §3)."""
    return client.strip().lower()


def derive_id(idempotency_key: str | None, *scope: str) -> uuid.UUID:
    """UUIDv5 of the client's Idempotency-Key within a scope, or a fresh UUIDv4."""
    if idempotency_key is None:
        return uuid.uuid4()
    return uuid.uuid5(ID_NAMESPACE, "\x1f".join((*scope, idempotency_key)))


def body_digest(body: BaseModel) -> str:
    """SHA-256 of a validated request body in its canonical form (normalized fields, JSON).

    Part of a derived id's scope: a retry of the same request (even spelled differently,
    "ab-1234" for "AB1234") keeps its id, and two different requests that happen to send
    the same Idempotency-Key never share one (DESIGN §4, idempotency).
    """
    return hashlib.sha256(body.model_dump_json().encode("utf-8")).hexdigest()


def request_id(idempotency_key: str | None, path: str, body: BaseModel, *scope: str) -> uuid.UUID:
    """The id of the record a request makes: fresh without a key, else derived from
    (path, scope, the body's digest, the key), so only a retry of the same request shares it."""
    if idempotency_key is None:
        return uuid.uuid4()
    return derive_id(idempotency_key, path, *scope, body_digest(body))


def now_utc() -> datetime:
    return datetime.now(UTC)


def _schema(description: str, example: str, **schema: Any) -> WithJsonSchema:
    """The OpenAPI schema of a normalized string (what clients may send, with an example)."""
    return WithJsonSchema({"type": "string", "description": description, "examples": [example], **schema})


# The "cl-plate" and "cl-rut" formats are annotations for readers (and for the fuzzer's
# generators); validators ignore formats they do not know.
Plate = Annotated[
    str,
    BeforeValidator(normalize_plate),
    _schema(
        "Chilean plate, AB1234 or BBCL12; case and separators are normalized", "BBCL12", format="cl-plate"
    ),
]
Rut = Annotated[
    str,
    BeforeValidator(normalize_rut),
    _schema("RUT with its modulo-11 check digit; normalized to 12345678-5", "12.345.678-5", format="cl-rut"),
]
Email = Annotated[
    str, BeforeValidator(normalize_email), _schema("email address", "ana@example.cl", format="email")
]
PersonName = Annotated[
    str, BeforeValidator(normalize_name), _schema("1 to 80 characters after trimming", "Ana", minLength=1)
]
Client = Annotated[
    str,
    BeforeValidator(normalize_client),
    _schema("the client as the cart knows them, trimmed; compared lower-cased", "cliente-017", minLength=1),
]
# Strict: a JSON number only (true or "-33.4" is a client bug, not a coordinate).
Latitude = Annotated[float, Field(strict=True, ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(strict=True, ge=-180, le=180, allow_inf_nan=False)]
Quantity = Annotated[int, Field(strict=True, ge=1, le=1000)]
Stock = Annotated[int, Field(strict=True, ge=0, le=10000)]
Timestamp = AwareDatetime
Description = Annotated[
    str,
    Field(max_length=500),
    BeforeValidator(normalize_description),
    _schema(
        "at most 500 characters; line breaks and tabs become spaces", "carro sin credencial", maxLength=500
    ),
]


def _alias(name: str, spanish: str | None = None) -> Any:
    return AliasChoices(name, spanish) if spanish else AliasChoices(name)


def _has_fix(lon: float, info: ValidationInfo) -> float:
    """(0, 0) is what a GPS without a fix reports; checked on `lon` so the error names a field."""
    if lon == 0 and info.data.get("lat") == 0:
        raise ValueError("lat and lon are both 0: (0, 0) is not a position in Chile, the GPS has no fix")
    return lon


def _not_in_future(value: datetime | None, info: ValidationInfo) -> datetime | None:
    """Times may run at most `max_future_seconds` ahead of the server's clock."""
    if value is None:
        return value
    allowed = (info.context or {}).get("max_future_seconds", 300)
    if value - now_utc() > timedelta(seconds=allowed):
        raise ValueError(f"is more than {allowed} s in the future")
    return value


# What each time field dates, for the too-old message.
_DATES = {"sold_at": "sale", "recorded_at": "position"}


def _not_too_old(value: datetime | None, info: ValidationInfo) -> datetime | None:
    """Times may lie at most `max_age_days` (SALES_MAX_AGE_DAYS) behind the server's clock.

    Only the API's request models check this: a record already on a topic must still
    decode when a drain or a replay reads it days later.
    """
    if value is None:
        return value
    days = (info.context or {}).get("max_age_days", 7)
    if now_utc() - value > timedelta(days=days):  # no date arithmetic near year 1: no OverflowError
        what = _DATES.get(info.field_name or "", "time")
        raise ValueError(
            f"is more than {days} days old; the oldest {what} the guild accepts is {days} days old"
            " (SALES_MAX_AGE_DAYS)"
        )
    return value


# --- bases ---------------------------------------------------------------------------------


class InputModel(BaseModel):
    """A request body: unknown fields are errors, Spanish aliases are accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=False)


class Record(BaseModel):
    """A record on a topic: JSON in UTF-8, its class name in the `type` header."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = cls.__name__

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_bytes(cls, value: bytes) -> Self:
        return cls.model_validate_json(value)


# --- inputs ----------------------------------------------------------------------------------


class Location(InputModel):
    lat: Latitude
    lon: Longitude

    _fix = field_validator("lon")(_has_fix)


class MemberApplicationIn(InputModel):
    """A request to join the guild (POST /v1/members)."""

    first_name: PersonName = Field(validation_alias=_alias("first_name", "nombre"))
    last_name: PersonName = Field(validation_alias=_alias("last_name", "apellido"))
    rut: Rut
    email: Email = Field(validation_alias=_alias("email", "correo"))
    plate: Plate = Field(validation_alias=_alias("plate", "patente"))
    premium: StrictBool = False


class SaleIn(InputModel):
    """A sale as a cart sends it (POST /v1/sales, and each item of /v1/sales/batch)."""

    plate: Plate = Field(validation_alias=_alias("plate", "patente"))
    client: Client = Field(validation_alias=_alias("client", "cliente"))
    quantity: Quantity = Field(validation_alias=_alias("quantity", "cantidad"))
    sold_at: Timestamp | None = Field(default=None, validation_alias=_alias("sold_at", "hora"))
    stock_remaining: Stock = Field(validation_alias=_alias("stock_remaining", "stock"))
    location: Location = Field(validation_alias=_alias("location", "ubicacion"))

    _future = field_validator("sold_at")(_not_in_future)
    _old = field_validator("sold_at")(_not_too_old)


class SaleBatchIn(InputModel):
    """Sales a cart recorded while offline (POST /v1/sales/batch)."""

    # Items stay raw here: each is validated as a SaleIn on its own, so one bad sale gets
    # its own error instead of sinking the batch. The limit is the validation context's
    # "max_batch_items" (the MAX_BATCH_ITEMS setting), 500 by default.
    sales: list[Any] = Field(min_length=1, json_schema_extra={"maxItems": 500})

    @field_validator("sales")
    @classmethod
    def _at_most_max_items(cls, sales: list[Any], info: ValidationInfo) -> list[Any]:
        limit = (info.context or {}).get("max_batch_items", 500)
        if len(sales) > limit:
            raise ValueError(f"at most {limit} sales per batch, got {len(sales)}")
        return sales


class CartPositionIn(InputModel):
    """A cart's position ping (POST /v1/locations)."""

    plate: Plate = Field(validation_alias=_alias("plate", "patente"))
    lat: Latitude
    lon: Longitude
    recorded_at: Timestamp | None = Field(default=None, validation_alias=_alias("recorded_at", "hora"))

    _future = field_validator("recorded_at")(_not_in_future)
    _old = field_validator("recorded_at")(_not_too_old)
    _fix = field_validator("lon")(_has_fix)


class FugitiveReportIn(InputModel):
    """Anyone's report of a cart working outside the guild (POST /v1/reports)."""

    lat: Latitude
    lon: Longitude
    description: Description | None = None
    plate: Plate | None = Field(default=None, validation_alias=_alias("plate", "patente"))

    _fix = field_validator("lon")(_has_fix)


# --- records -----------------------------------------------------------------------------------


class MemberApplication(Record):
    id: uuid.UUID
    first_name: PersonName
    last_name: PersonName
    rut: Rut
    email: Email
    plate: Plate
    premium: StrictBool
    received_at: Timestamp


class Sale(Record):
    id: uuid.UUID
    plate: Plate
    client: Client
    quantity: Quantity
    sold_at: Timestamp
    stock_remaining: Stock
    lat: Latitude
    lon: Longitude
    received_at: Timestamp


class CartPosition(Record):
    id: uuid.UUID
    plate: Plate
    lat: Latitude
    lon: Longitude
    recorded_at: Timestamp
    received_at: Timestamp


class FugitiveReport(Record):
    id: uuid.UUID
    lat: Latitude
    lon: Longitude
    description: Description | None = None
    plate: Plate | None = None
    received_at: Timestamp


class ReplenishmentOrder(Record):
    id: uuid.UUID
    plate: Plate
    sale_id: uuid.UUID
    stock_at_trigger: Stock
    quantity: int = Field(ge=1)
    created_at: Timestamp


# The location service's four; Airflow's: members_premium's premium_pending and sales_daily's
# deadline alert report_late; and the monitor's ops, Alertmanager's notifications (gremio/monitor.py).
# The last three have no plate and no position.
AlertKind = Literal[
    "jump", "out_of_area", "unregistered_cart", "fugitive_report", "premium_pending", "report_late", "ops"
]


class Alert(Record):
    id: uuid.UUID
    kind: AlertKind
    plate: Plate | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    detail: str
    created_at: Timestamp


RECORD_TYPES: dict[str, type[Record]] = {
    cls.__name__: cls
    for cls in (MemberApplication, Sale, CartPosition, FugitiveReport, ReplenishmentOrder, Alert)
}


# --- from request to record ------------------------------------------------------------------


def member_application(body: MemberApplicationIn, id: uuid.UUID, received_at: datetime) -> MemberApplication:
    return MemberApplication(id=id, received_at=received_at, **body.model_dump())


def sale(body: SaleIn, id: uuid.UUID, received_at: datetime) -> Sale:
    return Sale(
        id=id,
        plate=body.plate,
        client=body.client,
        quantity=body.quantity,
        sold_at=body.sold_at or received_at,
        stock_remaining=body.stock_remaining,
        lat=body.location.lat,
        lon=body.location.lon,
        received_at=received_at,
    )


def cart_position(body: CartPositionIn, id: uuid.UUID, received_at: datetime) -> CartPosition:
    return CartPosition(
        id=id,
        plate=body.plate,
        lat=body.lat,
        lon=body.lon,
        recorded_at=body.recorded_at or received_at,
        received_at=received_at,
    )


def fugitive_report(body: FugitiveReportIn, id: uuid.UUID, received_at: datetime) -> FugitiveReport:
    return FugitiveReport(id=id, received_at=received_at, **body.model_dump())
