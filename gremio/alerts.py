"""Alerts raised by Airflow (`premium_pending`, `report_late`): into the table and onto the topic.

The location service raises its alerts itself (consumers/locations/store.py). Airflow's DAGs
and callbacks raise theirs here: each goes into the `alerts` table, which the live map's
alerts panel and `gremio watch` read (the location service merges it every 2 s), and onto
the Kafka topic `alerts`, acknowledged (acks=all) before the table's transaction commits.
Ids are deterministic, so a repeat inserts nothing and, on the topic, is the same record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gremio.db import query
from gremio.records import Alert

if TYPE_CHECKING:
    import psycopg
    from confluent_kafka import Producer


def insert(conn: psycopg.Connection, alerts: Sequence[Alert]) -> int:
    """Insert the alerts not in the table yet (by id); returns how many were new."""
    if not alerts:
        return 0
    cur = conn.execute(
        query("alerts_insert"),
        {
            "ids": [a.id for a in alerts],
            "kinds": [a.kind for a in alerts],
            "plates": [a.plate for a in alerts],
            "lats": [a.lat for a in alerts],
            "lons": [a.lon for a in alerts],
            "details": [a.detail for a in alerts],
            "created_at": [a.created_at for a in alerts],
        },
    )
    return cur.rowcount


def raise_once(conn: psycopg.Connection, prod: Producer, alert: Alert, key: str) -> bool:
    """Record `alert` and publish it on `alerts`, unless it was raised before; True if new.

    The record is acknowledged before the row commits: a failure in between leaves neither
    (or only the record, which a retry sends again with the same id).
    """
    from gremio import kafka as gk
    from gremio import topics as t

    with conn.transaction():
        if not insert(conn, [alert]):
            return False
        gk.produce_all(prod, [gk.Outgoing.of(alert, t.ALERTS.name, key)])
    return True
