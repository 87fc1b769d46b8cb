"""The ingest API against the real broker. Cart tokens (format, key rotation) and rate limits."""

from __future__ import annotations

from gremio.settings import Settings, get_settings
from gremio.tokens import cart_token
from ingest_api import create_app
from tests.integration.api_support import OTHER, PLATE, auth, member, position, problem, report, sale
from tests.support import TopicProbe


def test_cart_endpoints_need_the_carts_own_token(client):
    forged = cart_token(PLATE)[:-3] + "AAA"
    other_guild_key = "another-guilds-secret-of-32-bytes-or-more"  # pragma: allowlist secret
    foreign = Settings(cart_token_secret=other_guild_key)
    foreign_secret = cart_token(PLATE, foreign)
    plate, key_id, issued, signature = cart_token(PLATE).split(".")
    cases = [
        ({}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": f"Basic {cart_token(PLATE)}"}, 401),
        ({"Authorization": "Bearer not-a-token"}, 401),
        ({"Authorization": f"Bearer {forged}"}, 401),
        ({"Authorization": f"Bearer {foreign_secret}"}, 401),
        ({"Authorization": f"Bearer {plate}.{signature}"}, 401),  # the old PLATE.SIGNATURE format
        ({"Authorization": f"Bearer {plate}.other-key.{issued}.{signature}"}, 401),
        ({"Authorization": f"Bearer {plate}.{key_id}.{int(issued) + 1}.{signature}"}, 401),
        ({"Authorization": f"Bearer {cart_token(OTHER)}"}, 403),
    ]
    for path, body in (
        ("/v1/sales", sale()),
        ("/v1/locations", position()),
        ("/v1/sales/batch", {"sales": [sale()]}),
    ):
        for headers, status in cases:
            probe = TopicProbe()
            answer = client.post(path, json=body, headers=headers)
            refused = problem(answer, status)
            assert refused["errors"], refused
            if status == 401:
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert probe.records() == [], (path, headers)
    answer = client.post(
        "/v1/locations", json=position(), headers={"Authorization": f"bearer {cart_token(PLATE)}"}
    )
    assert answer.status_code == 202


def test_a_rotated_key_is_accepted_until_its_grace_period_ends():
    old_key = get_settings()  # the test stack's CART_TOKEN_SECRET, key id k1
    old_token = {"Authorization": f"Bearer {cart_token(PLATE, old_key)}"}
    new_secret = "the-rotated-in-cart-token-key-of-32-bytes"  # pragma: allowlist secret
    rotation = {
        "TESTING": True,
        "CART_TOKEN_SECRET": new_secret,
        "CART_TOKEN_KEY_ID": "k2",
        "CART_TOKEN_PREVIOUS_SECRET": old_key.secret("cart_token_secret"),
        "CART_TOKEN_PREVIOUS_KEY_ID": old_key.cart_token_key_id,
    }
    grace = create_app(
        {**rotation, "CART_TOKEN_PREVIOUS_VALID_UNTIL": "2999-01-01T00:00:00-03:00"}
    ).test_client()
    after = create_app(
        {**rotation, "CART_TOKEN_PREVIOUS_VALID_UNTIL": "2020-01-01T00:00:00-03:00"}
    ).test_client()
    new_token = {
        "Authorization": f"Bearer {cart_token(PLATE, Settings(cart_token_secret=new_secret, cart_token_key_id='k2'))}"
    }
    for client, headers, status in (
        (grace, old_token, 202),
        (grace, new_token, 202),
        (after, new_token, 202),
        (after, old_token, 401),
    ):
        answer = client.post("/v1/locations", json=position(), headers=headers)
        if status == 401:
            body = problem(answer, 401)
            assert "retired at 2020-01-01T03:00:00+00:00" in body["errors"][0]["message"], body
        else:
            assert answer.status_code == status, answer.get_data(as_text=True)


def test_rate_limits_are_per_client_ip():
    limited = create_app(
        {"TESTING": True, "RATE_LIMIT_MEMBERS": "2/minute", "RATE_LIMIT_REPORTS": "1/minute"}
    )
    client = limited.test_client()
    for _ in range(2):
        assert client.post("/v1/members", json=member()).status_code == 202
    probe = TopicProbe()
    answer = client.post("/v1/members", json=member())
    body = problem(answer, 429)
    assert int(answer.headers["Retry-After"]) > 0 and "2 per 1 minute" in body["detail"]
    assert (
        client.post("/v1/members", json=member(), environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 202
    )
    assert client.post("/v1/reports", json=report()).status_code == 202
    problem(client.post("/v1/reports", json=report()), 429)
    # Only 10.1.2.3's application and the first report.
    assert sorted(m.topic() for m in probe.records()) == ["locations", "members"]
    # Cart endpoints are not rate-limited.
    for _ in range(5):
        assert client.post("/v1/locations", json=position(), headers=auth()).status_code == 202
