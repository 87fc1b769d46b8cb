"""Cart tokens: HMAC of the normalized plate, the plate readable, forgeries refused."""

from __future__ import annotations

import pytest

from gremio.settings import Settings
from gremio.tokens import InvalidToken, cart_token, token_plate

SETTINGS = Settings(cart_token_secret="unit-test-secret")


def test_a_token_names_its_plate_and_is_the_same_for_every_spelling_of_it():
    token = cart_token("BBCL12", SETTINGS)
    assert token.startswith("BBCL12.")
    assert {cart_token(p, SETTINGS) for p in ("bbcl12", "BB-CL-12", " bb cl 12 ", "BB·CL·12")} == {token}
    assert token_plate(token, SETTINGS) == "BBCL12"
    assert token_plate(f"  {token}\n", SETTINGS) == "BBCL12"


def test_tokens_differ_by_plate_and_by_secret():
    assert cart_token("BBCL12", SETTINGS) != cart_token("BBCL13", SETTINGS)
    other_guild = Settings(cart_token_secret="another-secret")
    assert cart_token("BBCL12", SETTINGS) != cart_token("BBCL12", other_guild)
    with pytest.raises(InvalidToken):
        token_plate(cart_token("BBCL12", other_guild), SETTINGS)


def test_an_invalid_plate_gets_no_token():
    with pytest.raises(ValueError, match="not a Chilean plate"):
        cart_token("ABC123", SETTINGS)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "BBCL12",
        "BBCL12.",
        ".c2lnbmF0dXJl",
        "not a token",
        "ABC123.c2lnbmF0dXJl",
        "bbcl12.{sig}",  # the plate in a token is always normalized
        "BBCL13.{sig}",  # another plate with BBCL12's signature
        "BBCL12.{sig}x",
        "BBCL12.{short}",
        "BBCL12.{sig}.extra",
        "BBCL12.ñandú",
    ],
)
def test_forged_and_malformed_tokens_are_refused(token):
    genuine = cart_token("BBCL12", SETTINGS).split(".", 1)[1]
    with pytest.raises(InvalidToken):
        token_plate(token.format(sig=genuine, short=genuine[:-1]), SETTINGS)


def test_old_format_plates_work_too():
    assert token_plate(cart_token("ab-1234", SETTINGS), SETTINGS) == "AB1234"
