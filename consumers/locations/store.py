"""The live-location service's PostgreSQL side: members, alerts, fugitive reports.

One connection, used only from the run loop's thread. Each batch's alerts and reports are
written in one transaction, and the transaction commits only after the `alerts` records
are acknowledged by the broker (see `write`). If the database refuses a row, `write_each`
writes the batch again one source record at a time, so only that record's rows are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

import psycopg
from psycopg.rows import dict_row, namedtuple_row

from consumers.locations.view import Effects, Raised, SeenReport
from gremio import db, failures
from gremio.failures import Failure
from gremio.records import Alert
from gremio.settings import Settings

K = TypeVar("K")


class LiveStore:
    """Reads and writes for the live view; reconnects after a failed connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection | None = None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = db.connect(self.settings, autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def members(self) -> dict[str, str]:
        """Approved members' plates and their masters' names."""
        rows = self.conn.cursor(row_factory=namedtuple_row).execute(db.query("locations_members"))
        return {row.plate: row.name for row in rows.fetchall()}

    def members_among(self, plates: Sequence[str]) -> dict[str, str]:
        """The approved members among `plates` (one query), with their masters' names."""
        rows = self.conn.cursor(row_factory=namedtuple_row).execute(
            db.query("locations_members_among"), {"plates": list(plates)}
        )
        return {row.plate: row.name for row in rows.fetchall()}

    def suppression(self, since: datetime) -> list[tuple[str, str, datetime]]:
        """(kind, plate, last created_at) of the alerts raised since `since`."""
        rows = self.conn.cursor(row_factory=namedtuple_row).execute(
            db.query("locations_suppression"), {"since": since}
        )
        return [(row.kind, row.plate, row.created_at) for row in rows.fetchall()]

    def recent_alerts(self, since: datetime, limit: int) -> list[Alert]:
        rows = self.conn.cursor(row_factory=dict_row).execute(
            db.query("locations_recent_alerts"), {"since": since, "limit": limit}
        )
        return [Alert(**row) for row in rows.fetchall()]

    def recent_reports(self, since: datetime, limit: int = 500) -> list[SeenReport]:
        rows = self.conn.cursor(row_factory=dict_row).execute(
            db.query("locations_recent_reports"), {"since": since, "limit": limit}
        )
        return [SeenReport(**row) for row in rows.fetchall()]

    def write(self, effects: Effects, publish: Callable[[Sequence[Raised]], None]) -> list[Raised]:
        """Record reports and alerts; `publish` the alerts that are new, then commit.

        A crash after the broker's acknowledgement but before the commit leaves the alert
        on the topic and not in the table: the batch is redelivered, raises the same alert
        (same id) again, and publishes it a second time. Consumers of `alerts` deduplicate
        by id. The other order (commit, then publish) could lose the record instead.
        """
        conn = self.conn
        with conn.transaction():
            fresh = _insert(conn, effects)
            if fresh:
                publish(fresh)
        return fresh

    def write_each(
        self, groups: Sequence[tuple[K, Effects]], publish: Callable[[Sequence[Raised]], None]
    ) -> tuple[list[Raised], list[tuple[K, BaseException]]]:
        """`write` for a batch the database refused: each group (one source record's
        effects) under a savepoint of its own, published before the one commit.

        Returns the new alerts, and the groups refused for good (failures.classify says
        permanent) with their errors: none of a refused group's rows is kept. Any other
        failure propagates and nothing is committed.
        """
        conn = self.conn
        fresh: list[Raised] = []
        refused: list[tuple[K, BaseException]] = []
        with conn.transaction():
            for key, effects in groups:
                try:
                    with conn.transaction():  # a savepoint
                        new = _insert(conn, effects)
                        if new:
                            publish(new)
                except Exception as exc:
                    if failures.classify(exc) is not Failure.PERMANENT:
                        raise
                    refused.append((key, exc))
                    continue
                fresh += new
        return fresh, refused


def _insert(conn: psycopg.Connection, effects: Effects) -> list[Raised]:
    """Insert the reports and alerts; the alerts not recorded before, once each."""
    if effects.reports:
        conn.execute(db.query("locations_insert_reports"), _columns(effects.reports, REPORT_COLUMNS))
    if not effects.alerts:
        return []
    rows = conn.execute(
        db.query("locations_insert_alerts"), _columns([r.alert for r in effects.alerts], ALERT_COLUMNS)
    )
    new = {row[0] for row in rows.fetchall()}
    # A record delivered twice in one batch raises the same alert twice: once is enough.
    return list({r.alert.id: r for r in effects.alerts if r.alert.id in new}.values())


# Query parameter -> attribute, for the unnest() inserts.
REPORT_COLUMNS = {
    "ids": "id", "lats": "lat", "lons": "lon", "descriptions": "description", "plates": "plate",
    "received_at": "received_at", "nearest_plates": "nearest_plate", "nearest_distances": "nearest_distance_m",
}  # fmt: skip
ALERT_COLUMNS = {
    "ids": "id", "kinds": "kind", "plates": "plate", "lats": "lat", "lons": "lon", "details": "detail",
    "created_at": "created_at",
}  # fmt: skip


def _columns(rows: Sequence[object], columns: dict[str, str]) -> dict[str, list]:
    """Rows as one list per query parameter."""
    return {param: [getattr(row, attr) for row in rows] for param, attr in columns.items()}
