"""Cart tokens: PLATE.KEY_ID.ISSUED_MS.SIGNATURE, rotation with a grace period, forgeries refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from gremio.settings import Settings, SettingsError
from gremio.tokens import (
    InvalidToken,
    RevocationError,
    cart_token,
    from_ms,
    now_ms,
    parse_revocation,
    revocation_value,
    to_ms,
    token_plate,
    verify,
)

KEY_A = "unit-test-key-a-of-32-bytes-at-least"  # pragma: allowlist secret
KEY_B = "unit-test-key-b-of-32-bytes-at-least"  # pragma: allowlist secret
SETTINGS = Settings(cart_token_secret=KEY_A)
GRACE_END = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
# Rotated: key B is current (k2), key A (k1) accepted until GRACE_END.
ROTATED = Settings(
    cart_token_secret=KEY_B,
    cart_token_key_id="k2",
    cart_token_previous_secret=KEY_A,
    cart_token_previous_key_id="k1",
    cart_token_previous_valid_until="2026-12-01T00:00:00-03:00",
)


def test_a_token_is_plate_key_id_issue_time_and_an_hmac_of_the_three():
    token = cart_token("BBCL12", SETTINGS, issued_ms=1764079200123)
    plate, key_id, issued, signature = token.split(".")
    assert (plate, key_id, issued) == ("BBCL12", "k1", "1764079200123")
    digest = hmac.new(KEY_A.encode(), b"BBCL12.k1.1764079200123", hashlib.sha256).digest()
    assert signature == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    found = verify(f"  {token}\n", SETTINGS)
    assert (found.plate, found.key_id, found.issued_ms) == ("BBCL12", "k1", 1764079200123)
    assert found.issued_at == datetime(2025, 11, 25, 14, 0, 0, 123000, tzinfo=UTC)


def test_a_new_token_is_issued_now_for_every_spelling_of_the_plate():
    before = now_ms()
    tokens = [cart_token(p, SETTINGS) for p in ("bbcl12", "BB-CL-12", " bb cl 12 ", "BB·CL·12")]
    after = now_ms()
    assert {token_plate(t, SETTINGS) for t in tokens} == {"BBCL12"}
    assert all(before <= verify(t, SETTINGS).issued_ms <= after for t in tokens)
    assert token_plate(cart_token("ab-1234", SETTINGS), SETTINGS) == "AB1234"


def test_the_key_id_is_a_setting():
    token = cart_token("BBCL12", Settings(cart_token_secret=KEY_A, cart_token_key_id="2026-11"))
    assert token.split(".")[1] == "2026-11"
    with pytest.raises(InvalidToken, match="key '2026-11'"):
        verify(token, SETTINGS)  # SETTINGS knows only k1
    with pytest.raises(ValueError, match=r"CART_TOKEN_KEY_ID|pattern"):
        Settings(cart_token_secret=KEY_A, cart_token_key_id="a.b")


def test_tokens_differ_by_plate_and_by_secret():
    at = now_ms()
    assert cart_token("BBCL12", SETTINGS, at) != cart_token("BBCL13", SETTINGS, at)
    other_guild = Settings(cart_token_secret=KEY_B)
    assert cart_token("BBCL12", SETTINGS, at) != cart_token("BBCL12", other_guild, at)
    with pytest.raises(InvalidToken, match="signature"):
        verify(cart_token("BBCL12", other_guild), SETTINGS)


def test_during_a_rotation_new_tokens_use_the_new_key_and_the_old_key_is_accepted_until_the_grace_ends():
    old = cart_token("BBCL12", SETTINGS)
    new = cart_token("BBCL12", ROTATED)
    assert new.split(".")[1] == "k2"
    end = to_ms(GRACE_END)
    assert verify(old, ROTATED, at_ms=end - 1).key_id == "k1"
    assert verify(new, ROTATED, at_ms=end + 10**9).key_id == "k2"  # the current key never retires
    with pytest.raises(InvalidToken, match="retired at 2026-12-01T03:00:00"):
        verify(old, ROTATED, at_ms=end)
    # Once the rotation settings are gone, the old key is simply unknown.
    with pytest.raises(InvalidToken, match="key 'k1'"):
        verify(old, Settings(cart_token_secret=KEY_B, cart_token_key_id="k2"))
    # A token that names k1 but is signed with k2's key is a forgery.
    plate, _, issued, signature = new.split(".")
    with pytest.raises(InvalidToken, match="signature"):
        verify(f"{plate}.k1.{issued}.{signature}", ROTATED, at_ms=end - 1)


def test_a_half_set_rotation_stops_with_one_line_naming_the_setting():
    for missing in ("cart_token_previous_key_id", "cart_token_previous_valid_until"):
        values = {**ROTATED.model_dump(), missing: None}
        with pytest.raises(SettingsError, match=f"setting {missing.upper()} is not set"):
            cart_token("BBCL12", Settings.model_validate(values))
    same_id = Settings.model_validate({**ROTATED.model_dump(), "cart_token_previous_key_id": "k2"})
    with pytest.raises(SettingsError, match="CART_TOKEN_PREVIOUS_KEY_ID is the same"):
        verify(cart_token("BBCL12", SETTINGS), same_id)
    with pytest.raises(ValueError, match="timezone"):
        Settings(cart_token_secret=KEY_A, cart_token_previous_valid_until="2026-12-01T00:00:00")


def test_an_invalid_plate_gets_no_token():
    with pytest.raises(ValueError, match="not a Chilean plate"):
        cart_token("ABC123", SETTINGS)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "BBCL12",
        "BBCL12.",
        "BBCL12.{sig}",  # the old two-part format
        "BBCL12.k1.{issued}",
        ".k1.{issued}.{sig}",
        "BBCL12..{issued}.{sig}",
        "BBCL12.k1..{sig}",
        "not a token",
        "ABC123.k1.{issued}.{sig}",
        "bbcl12.k1.{issued}.{sig}",  # the plate in a token is always normalized
        "BBCL13.k1.{issued}.{sig}",  # another plate with BBCL12's signature
        "BBCL12.k1.{later}.{sig}",  # a later issue time with the original's signature
        "BBCL12.k1.{issued}.{sig}x",
        "BBCL12.k1.{issued}.{short}",
        "BBCL12.k1.{issued}.{sig}.extra",
        "BBCL12.k1.{issued}.ñandú",
        "BBCL12.k1.١٢٣.{sig}",  # non-ASCII digits
        "BBCL12.k1.-5.{sig}",
        "BBCL12.k1.{issued}.{sig}\x00",
        "BBCL12.k 1.{issued}.{sig}",
    ],
)
def test_forged_and_malformed_tokens_are_refused(token):
    genuine = cart_token("BBCL12", SETTINGS, issued_ms=1764079200123)
    sig = genuine.rsplit(".", 1)[1]
    forged = token.format(sig=sig, short=sig[:-1], issued="1764079200123", later="1764079200124")
    with pytest.raises(InvalidToken):
        verify(forged, SETTINGS)


def test_revocation_records_are_plate_and_a_millisecond_iso_time():
    at = to_ms(datetime(2026, 11, 25, 13, 20, 0, 123000, tzinfo=UTC))
    value = revocation_value("bb-cl-12", at)
    assert json.loads(value) == {"plate": "BBCL12", "revoked_at": "2026-11-25T13:20:00.123+00:00"}
    assert parse_revocation(value) == ("BBCL12", at)
    # Another offset names the same instant.
    assert parse_revocation(b'{"plate": "BBCL12", "revoked_at": "2026-11-25T10:20:00.123-03:00"}')[1] == at
    assert from_ms(at) + timedelta(milliseconds=1) == from_ms(at + 1)
    for poison in (b"probe", b"[]", b"{}", b'{"plate": "BBCL12"}', b'{"plate": 5, "revoked_at": "x"}',
                   b'{"plate": "BBCL12", "revoked_at": "2026-11-25T13:20:00"}'):  # fmt: skip
        with pytest.raises(RevocationError):
            parse_revocation(poison)


def test_empty_rotation_settings_mean_no_rotation():
    """docker compose passes the rotation settings as `${VAR:-}`: empty is unset."""
    empty = Settings(
        cart_token_secret=KEY_A,
        cart_token_previous_secret="",
        cart_token_previous_key_id="",
        cart_token_previous_valid_until="",
    )
    assert verify(cart_token("BBCL12", empty), empty).key_id == "k1"
