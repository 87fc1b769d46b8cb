"""The one declaration of gremio's topics (DESIGN §2), and the routing rules for them.

Topic bootstrap, the API's partition choice, the consumers and the tests all read this.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str
    value: str
    rule: str
    config: tuple[tuple[str, str], ...] = ()


MEMBERS = Topic("members", 2, "RUT", "MemberApplication", "p0 regular, p1 premium")
SALES = Topic("sales", 4, "plate", "Sale", "by key")
LOCATIONS = Topic(
    "locations",
    4,
    "plate",
    "CartPosition / FugitiveReport",
    "p0 fugitive-cart reports; positions on p1..p(n-1) by a stable hash of the plate",
)
REPLENISHMENTS = Topic("replenishments", 2, "plate", "ReplenishmentOrder", "by key")
ALERTS = Topic("alerts", 2, "plate or report id", "Alert", "by key")
DEADLETTER = Topic(
    "deadletter",
    2,
    "original key",
    "original bytes",
    "by key",
    # Poison can be large (a 1 MB value plus headers); give it room.
    (("max.message.bytes", str(8 * 1024 * 1024)),),
)

# Revoked cart tokens (`gremio token revoke PLATE`): the latest revocation of each plate, kept
# forever by compaction, and read from the beginning by every API worker (ingest_api/revocations.py).
CART_REVOCATIONS = Topic(
    "cart_revocations",
    2,
    "plate",
    "CartRevocation {plate, revoked_at}",
    "by key",
    (("cleanup.policy", "compact"),),
)

TOPICS: tuple[Topic, ...] = (
    MEMBERS, SALES, LOCATIONS, REPLENISHMENTS, ALERTS, DEADLETTER, CART_REVOCATIONS,
)  # fmt: skip
BY_NAME = {topic.name: topic for topic in TOPICS}

MEMBERS_REGULAR_PARTITION = 0
MEMBERS_PREMIUM_PARTITION = 1
FUGITIVE_PARTITION = 0

# Deadletter headers (DESIGN §2).
DLQ_SOURCE_TOPIC = "source_topic"
DLQ_SOURCE_PARTITION = "source_partition"
DLQ_SOURCE_OFFSET = "source_offset"
DLQ_ERROR = "error"


def member_partition(premium: bool) -> int:
    return MEMBERS_PREMIUM_PARTITION if premium else MEMBERS_REGULAR_PARTITION


def position_partition(plate: str, partitions: int) -> int:
    """A cart's position partition: p1..p(n-1), the same one for a plate every time.

    CRC-32 is stable across processes and languages (Python's hash() is salted).
    """
    if partitions < 2:
        raise ValueError("locations needs at least 2 partitions: p0 is for fugitive reports")
    return 1 + zlib.crc32(plate.encode("utf-8")) % (partitions - 1)
