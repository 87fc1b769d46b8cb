"""Joining the guild (DESIGN §5, membership): the rules and the decisions.

An application is approved unless its RUT is already a member, its plate belongs to another
member, its RUT is flagged in `background_flags` (antecedentes), or an earlier pending
application has the same RUT. Applications are decided in the order they were received
(received_at, then id), one at a time, so each approval counts for the ones after it and
"earlier" means the same thing on every run. A decided application is never decided again.

Two lanes decide (docs/MEMBERSHIP.md):

* premium (members p1): `members_premium`, within a minute of the 202, every pending premium
  application each run;
* regular (members p0): `members_monthly`, the month's pending regular applications, once
  the month (America/Santiago) is over.

Both take one PostgreSQL advisory lock, so their decisions never interleave. The rules are
the pure `decide()`; `decide_pending()` feeds it from the database and records the outcome.
The AssetWatcher's `apply_function`, `premium_notice()`, is here too: the triggerer imports
it by its dotted path.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row, namedtuple_row

from gremio.db import query
from gremio.guild_time import month_bounds, report_month
from gremio.records import Alert, MemberApplication, now_utc
from gremio.safetext import mask_rut
from gremio.settings import get_settings
from gremio.topics import MEMBERS_PREMIUM_PARTITION

if TYPE_CHECKING:
    import psycopg
    from confluent_kafka import Message, Producer

log = logging.getLogger(__name__)

# One decider at a time, whichever lane: "gremio-members".
DECISION_LOCK = 0x67_72_65_6D_2D_6D_62
STATUSES = ("pending", "approved", "rejected")


class Rejection(StrEnum):
    """Why an application was rejected, in the order the rules are checked (DESIGN §5)."""

    ALREADY_MEMBER = "RUT is already a member"
    PLATE_TAKEN = "plate belongs to another member"
    FLAGGED = "RUT is flagged in background_flags (antecedentes)"
    EARLIER_PENDING = "an earlier pending application has the same RUT"

    @property
    def spanish(self) -> str:
        """The reason in the guild's words, for the staff's report."""
        return _SPANISH[self]


_SPANISH = {
    Rejection.ALREADY_MEMBER: "el RUT ya es socio del gremio",
    Rejection.PLATE_TAKEN: "la patente es de otro socio",
    Rejection.FLAGGED: "antecedentes",
    Rejection.EARLIER_PENDING: "ya hay una solicitud anterior pendiente con el mismo RUT",
}


def spanish_reason(reason: str | None) -> str:
    """A stored reason in Spanish; a reason the rules did not write is shown as it is."""
    if reason is None:
        return ""
    try:
        return Rejection(reason).spanish
    except ValueError:
        return reason


def received_order(app: MemberApplication) -> tuple[datetime, uuid.UUID]:
    """Received order; the id breaks ties (PostgreSQL orders uuids the same way)."""
    return (app.received_at, app.id)


@dataclass(frozen=True)
class Decision:
    application: MemberApplication
    rejection: Rejection | None = None

    @property
    def approved(self) -> bool:
        return self.rejection is None

    @property
    def status(self) -> str:
        return "approved" if self.approved else "rejected"


@dataclass
class Registry:
    """What the rules look at: members, flags, and the applications not yet decided."""

    members: dict[str, str] = field(default_factory=dict)  # rut -> plate
    flagged: set[str] = field(default_factory=set)
    pending: dict[str, set[tuple[datetime, uuid.UUID]]] = field(default_factory=dict)  # rut -> orders

    @property
    def plate_owners(self) -> dict[str, str]:
        return {plate: rut for rut, plate in self.members.items()}


# --- the rules (pure) ---------------------------------------------------------------------------


def rejection(
    app: MemberApplication, registry: Registry, plate_owners: Mapping[str, str]
) -> Rejection | None:
    """The first rule that rejects `app`, or None: it is approved."""
    if app.rut in registry.members:
        return Rejection.ALREADY_MEMBER
    owner = plate_owners.get(app.plate)
    if owner is not None and owner != app.rut:
        return Rejection.PLATE_TAKEN
    if app.rut in registry.flagged:
        return Rejection.FLAGGED
    if any(order < received_order(app) for order in registry.pending.get(app.rut, ())):
        return Rejection.EARLIER_PENDING
    return None


def decide(applications: Iterable[MemberApplication], registry: Registry) -> list[Decision]:
    """Decide `applications` in received order; `registry` is updated as each is decided.

    An application stops being pending once decided, and an approval makes a member at
    once, so a second application with the same RUT later in the batch finds a member, not
    a pending application.
    """
    plate_owners = registry.plate_owners
    decisions: list[Decision] = []
    for app in sorted(applications, key=received_order):
        registry.pending.get(app.rut, set()).discard(received_order(app))
        reason = rejection(app, registry, plate_owners)
        if reason is None:
            registry.members[app.rut] = app.plate
            plate_owners[app.plate] = app.rut
        decisions.append(Decision(app, reason))
    return decisions


def summary(decisions: list[Decision]) -> dict[str, Any]:
    """What a run decided, for its XCom and log: ids only."""
    return {
        "approved": [str(d.application.id) for d in decisions if d.approved],
        "rejected": {str(d.application.id): str(d.rejection) for d in decisions if not d.approved},
    }


# --- the database -----------------------------------------------------------------------------------


def load_registry(conn: psycopg.Connection, applications: list[MemberApplication]) -> Registry:
    """Members holding the applicants' RUTs or plates, their flags, their undecided applications."""
    params = {
        "ruts": sorted({a.rut for a in applications}),
        "plates": sorted({a.plate for a in applications}),
    }
    registry = Registry()
    for row in conn.cursor(row_factory=namedtuple_row).execute(query("members_registry"), params):
        if row.kind == "member":
            registry.members[row.rut] = row.plate
        elif row.kind == "flag":
            registry.flagged.add(row.rut)
        else:
            registry.pending.setdefault(row.rut, set()).add((row.received_at, row.id))
    return registry


def decide_pending(
    conn: psycopg.Connection,
    *,
    premium: bool,
    decided_by: str,
    received_from: datetime | None = None,
    received_until: datetime | None = None,
    decided_at: datetime | None = None,
    listed_month: date | None = None,
) -> list[Decision]:
    """Decide the pending applications of one lane (optionally received in [from, until)).

    One transaction under the decision lock: read, decide, record the decisions and the new
    members. Decided applications are left alone, so running it again decides nothing.
    `listed_month` (its first day) is the month whose list of new members carries these
    decisions: members_monthly gives its run's month; by default, the guild's month of the
    decision (the fast-track's).
    """
    with conn.transaction():
        conn.execute(query("members_decision_lock"), {"lock": DECISION_LOCK})
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                query("members_pending"),
                {"premium": premium, "received_from": received_from, "received_until": received_until},
            )
            .fetchall()
        )
        # Stored rows were validated at the API; the rules trust the system of record as it is.
        applications = [MemberApplication.model_construct(**row) for row in rows]
        if not applications:
            return []
        decisions = decide(applications, load_registry(conn, applications))
        decided_at = decided_at or now_utc()
        if listed_month is None:
            listed_month = report_month(decided_at, get_settings().guild_timezone)
        _record(conn, decisions, decided_by, decided_at, listed_month)
    for d in decisions:
        # Personal data never reaches logs: the id, the lane, the outcome and a masked RUT.
        log.info(
            "application %s (%s, RUT %s): %s%s",
            d.application.id,
            "premium" if d.application.premium else "regular",
            mask_rut(d.application.rut),
            d.status,
            f": {d.rejection}" if d.rejection else "",
        )
    return decisions


def _record(
    conn: psycopg.Connection,
    decisions: list[Decision],
    decided_by: str,
    decided_at: datetime,
    listed_month: date,
) -> None:
    conn.execute(
        query("members_record_decisions"),
        {
            "ids": [d.application.id for d in decisions],
            "statuses": [d.status for d in decisions],
            "reasons": [None if d.approved else str(d.rejection) for d in decisions],
            "decided_at": decided_at,
            "decided_by": decided_by,
            "listed_month": listed_month,
        },
    )
    approved = [d.application.id for d in decisions if d.approved]
    if not approved:
        return
    added = conn.execute(query("members_insert"), {"ids": approved}).fetchall()
    if len(added) != len(approved):
        # Someone wrote `members` outside the lock between the read and now: decide afresh.
        raise RuntimeError(
            f"{len(approved) - len(added)} approved applications clash with members added meanwhile;"
            " nothing was recorded, the next try decides again"
        )


def month_decisions(conn: psycopg.Connection, month: date, timezone: str) -> list[dict[str, Any]]:
    """The month's decided applications, approved first, each in received order (report rows)."""
    start, end = month_bounds(month, timezone)
    cur = conn.cursor(row_factory=dict_row)
    params = {"month": month.replace(day=1), "month_start": start, "month_end": end}
    return cur.execute(query("members_report"), params).fetchall()


# --- the premium safety net: applications pending too long raise an alert ------------------------

# uuid5 namespace of the `premium_pending` alerts: an application's alert id is always the same.
PREMIUM_PENDING_NAMESPACE = uuid.UUID("6d1f3c9e-4b8a-5e2f-9a07-3c5d2e1b8f40")


def premium_pending_alert(application_id: uuid.UUID, rut: str, received_at: datetime, now: datetime) -> Alert:
    """The alert for a premium application still pending at `now`: its id and a masked RUT only."""
    waited = int((now - received_at).total_seconds())
    return Alert(
        id=uuid.uuid5(PREMIUM_PENDING_NAMESPACE, str(application_id)),
        kind="premium_pending",
        detail=f"premium application {application_id} (RUT {mask_rut(rut)}) pending for {waited} s",
        created_at=now,
    )


def alert_stalled_premium(
    conn: psycopg.Connection, prod: Producer, older_than: timedelta, now: datetime | None = None
) -> list[Alert]:
    """One `premium_pending` alert on `alerts` for each premium application pending since before
    `now - older_than` and not alerted yet; returns the alerts raised.

    The alerts are on the topic (acknowledged) before the database remembers them; were that
    commit lost, the next sweep would send the same alert again, with the same id. They go
    into the `alerts` table in the same transaction, for the live map and `gremio watch`.
    """
    from gremio import alerts as alert_rows
    from gremio import kafka as gk
    from gremio import topics as t

    now = now or now_utc()
    with conn.transaction():
        rows = conn.execute(query("members_premium_stalled"), {"older_than": now - older_than}).fetchall()
        alerts = [premium_pending_alert(app_id, rut, received_at, now) for app_id, rut, received_at in rows]
        if not alerts:
            return []
        alert_rows.insert(conn, alerts)
        gk.produce_all(
            prod,
            [
                gk.Outgoing.of(a, t.ALERTS.name, str(app_id))
                for a, (app_id, _, _) in zip(alerts, rows, strict=True)
            ],
        )
        conn.execute(query("members_premium_alerted"), {"ids": [row[0] for row in rows], "alerted_at": now})
    for a in alerts:
        log.warning("premium_pending: %s", a.detail)  # the application id and a masked RUT only
    return alerts


# --- the AssetWatcher's apply_function (runs in the triggerer) ------------------------------------------


def premium_notice(message: Message) -> dict[str, Any] | None:
    """A record on members p1 (premium) becomes an asset event; anything else is passed over.

    The payload is where the record is, not what it says: the run drains and decides every
    pending premium application anyway, and the asset event (shown in the UI) carries no
    personal data.
    """
    if message.error() is not None or message.partition() != MEMBERS_PREMIUM_PARTITION:
        return None
    return {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()}
