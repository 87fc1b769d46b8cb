"""What the API tests share: request bodies, tokens, and checks of what landed or was refused."""

from __future__ import annotations

import json

from gremio import kafka as gk
from gremio.records import RECORD_TYPES
from gremio.tokens import cart_token
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
