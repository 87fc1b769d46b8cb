"""Cart tokens: how a cart proves to the API that it is the cart it says it is (DESIGN §4).

A token is the cart's normalized plate, a dot, and the HMAC-SHA256 of that plate under
CART_TOKEN_SECRET (base64url, unpadded): `BBCL12.3q2-...`. The plate travels in the clear
so the API can tell a forged token (401) from a genuine token of another cart (403). Tokens
never expire; rotating CART_TOKEN_SECRET revokes them all at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from gremio.records import normalize_plate
from gremio.settings import Settings, get_settings


class InvalidToken(ValueError):
    """The token is missing, malformed, or its signature is not ours."""


def _signature(plate: str, settings: Settings) -> str:
    secret = settings.cart_token_secret.get_secret_value().encode("utf-8")
    digest = hmac.new(secret, plate.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def cart_token(plate: str, settings: Settings | None = None) -> str:
    """The API token of the cart with this plate (any accepted spelling of it)."""
    normalized = normalize_plate(plate)
    return f"{normalized}.{_signature(normalized, settings or get_settings())}"


def token_plate(token: str, settings: Settings | None = None) -> str:
    """The plate a genuine token was issued for, or InvalidToken."""
    plate, dot, signature = token.strip().partition(".")
    if not dot or not plate or not signature:
        raise InvalidToken("a cart token looks like PLATE.SIGNATURE")
    try:
        normalized = normalize_plate(plate)
    except ValueError:
        raise InvalidToken("the token does not name a valid plate") from None
    if normalized != plate or not hmac.compare_digest(
        signature.encode("ascii", "replace"), _signature(normalized, settings or get_settings()).encode()
    ):
        raise InvalidToken("the token's signature does not match")
    return normalized
