"""The ingest API against the real broker: what lands where, what is refused, and why."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gremio import kafka as gk
from gremio import topics as t
from gremio.records import RECORD_TYPES
from gremio.settings import Settings, get_settings
from gremio.tokens import cart_token
from ingest_api import create_app
from tests.support import TopicProbe

PLATE = "BBCL12"
OTHER = "AB1234"


def auth(plate: str = PLATE) -> dict[str, str]:
    return {"Authorization": f"Bearer {cart_token(plate)}"}


def member(**fields) -> dict:
    return {
        "first_name": "Ana", "last_name": "Pérez", "rut": "12.345.678-5",
        "email": "ana@example.cl", "plate": OTHER, "premium": False, **fields,
    }  # fmt: skip


def sale(**fields) -> dict:
    return {
        "plate": PLATE, "client": "Cliente-7", "quantity": 3, "stock_remaining": 57,
        "location": {"lat": -33.44, "lon": -70.65}, **fields,
    }  # fmt: skip


def position(**fields) -> dict:
    return {"plate": PLATE, "lat": -33.44, "lon": -70.65, **fields}


def report(**fields) -> dict:
    return {"lat": -33.45, "lon": -70.66, "description": "carro sin credencial en la esquina", **fields}


def without(body: dict, field: str) -> dict:
    return {k: v for k, v in body.items() if k != field}


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Kafka's default (Java) partitioner, which librdkafka's murmur2_random reproduces."""
    m, r = 0x5BD1E995, 24
    length = len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = key[length - length % 4 :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def only_record(probe: TopicProbe, topic: str):
    """The one record that landed since the probe, after checking nothing else did anywhere."""
    landed = probe.records()
    assert [m.topic() for m in landed] == [topic], [(m.topic(), m.partition()) for m in landed]
    return landed[0]


def check_landed(msg, answer: dict, type_name: str, key: str, partition: int) -> dict:
    """The 202 says where the record is, and it is there with its key, id and type header."""
    assert (msg.topic(), msg.partition(), msg.offset()) == (
        answer["topic"],
        answer["partition"],
        answer["offset"],
    )
    assert msg.partition() == partition
    assert msg.key() == key.encode()
    assert gk.header(msg, "type") == type_name
    record = RECORD_TYPES[type_name].from_bytes(msg.value())
    assert str(record.id) == answer["id"]
    assert record.received_at.tzinfo is not None
    return json.loads(msg.value())


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def fields(body: dict) -> set[str]:
    return {error["field"] for error in body["errors"]}


# --- success paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(("premium", "partition"), [(False, 0), (True, 1)])
def test_member_application_lands_on_its_partition(client, premium, partition):
    probe = TopicProbe()
    answer = client.post("/v1/members", json=member(premium=premium, plate="bb-cl 12"))
    assert answer.status_code == 202, answer.get_json()
    msg = only_record(probe, "members")
    value = check_landed(msg, answer.get_json(), "MemberApplication", "12345678-5", partition)
    assert value["rut"] == "12345678-5" and value["plate"] == PLATE and value["premium"] is premium


def test_spanish_field_names_are_accepted(client):
    probe = TopicProbe()
    answer = client.post(
        "/v1/members",
        json={"nombre": " María  José ", "apellido": "Soto", "rut": "7654321-6", "correo": "mj@example.cl",
              "patente": "ab1234", "premium": True},
    )  # fmt: skip
    assert answer.status_code == 202, answer.get_json()
    value = json.loads(only_record(probe, "members").value())
    assert (value["first_name"], value["last_name"], value["email"], value["plate"]) == (
        "María José", "Soto", "mj@example.cl", OTHER,
    )  # fmt: skip

    probe = TopicProbe()
    sold_at = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    spanish = {"patente": PLATE, "cliente": "Don Pepe", "cantidad": 2, "hora": sold_at, "stock": 40,
               "ubicacion": {"lat": -33.43, "lon": -70.64}}  # fmt: skip
    answer = client.post("/v1/sales", json=spanish, headers=auth())
    assert answer.status_code == 202, answer.get_json()
    value = json.loads(only_record(probe, "sales").value())
    assert (value["client"], value["quantity"], value["stock_remaining"], value["lat"]) == (
        "Don Pepe",
        2,
        40,
        -33.43,
    )
    assert datetime.fromisoformat(value["sold_at"]) == datetime.fromisoformat(sold_at)


def test_sale_lands_on_sales_by_key(client):
    probe = TopicProbe()
    answer = client.post("/v1/sales", json=sale(plate="bbcl12"), headers=auth())
    assert answer.status_code == 202, answer.get_json()
    msg = only_record(probe, "sales")
    partitions = gk.partition_counts()["sales"]
    value = check_landed(msg, answer.get_json(), "Sale", PLATE, murmur2_partition(PLATE.encode(), partitions))
    assert value["client"] == "Cliente-7" and value["quantity"] == 3 and value["stock_remaining"] == 57
    assert value["sold_at"] == value["received_at"]  # no sold_at sent: "now"


def test_position_lands_on_its_plates_partition(client):
    for plate in (PLATE, "CDFG34", "XY9876"):
        probe = TopicProbe()
        answer = client.post("/v1/locations", json=position(plate=plate), headers=auth(plate))
        assert answer.status_code == 202, answer.get_json()
        msg = only_record(probe, "locations")
        expected = t.position_partition(plate, gk.partition_counts()["locations"])
        assert expected != t.FUGITIVE_PARTITION
        check_landed(msg, answer.get_json(), "CartPosition", plate, expected)


@pytest.mark.parametrize("plate", [None, "bb cl 12"])
def test_fugitive_report_lands_on_locations_p0(client, plate):
    probe = TopicProbe()
    body = report() if plate is None else report(patente=plate)
    answer = client.post("/v1/reports", json=body)
    assert answer.status_code == 202, answer.get_json()
    msg = only_record(probe, "locations")
    key = PLATE if plate else answer.get_json()["id"]
    value = check_landed(msg, answer.get_json(), "FugitiveReport", key, t.FUGITIVE_PARTITION)
    assert value["plate"] == (PLATE if plate else None)


def test_batch_lands_every_valid_sale_and_reports_each_item(client):
    probe = TopicProbe()
    past = datetime.now(UTC) - timedelta(hours=2)
    items = [
        sale(sold_at=(past + timedelta(minutes=i)).isoformat(), stock_remaining=90 - i) for i in range(5)
    ]
    items.insert(2, sale(quantity=0))
    answer = client.post("/v1/sales/batch", json={"sales": items}, headers=auth())
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    assert (body["accepted"], body["rejected"]) == (5, 1)
    assert body["results"][2]["status"] == 422
    assert fields(body["results"][2]) == {"sales[2].quantity"}
    landed = probe.records()
    assert {m.topic() for m in landed} == {"sales"} and len(landed) == 5
    by_offset = {(m.partition(), m.offset()): m for m in landed}
    for result in body["results"][:2] + body["results"][3:]:
        msg = by_offset[(result["partition"], result["offset"])]
        check_landed(msg, result, "Sale", PLATE, msg.partition())
    assert len({m.partition() for m in landed}) == 1  # one cart, one partition: in order
    assert [json.loads(m.value())["stock_remaining"] for m in sorted(landed, key=lambda m: m.offset())] == [
        90, 89, 88, 87, 86,
    ]  # fmt: skip


# --- invalid input: a 4xx problem naming the field, and nothing produced -------------------------

FUTURE = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

INVALID = [
    # (name, path, body, status, field that must be named)
    ("rut check digit", "/v1/members", member(rut="12.345.678-0"), 422, "rut"),
    ("malformed email", "/v1/members", member(email="ana@@example"), 422, "email"),
    ("malformed correo", "/v1/members", {**without(member(), "email"), "correo": "no-arroba"}, 422, "correo"),
    ("bad member plate", "/v1/members", member(plate="ABC123"), 422, "plate"),
    ("bad sale plate", "/v1/sales", sale(plate="A1"), 422, "plate"),
    ("quantity 0", "/v1/sales", sale(quantity=0), 422, "quantity"),
    ("quantity 1001", "/v1/sales", sale(quantity=1001), 422, "quantity"),
    ("quantity 2.5", "/v1/sales", sale(quantity=2.5), 422, "quantity"),
    ("quantity as text", "/v1/sales", sale(quantity="2"), 422, "quantity"),
    ("negative stock", "/v1/sales", sale(stock_remaining=-1), 422, "stock_remaining"),
    ("lat 91", "/v1/locations", position(lat=91), 422, "lat"),
    ("lat 91 in a sale", "/v1/sales", sale(location={"lat": 91, "lon": -70.6}), 422, "location.lat"),
    ("lat 91 in a report", "/v1/reports", report(lat=91), 422, "lat"),
    ("null island", "/v1/locations", position(lat=0, lon=0), 422, "lon"),
    ("null island in a sale", "/v1/sales", sale(location={"lat": 0, "lon": 0}), 422, "location.lon"),
    ("null island in a report", "/v1/reports", report(lat=0.0, lon=0.0), 422, "lon"),
    ("position an hour ahead", "/v1/locations", position(recorded_at=FUTURE), 422, "recorded_at"),
    ("sale an hour ahead", "/v1/sales", sale(sold_at=FUTURE), 422, "sold_at"),
    ("naive time", "/v1/locations", position(recorded_at="2025-01-01T10:00:00"), 422, "recorded_at"),
    ("missing client", "/v1/sales", without(sale(), "client"), 422, "client"),
    ("missing rut", "/v1/members", without(member(), "rut"), 422, "rut"),
    ("blank name", "/v1/members", member(first_name="   "), 422, "first_name"),
    ("unknown field", "/v1/locations", position(speed=3), 422, "speed"),
    ("long description", "/v1/reports", report(description="x" * 501), 422, "description"),
    ("batch of 501", "/v1/sales/batch", {"sales": [sale()] * 501}, 422, "sales"),
    ("empty batch", "/v1/sales/batch", {"sales": []}, 422, "sales"),
    (
        "batch of only bad sales",
        "/v1/sales/batch",
        {"sales": [sale(quantity=0), 7]},
        422,
        "sales[0].quantity",
    ),
    ("body not an object", "/v1/sales", [sale()], 422, "body"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "field"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_input_is_refused_naming_the_field(client, path, body, status, field):
    probe = TopicProbe()
    answer = client.post(path, json=body, headers=auth())
    assert field in fields(problem(answer, status))
    assert probe.records() == []


def test_every_bad_field_is_named_at_once(client):
    probe = TopicProbe()
    answer = client.post(
        "/v1/members", json=member(rut="1-1", email="x", plate="?", premium="yes", first_name="")
    )
    named = fields(problem(answer, 422))
    assert named == {"rut", "email", "plate", "premium", "first_name"}
    assert probe.records() == []


RAW = [
    ("not JSON", "/v1/sales", b"plate=BBCL12&quantity=2", "application/json", 400, "body"),
    ("truncated JSON", "/v1/members", b'{"rut": "1-9"', "application/json", 400, "body"),
    ("not UTF-8", "/v1/reports", b'{"lat": "\xff"}', "application/json", 400, "body"),
    ("text/plain", "/v1/sales", json.dumps(sale()).encode(), "text/plain", 415, "Content-Type"),
    ("form", "/v1/members", b"rut=1-9", "application/x-www-form-urlencoded", 415, "Content-Type"),
    ("no content type", "/v1/locations", json.dumps(position()).encode(), None, 415, "Content-Type"),
    (
        "over 16 KiB",
        "/v1/sales",
        json.dumps(sale(client="x" * 17000)).encode(),
        "application/json",
        413,
        "body",
    ),
    ("over 16 KiB of report", "/v1/reports", b" " * 16385, "application/json", 413, "body"),
    (
        "batch over 256 KiB",
        "/v1/sales/batch",
        json.dumps({"sales": [sale(client="c" * 70)] * 2000}).encode(),
        "application/json",
        413,
        "body",
    ),
]


@pytest.mark.parametrize(
    ("path", "data", "content_type", "status", "field"), [c[1:] for c in RAW], ids=[c[0] for c in RAW]
)
def test_unreadable_bodies_are_refused(client, path, data, content_type, status, field):
    probe = TopicProbe()
    headers = {**auth(), **({"Content-Type": content_type} if content_type else {})}
    answer = client.post(path, data=data, headers=headers)
    assert field in fields(problem(answer, status))
    assert probe.records() == []


def test_a_batch_may_be_bigger_than_a_single_request(client):
    """16 KiB is the single-request limit; a 200-sale batch (~30 KiB) is within its own 256 KiB."""
    items = [sale(stock_remaining=i % 100) for i in range(200)]
    assert len(json.dumps({"sales": items})) > 16 * 1024
    answer = client.post("/v1/sales/batch", json={"sales": items}, headers=auth())
    assert answer.status_code == 202 and answer.get_json()["accepted"] == 200


def test_errors_for_unknown_paths_and_methods_are_problems(client):
    problem(client.get("/v1/nothing"), 404)
    problem(client.get("/v1/sales"), 405)


# --- cart tokens ---------------------------------------------------------------------------


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


def test_a_batch_with_one_sale_of_another_cart_is_refused_whole(client):
    probe = TopicProbe()
    answer = client.post(
        "/v1/sales/batch", json={"sales": [sale(), sale(plate=OTHER), sale()]}, headers=auth()
    )
    assert fields(problem(answer, 403)) == {"sales[1].plate"}
    assert probe.records() == []


def test_public_endpoints_need_no_token(client):
    assert client.post("/v1/reports", json=report()).status_code == 202
    assert client.post("/v1/members", json=member()).status_code == 202


# --- rate limits ----------------------------------------------------------------------------


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


# --- idempotency ------------------------------------------------------------------------------


def test_the_same_idempotency_key_gives_the_same_id(client):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/v1/sales", json=sale(), headers={**auth(), **key}).get_json()
    again = client.post("/v1/sales", json=sale(), headers={**auth(), **key}).get_json()
    assert first["id"] == again["id"]
    fresh = client.post("/v1/sales", json=sale(), headers={**auth(), "Idempotency-Key": str(uuid.uuid4())})
    assert fresh.get_json()["id"] != first["id"]
    unkeyed = [client.post("/v1/sales", json=sale(), headers=auth()).get_json()["id"] for _ in range(2)]
    assert len({first["id"], *unkeyed}) == 3
    # Scoped by endpoint and by cart: the same key elsewhere is another record.
    position_id = client.post("/v1/locations", json=position(), headers={**auth(), **key}).get_json()["id"]
    other_cart = client.post("/v1/sales", json=sale(plate=OTHER), headers={**auth(OTHER), **key}).get_json()[
        "id"
    ]
    assert len({first["id"], position_id, other_cart}) == 3
    for path, body in (("/v1/members", member()), ("/v1/reports", report())):
        ids = {client.post(path, json=body, headers=key).get_json()["id"] for _ in range(2)}
        assert len(ids) == 1


def test_two_different_requests_with_the_same_key_never_share_an_id(client):
    """Two reporters who both chose the key "1": both reports land, with two ids (Stripe's rule)."""
    probe = TopicProbe(["locations"])
    key = {"Idempotency-Key": "1"}
    first = client.post("/v1/reports", json=report(description="carro en la plaza"), headers=key)
    second = client.post("/v1/reports", json=report(description="otro carro, en la feria"), headers=key)
    assert first.status_code == second.status_code == 202
    ids = {first.get_json()["id"], second.get_json()["id"]}
    assert len(ids) == 2
    assert ids <= {json.loads(m.value())["id"] for m in probe.records()}
    # The same request spelled differently is the same request: the same id.
    spelled = [
        client.post("/v1/sales", json=sale(plate=plate), headers={**auth(), **key}).get_json()["id"]
        for plate in (PLATE, PLATE.lower())
    ]
    assert spelled[0] == spelled[1]
    # A sale of another quantity under the same key is another sale.
    other = client.post("/v1/sales", json=sale(quantity=4), headers={**auth(), **key}).get_json()["id"]
    assert other != spelled[0]


def test_batch_items_keep_their_ids_when_the_batch_is_retried(client):
    key = {**auth(), "Idempotency-Key": "offline-sync-0042"}
    items = {"sales": [sale(stock_remaining=s) for s in (30, 29, 28)]}
    first = [r["id"] for r in client.post("/v1/sales/batch", json=items, headers=key).get_json()["results"]]
    again = [r["id"] for r in client.post("/v1/sales/batch", json=items, headers=key).get_json()["results"]]
    assert first == again and len(set(first)) == 3


@pytest.mark.parametrize("key", ["", "x" * 256, "tiene espacio", "ñandú"])
def test_a_bad_idempotency_key_is_refused(client, key):
    probe = TopicProbe()
    answer = client.post("/v1/reports", json=report(), headers={"Idempotency-Key": key})
    assert fields(problem(answer, 400)) == {"Idempotency-Key"}
    assert probe.records() == []


# --- operations --------------------------------------------------------------------------------


def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"

    def counter(text: str, name: str, **labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = client.get("/metrics").get_data(as_text=True)
    client.post("/v1/sales", json=sale(), headers=auth())
    client.post("/v1/sales", json=sale(quantity=0), headers=auth())
    client.post("/v1/sales", json=sale())
    after = client.get("/metrics").get_data(as_text=True)
    for name, labels, delta in (
        ("gremio_api_accepted_total", {"endpoint": "/v1/sales"}, 1),
        ("gremio_api_rejected_total", {"endpoint": "/v1/sales", "reason": "invalid"}, 1),
        ("gremio_api_rejected_total", {"endpoint": "/v1/sales", "reason": "unauthorized"}, 1),
        ("gremio_api_produced_total", {"topic": "sales"}, 1),
    ):
        assert counter(after, name, **labels) - counter(before, name, **labels) == delta, name


def test_openapi_is_generated_from_the_models(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) >= {
        "/v1/members",
        "/v1/sales",
        "/v1/sales/batch",
        "/v1/locations",
        "/v1/reports",
    }
    schemas = doc["components"]["schemas"]
    assert {
        "MemberApplicationIn",
        "SaleIn",
        "SaleBatchIn",
        "CartPositionIn",
        "FugitiveReportIn",
        "Problem",
    } <= set(schemas)
    assert "`patente`" in schemas["SaleIn"]["properties"]["plate"]["description"]
    assert schemas["SaleIn"]["properties"]["quantity"]["maximum"] == 1000
    assert schemas["SaleBatchIn"]["properties"]["sales"]["maxItems"] == get_settings().max_batch_items
    sales = doc["paths"]["/v1/sales"]["post"]
    assert sales["security"] == [{"cartToken": []}] and {"401", "403", "503"} <= set(sales["responses"])
    assert "429" in doc["paths"]["/v1/members"]["post"]["responses"]
    refs = {m for m in json.dumps(doc).split('"') if m.startswith("#/components/schemas/")}
    assert {ref.rsplit("/", 1)[1] for ref in refs} <= set(schemas)
