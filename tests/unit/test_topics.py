"""The topic declaration and partition rules (DESIGN §2)."""

from __future__ import annotations

import pytest

from gremio import topics as t


def test_every_topic_has_at_least_two_partitions():
    assert all(topic.partitions >= 2 for topic in t.TOPICS)


def test_declared_partitions_are_the_designs():
    assert {topic.name: topic.partitions for topic in t.TOPICS} == {
        "members": 2,
        "sales": 4,
        "locations": 4,
        "replenishments": 2,
        "alerts": 2,
        "deadletter": 2,
        "cart_revocations": 2,
    }


def test_revocations_are_compacted_so_each_plates_latest_is_kept_forever():
    assert dict(t.CART_REVOCATIONS.config) == {"cleanup.policy": "compact"}
    assert t.CART_REVOCATIONS.key == "plate"


def test_premium_applications_have_their_own_partition():
    assert t.member_partition(premium=True) == 1
    assert t.member_partition(premium=False) == 0


def test_positions_never_land_on_the_fugitive_partition_and_are_stable():
    plates = [f"BBCL{n:02d}" for n in range(100)] + [f"AB{n:04d}" for n in range(100)]
    for plate in plates:
        p = t.position_partition(plate, 4)
        assert 1 <= p <= 3
        assert p == t.position_partition(plate, 4)
    assert {t.position_partition(p, 4) for p in plates} == {1, 2, 3}


def test_position_partition_is_crc32_so_other_tools_can_compute_it():
    # 1 + CRC-32(plate) mod (n - 1): zlib.crc32(b"BBCL12") == 801821864.
    assert t.position_partition("BBCL12", 4) == 1 + 801821864 % 3 == 3
    assert t.position_partition("BBCL12", 8) == 1 + 801821864 % 7


def test_locations_needs_a_partition_besides_the_fugitive_one():
    with pytest.raises(ValueError, match="at least 2"):
        t.position_partition("BBCL12", 1)
