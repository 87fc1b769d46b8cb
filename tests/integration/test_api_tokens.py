"""The ingest API against the real broker. Cart tokens and rate limits."""

from __future__ import annotations

from gremio.settings import Settings
from gremio.tokens import cart_token
from ingest_api import create_app
from tests.integration.api_support import OTHER, PLATE, auth, member, position, problem, report, sale
from tests.support import TopicProbe


def test_cart_endpoints_need_the_carts_own_token(client):
    forged = cart_token(PLATE)[:-3] + "AAA"
    foreign_secret = cart_token(PLATE, Settings(cart_token_secret="another-guilds-secret"))
    cases = [
        ({}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": f"Basic {cart_token(PLATE)}"}, 401),
        ({"Authorization": "Bearer not-a-token"}, 401),
        ({"Authorization": f"Bearer {forged}"}, 401),
        ({"Authorization": f"Bearer {foreign_secret}"}, 401),
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
