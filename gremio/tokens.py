"""Cart tokens: how a cart proves to the API that it is the cart it says it is (DESIGN §4).

A token is four fields joined by dots, `PLATE.KEY_ID.ISSUED_MS.SIGNATURE`:

    BBCL12.k1.1764079200123.Kq3v...  (43 characters of base64url, unpadded)

* PLATE: the cart's normalized plate, in the clear, so the API can tell a forged token (401)
  from a genuine token of another cart (403);
* KEY_ID: the name of the key that signed it (CART_TOKEN_KEY_ID when it was issued), so
  CART_TOKEN_SECRET can rotate: the previous key is accepted until
  CART_TOKEN_PREVIOUS_VALID_UNTIL;
* ISSUED_MS: when it was issued, in milliseconds since the Unix epoch. `gremio token revoke
  PLATE` refuses every token of that plate issued at or before the revocation; a token issued
  after it is valid (ingest_api/revocations.py);
* SIGNATURE: HMAC-SHA256 of `PLATE.KEY_ID.ISSUED_MS` under the key named, base64url.

Tokens do not expire. docs/API.md has the rotation procedure.

A revocation is a record on the compacted topic `cart_revocations`: key the plate, value
`{"plate": "BBCL12", "revoked_at": "2026-11-25T13:20:00.123+00:00"}` (milliseconds, UTC),
header `type: CartRevocation`. `revoke()` writes it (acks=all, flushed, delivery checked).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gremio.records import normalize_plate
from gremio.settings import Settings, SettingsError, get_settings

KEY_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"  # also the settings' pattern
_KEY_ID = re.compile(KEY_ID_PATTERN.strip("^$"))
_ISSUED = re.compile(r"[0-9]{1,15}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidToken(ValueError):
    """The token is missing, malformed, or its signature is not ours (401)."""


@dataclass(frozen=True, slots=True)
class CartToken:
    """What a genuine token says: whose it is, which key signed it, and when it was issued."""

    plate: str
    key_id: str
    issued_ms: int

    @property
    def issued_at(self) -> datetime:
        return from_ms(self.issued_ms)


@dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    secret: bytes
    valid_until_ms: int | None  # None: the current key


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (integer arithmetic, no float rounding)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def signing_keys(settings: Settings) -> dict[str, SigningKey]:
    """The keys the settings name, by key id: the current one and, during a rotation, the
    previous one. A half-set rotation stops the caller with one line naming the setting."""
    current = SigningKey(settings.cart_token_key_id, settings.secret("cart_token_secret").encode(), None)
    keys = {current.key_id: current}
    previous = settings.cart_token_previous_secret
    if previous is None:
        return keys
    for name in ("cart_token_previous_key_id", "cart_token_previous_valid_until"):
        if getattr(settings, name) is None:
            raise SettingsError(
                f"setting {name.upper()} is not set: CART_TOKEN_PREVIOUS_SECRET needs it (docs/API.md, rotation)"
            )
    if settings.cart_token_previous_key_id == current.key_id:
        raise SettingsError(
            "setting CART_TOKEN_PREVIOUS_KEY_ID is the same as CART_TOKEN_KEY_ID: give the new key a new"
            " id (docs/API.md, rotation)"
        )
    if previous.get_secret_value().encode() == current.secret:
        raise SettingsError("setting CART_TOKEN_PREVIOUS_SECRET is the same as CART_TOKEN_SECRET")
    old = SigningKey(
        settings.cart_token_previous_key_id,  # type: ignore[arg-type]
        previous.get_secret_value().encode(),
        to_ms(settings.cart_token_previous_valid_until),  # type: ignore[arg-type]
    )
    keys[old.key_id] = old
    return keys


def _signature(payload: str, secret: bytes) -> str:
    digest = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def cart_token(plate: str, settings: Settings | None = None, issued_ms: int | None = None) -> str:
    """A new API token for the cart with this plate (any accepted spelling of it), signed with
    the current key and issued now (or at `issued_ms`)."""
    settings = settings or get_settings()
    normalized = normalize_plate(plate)
    key = signing_keys(settings)[settings.cart_token_key_id]
    payload = f"{normalized}.{key.key_id}.{now_ms() if issued_ms is None else issued_ms}"
    return f"{payload}.{_signature(payload, key.secret)}"


def verify(token: str, settings: Settings | None = None, at_ms: int | None = None) -> CartToken:
    """What a genuine token says, or InvalidToken (forged, malformed, unknown or retired key).

    Revocations are not checked here: the API does that (ingest_api/revocations.py).
    """
    settings = settings or get_settings()
    parts = token.strip().split(".")
    if len(parts) != 4 or not all(parts):
        raise InvalidToken("a cart token looks like PLATE.KEY_ID.ISSUED.SIGNATURE (`gremio token PLATE`)")
    plate, key_id, issued, signature = parts
    try:
        normalized = normalize_plate(plate)
    except ValueError:
        raise InvalidToken("the token does not name a valid plate") from None
    if normalized != plate or not _KEY_ID.fullmatch(key_id) or not _ISSUED.fullmatch(issued):
        raise InvalidToken("the token is malformed")
    key = signing_keys(settings).get(key_id)
    if key is None:
        raise InvalidToken(f"the token is signed with key {key_id!r}, which is not in use")
    expected = _signature(f"{plate}.{key_id}.{issued}", key.secret)
    if not _SIGNATURE.fullmatch(signature) or not hmac.compare_digest(signature.encode(), expected.encode()):
        raise InvalidToken("the token's signature does not match")
    if key.valid_until_ms is not None and (now_ms() if at_ms is None else at_ms) >= key.valid_until_ms:
        raise InvalidToken(
            f"the token is signed with key {key_id!r}, retired at {from_ms(key.valid_until_ms).isoformat()}:"
            " ask for a new token"
        )
    return CartToken(plate, key_id, int(issued))


def token_plate(token: str, settings: Settings | None = None) -> str:
    """The plate a genuine token was issued for, or InvalidToken."""
    return verify(token, settings).plate


# --- revocations ----------------------------------------------------------------------------------

REVOCATION_TYPE = "CartRevocation"


class RevocationError(ValueError):
    """A record of cart_revocations that is not a revocation."""


def revocation_value(plate: str, revoked_ms: int) -> bytes:
    at = from_ms(revoked_ms).isoformat(timespec="milliseconds")
    return json.dumps({"plate": normalize_plate(plate), "revoked_at": at}).encode()


def parse_revocation(value: bytes) -> tuple[str, int]:
    """(plate, revoked_at in ms) of a cart_revocations record, or RevocationError."""
    try:
        found = json.loads(value)
        plate = normalize_plate(found["plate"])
        revoked_at = datetime.fromisoformat(found["revoked_at"])
    except (ValueError, TypeError, KeyError) as exc:
        raise RevocationError(f"not a revocation: {type(exc).__name__}") from None
    if revoked_at.tzinfo is None:
        raise RevocationError("not a revocation: revoked_at has no offset")
    return plate, to_ms(revoked_at)


def revoke(plate: str, settings: Settings | None = None, timeout: float = 30.0) -> datetime:
    """Revoke every token of this cart issued until now; returns the revocation's time.

    Durable when it returns: acknowledged by every in-sync replica (acks=all), or an
    exception. The topic is created (compacted) first if it is missing. Returns only once
    the clock has passed the revocation, so a token issued afterwards is valid.
    """
    from gremio import kafka as gk
    from gremio import topics as t

    settings = settings or get_settings()
    normalized = normalize_plate(plate)
    gk.ensure_topics([t.CART_REVOCATIONS], settings, timeout=timeout)
    revoked_ms = now_ms()
    record = gk.Outgoing(
        t.CART_REVOCATIONS.name,
        normalized.encode(),
        revocation_value(normalized, revoked_ms),
        [("type", REVOCATION_TYPE.encode())],
    )
    gk.produce_all(gk.producer(settings, **{"message.timeout.ms": int(timeout * 1000)}), [record], timeout)
    while now_ms() <= revoked_ms:
        time.sleep(0.001)
    return from_ms(revoked_ms)
