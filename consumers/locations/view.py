"""The live view of the guild's carts: pure logic, no I/O (DESIGN §5, live locations).

`LiveView` holds each live cart's newest position, the recent fugitive reports and the
recent alerts, and decides which alerts a record raises. `view.apply(record)` is the
service's stateful update: it changes the view and returns the effects (alerts, reports) that
the service then makes durable. Time comes from an injected clock, so tests can move it.

Every public method takes the view's lock: the run loop writes while the HTTP thread and
the terminal board read.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from geographiclib.geodesic import Geodesic

from gremio.records import Alert, AlertKind, CartPosition, FugitiveReport, Record, Sale, now_utc
from gremio.settings import Settings

Clock = Callable[[], datetime]

# Mean Earth radius (IUGG) for the haversine pre-filter of the nearest-cart search.
_MEAN_EARTH_RADIUS_M = 6_371_008.8
# Haversine on the mean sphere is within 0.6 % of the WGS84 geodesic. It is the cheap
# first pass; the geodesic decides wherever the answer could differ:
# - nearest cart: every cart within this factor of the best haversine distance gets the
#   exact computation, so the pre-filter never drops the true nearest cart;
_SHORTLIST_FACTOR = 1.02
_SHORTLIST_SLACK_M = 1.0
# - jump: a speed from haversine at or above this share of the limit is recomputed with
#   the geodesic, so every jump decision (and every speed near or over the limit) is exact.
_EXACT_SPEED_SHARE = 0.98


@dataclass(frozen=True, slots=True)
class Rules:
    """The live-location rule parameters (settings, DESIGN §5)."""

    ttl: timedelta
    report_window: timedelta
    jump_speed_kmh: float
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float
    match_radius_m: float
    suppress: timedelta
    recent_alerts: int = 100  # at most this many alerts on the board and in /v1/live

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Rules:
        """The rules of these settings; without settings, the guild's defaults."""
        settings = settings or Settings.model_construct()
        return cls(
            ttl=timedelta(seconds=settings.live_ttl_seconds),
            report_window=timedelta(seconds=settings.report_window_seconds),
            jump_speed_kmh=settings.jump_speed_kmh,
            lat_min=settings.service_area_lat_min,
            lat_max=settings.service_area_lat_max,
            lon_min=settings.service_area_lon_min,
            lon_max=settings.service_area_lon_max,
            match_radius_m=settings.fugitive_match_radius_m,
            suppress=timedelta(seconds=settings.alert_suppress_seconds),
        )

    def in_area(self, lat: float, lon: float) -> bool:
        return self.lat_min <= lat <= self.lat_max and self.lon_min <= lon <= self.lon_max


@dataclass(frozen=True, slots=True)
class Area:
    """A box of longitudes and latitudes (GET /v1/live?bbox=min_lon,min_lat,max_lon,max_lat)."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def contains(self, lat: float, lon: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon


def _plate_of(cart: Cart) -> str:
    return cart.plate


# --- geometry -----------------------------------------------------------------------------


def geodesic_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The WGS84 geodesic distance in metres (Karney's algorithm, geographiclib)."""
    return Geodesic.WGS84.Inverse(lat1, lon1, lat2, lon2, Geodesic.DISTANCE)["s12"]


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on the mean sphere: a cheap upper/lower bound for the search."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _MEAN_EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


# --- ids ----------------------------------------------------------------------------------


def alert_id(source_id: uuid.UUID, kind: str) -> uuid.UUID:
    """An alert's id: the same source record and kind always give the same alert."""
    return uuid.uuid5(source_id, kind)


def position_from_sale(sale: Sale) -> CartPosition:
    """A sale's position as a CartPosition (recorded at `sold_at`), with a stable id."""
    return CartPosition.model_construct(
        id=uuid.uuid5(sale.id, "position"),
        plate=sale.plate,
        lat=sale.lat,
        lon=sale.lon,
        recorded_at=sale.sold_at,
        received_at=sale.received_at,
    )


# --- state --------------------------------------------------------------------------------


@dataclass(slots=True)
class Cart:
    """A live cart: its newest position, and when any position of it last arrived."""

    plate: str
    lat: float
    lon: float
    recorded_at: datetime
    seen_at: datetime  # newest `received_at` of any of its positions (capped at now)
    position_id: uuid.UUID
    speed_kmh: float | None = None  # implied by its last two positions
    # (recorded_at, seen_at) as /v1/live writes them: made by the first snapshot that shows
    # this position, reset when seen_at moves (isoformat is most of a snapshot's cost).
    iso: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class SeenReport:
    """A fugitive report and the nearest live cart when it was processed."""

    id: uuid.UUID
    lat: float
    lon: float
    description: str | None
    plate: str | None
    received_at: datetime
    nearest_plate: str | None
    nearest_distance_m: float | None


@dataclass(frozen=True, slots=True)
class Raised:
    """An alert and the key of its `alerts` record (the plate, or the report id)."""

    alert: Alert
    key: str


@dataclass(slots=True)
class Effects:
    """What handling records produced: alerts and reports to make durable, and counts."""

    alerts: list[Raised] = field(default_factory=list)
    reports: list[SeenReport] = field(default_factory=list)
    applied: int = 0  # positions that became their cart's newest
    stale: int = 0  # positions older than their cart's newest, ignored

    def extend(self, other: Effects) -> None:
        self.alerts += other.alerts
        self.reports += other.reports
        self.applied += other.applied
        self.stale += other.stale


class LiveView:
    """Carts by plate, recent reports and alerts, and the duplicate-suppression memory."""

    def __init__(self, rules: Rules | None = None, clock: Clock = now_utc) -> None:
        self.rules = rules or Rules.from_settings()
        self.clock = clock
        self.lock = threading.RLock()
        self._carts: dict[str, Cart] = {}
        self._reports: dict[uuid.UUID, SeenReport] = {}
        self._alerts: dict[uuid.UUID, Alert] = {}
        self._members: dict[str, str] = {}  # plate -> master's name
        self._last_raised: dict[tuple[str, str], datetime] = {}  # (kind, plate) -> when

    # --- inputs -------------------------------------------------------------------------

    def apply(self, record: Record, replay: bool = False, now: datetime | None = None) -> Effects:
        """Update the view with one record and return its effects (the view changes: applying
        a record twice is not the same as once). A replayed record (already processed
        before) only rebuilds state. A position is judged at `now` (default: the clock); the
        service gives a whole batch the time it asked `unknown_plates` at."""
        effects = Effects()
        self.apply_into(effects, record, replay, now)
        return effects

    def apply_into(
        self, effects: Effects, record: Record, replay: bool = False, now: datetime | None = None
    ) -> None:
        """`apply`, adding the effects to `effects` (the service's one accumulator per batch:
        no Effects per record). If it raises, `effects` is as it was before the call."""
        with self.lock:
            alerts, reports, applied, stale = (
                len(effects.alerts),
                len(effects.reports),
                effects.applied,
                effects.stale,
            )
            try:
                if isinstance(record, CartPosition):
                    self._position(effects, record, "position", replay, now or self.clock())
                elif isinstance(record, Sale):
                    self._position(effects, position_from_sale(record), "sale", replay, now or self.clock())
                elif isinstance(record, FugitiveReport):
                    if not replay:
                        effects.extend(self._report(record))
                else:
                    raise TypeError(f"the live view does not take {type(record).__name__}")
            except BaseException:
                del effects.alerts[alerts:], effects.reports[reports:]
                effects.applied, effects.stale = applied, stale
                raise

    def unknown_plates(self, records: Iterable[Record], now: datetime | None = None) -> list[str]:
        """The plates among these positions and sales that would raise `unregistered_cart` at
        `now`: no approved member's as far as the view knows, and not suppressed. Sorted.

        The service looks them up in `members` before it applies the batch (at the same
        `now`), so an approval committed before a position arrived is always seen. A cart
        already alerted for stays suppressed, so pinging while unregistered costs no lookup.
        Pass only the records that are applied unreplayed: the others raise nothing.
        """
        with self.lock:
            now = now or self.clock()
            plates = {
                record.plate
                for record in records
                if isinstance(record, CartPosition | Sale)
                and record.plate not in self._members
                and not self._suppressed("unregistered_cart", record.plate, now)
            }
            return sorted(plates)

    def unknown_near(self, reports: Sequence[FugitiveReport], now: datetime | None = None) -> list[str]:
        """The plates of live carts within the match radius of these reports that the view
        does not know as members. Sorted.

        The service looks them up with `unknown_plates`' plates, before the reports are matched: a
        cart that only the mirror has shown this instance (another instance holds it) was
        never looked up here, and a report must be matched by what `members` says now.
        """
        if not reports:
            return []
        with self.lock:
            now = now or self.clock()
            reach = self.rules.match_radius_m * _SHORTLIST_FACTOR + _SHORTLIST_SLACK_M
            plates = {
                c.plate
                for c in self._carts.values()
                if c.plate not in self._members
                and not self._expired(c, now)
                and any(haversine_m(r.lat, r.lon, c.lat, c.lon) <= reach for r in reports)
            }
            return sorted(plates)

    def set_members(self, members: Mapping[str, str]) -> None:
        """The approved members' plates, each with its master's name."""
        with self.lock:
            self._members = dict(members)

    def add_members(self, members: Mapping[str, str]) -> None:
        """Members found since the last `set_members` (plate -> master's name)."""
        with self.lock:
            self._members.update(members)

    def seed_suppression(self, raised: Iterable[tuple[str, str, datetime]]) -> None:
        """Remember alerts raised earlier (kind, plate, created_at), e.g. before a restart."""
        with self.lock:
            for kind, plate, at in raised:
                key = (kind, plate)
                if key not in self._last_raised or self._last_raised[key] < at:
                    self._last_raised[key] = at

    def merge_alerts(self, alerts: Iterable[Alert]) -> None:
        """Alerts from elsewhere (the table) for the recent-alerts list."""
        with self.lock:
            for alert in alerts:
                self._alerts.setdefault(alert.id, alert)
            self._trim_alerts(self.clock())

    def merge_reports(self, reports: Iterable[SeenReport]) -> None:
        """Reports from elsewhere (the table); a report already shown keeps its nearest cart."""
        with self.lock:
            for report in reports:
                self._reports.setdefault(report.id, report)

    def keep_carts(self, keep: Callable[[str], bool]) -> list[str]:
        """Forget the carts `keep` rejects (their partitions, newly taken over, are rebuilt)."""
        with self.lock:
            gone = [plate for plate in self._carts if not keep(plate)]
            for plate in gone:
                del self._carts[plate]
            return gone

    def expire(self) -> list[Cart]:
        """Drop carts silent for longer than the TTL, and old reports, alerts and memory."""
        with self.lock:
            now = self.clock()
            gone = [cart for cart in self._carts.values() if self._expired(cart, now)]
            for cart in gone:
                del self._carts[cart.plate]
            since = now - self.rules.report_window
            for report_id in [r.id for r in self._reports.values() if r.received_at < since]:
                del self._reports[report_id]
            self._trim_alerts(now)
            quiet = now - self.rules.suppress
            for key in [k for k, at in self._last_raised.items() if at <= quiet]:
                del self._last_raised[key]
            return gone

    # --- outputs ------------------------------------------------------------------------

    def carts(self) -> list[Cart]:
        """The live carts, by plate."""
        with self.lock:
            now = self.clock()
            return sorted(
                (c for c in self._carts.values() if not self._expired(c, now)), key=lambda c: c.plate
            )

    def live_count(self) -> int:
        with self.lock:
            now = self.clock()
            return sum(1 for c in self._carts.values() if not self._expired(c, now))

    def snapshot(
        self, area: Area | None = None, limit: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        """The view as `GET /v1/live` returns it (docs/LOCATIONS.md, "GET /v1/live").

        With no arguments: every live cart, the report window's reports and the recent
        alerts. `area` keeps the carts and reports inside it; `after` keeps the carts whose
        plate sorts after it, and `limit` at most that many carts (by plate). When `limit`
        is given the body also has `next`: the `after` of the next page, or None on the last.
        """
        with self.lock:
            now = self.clock()
            ttl = self.rules.ttl
            live = [c for c in self._carts.values() if now - c.seen_at <= ttl]
            if area is not None:
                live = [c for c in live if area.contains(c.lat, c.lon)]
            if after is not None:
                live = [c for c in live if c.plate > after]
            live.sort(key=_plate_of)
            next_after: str | None = None
            if limit is not None and len(live) > limit:
                live = live[:limit]
                next_after = live[-1].plate if live else None
            members = self._members
            carts = []
            for c in live:
                master = members.get(c.plate)
                seconds = (now - c.seen_at).total_seconds()
                speed = c.speed_kmh
                iso = c.iso
                if iso is None:
                    iso = c.iso = (c.recorded_at.isoformat(), c.seen_at.isoformat())
                carts.append({
                    "plate": c.plate,
                    "master": master,
                    "registered": master is not None,
                    "lat": c.lat,
                    "lon": c.lon,
                    "recorded_at": iso[0],
                    "seen_at": iso[1],
                    "seconds_since_seen": round(seconds, 1) if seconds > 0 else 0.0,
                    "speed_kmh": None if speed is None else round(speed, 1),
                })  # fmt: skip
            since = now - self.rules.report_window
            reports = sorted(
                (
                    r
                    for r in self._reports.values()
                    if r.received_at >= since and (area is None or area.contains(r.lat, r.lon))
                ),
                key=lambda r: (r.received_at, r.id),
                reverse=True,
            )
            alerts = self._recent_alerts(now)
        body: dict[str, Any] = {
            "carts": carts,
            "reports": [_report_json(r) for r in reports],
            "alerts": [a.model_dump(mode="json") for a in alerts],
        }
        if limit is not None:
            body["next"] = next_after
        return body

    def master(self, plate: str) -> str | None:
        with self.lock:
            return self._members.get(plate)

    def nearest(self, lat: float, lon: float, registered_only: bool = False) -> tuple[Cart, float] | None:
        """The live cart nearest to a point, and its geodesic distance in metres."""
        with self.lock:
            now = self.clock()
            candidates = [
                c
                for c in self._carts.values()
                if not self._expired(c, now) and (not registered_only or c.plate in self._members)
            ]
        if not candidates:
            return None
        rough = [(haversine_m(lat, lon, c.lat, c.lon), c) for c in candidates]
        bound = min(d for d, _ in rough) * _SHORTLIST_FACTOR + _SHORTLIST_SLACK_M
        exact = [(geodesic_m(lat, lon, c.lat, c.lon), c.plate, c) for d, c in rough if d <= bound]
        distance, _, cart = min(exact, key=lambda item: (item[0], item[1]))
        return cart, distance

    # --- rules --------------------------------------------------------------------------

    def _expired(self, cart: Cart, now: datetime) -> bool:
        return now - cart.seen_at > self.rules.ttl

    def _position(
        self, effects: Effects, pos: CartPosition, source: str, replay: bool, now: datetime
    ) -> None:
        # The hot path (one call per position): attributes read once, alert texts built only
        # when an alert would not be suppressed.
        plate, lat, lon, recorded_at = pos.plate, pos.lat, pos.lon, pos.recorded_at
        rules = self.rules
        seen = min(pos.received_at, now)
        carts = self._carts
        cart = carts.get(plate)
        if cart is not None and now - cart.seen_at > rules.ttl:
            # Back after going silent: it starts afresh (no jump against a stale position).
            del carts[plate]
            cart = None
        if (
            not replay
            and plate not in self._members
            and not self._suppressed("unregistered_cart", plate, now)
        ):
            self._raise(
                effects, "unregistered_cart", pos, now,
                f"{plate} sent a {source} but is not the plate of any approved member",
            )  # fmt: skip
        speed = None
        if cart is not None:
            if recorded_at <= cart.recorded_at:
                # Older (or the same) position arriving late: it proves the cart is alive, no more.
                if seen > cart.seen_at:
                    cart.seen_at, cart.iso = seen, None
                effects.stale += 1
                return
            seconds = (recorded_at - cart.recorded_at).total_seconds()
            metres = haversine_m(cart.lat, cart.lon, lat, lon)
            speed = metres / seconds * 3.6
            if speed >= _EXACT_SPEED_SHARE * rules.jump_speed_kmh:
                metres = geodesic_m(cart.lat, cart.lon, lat, lon)
                speed = metres / seconds * 3.6
            if not replay and speed > rules.jump_speed_kmh:
                self._raise(
                    effects, "jump", pos, now,
                    f"{plate} moved {metres:.0f} m in {seconds:.1f} s ({speed:.0f} km/h, "
                    f"over {rules.jump_speed_kmh:g} km/h)",
                )  # fmt: skip
            if cart.seen_at > seen:
                seen = cart.seen_at
        carts[plate] = Cart(plate, lat, lon, recorded_at, seen, pos.id, speed)
        effects.applied += 1
        if not replay and not (
            rules.lat_min <= lat <= rules.lat_max and rules.lon_min <= lon <= rules.lon_max
        ):
            self._raise(
                effects, "out_of_area", pos, now,
                f"{plate} at ({lat:.5f}, {lon:.5f}) is outside the service area "
                f"(lat {rules.lat_min:g}..{rules.lat_max:g}, lon {rules.lon_min:g}..{rules.lon_max:g})",
            )  # fmt: skip

    def _raise(
        self, effects: Effects, kind: AlertKind, pos: CartPosition, now: datetime, detail: str
    ) -> None:
        """Raise unless the same kind was raised for the same cart within the window."""
        if self._suppressed(kind, pos.plate, now):
            return
        self._last_raised[(kind, pos.plate)] = now
        alert = Alert(
            id=alert_id(pos.id, kind), kind=kind, plate=pos.plate, lat=pos.lat, lon=pos.lon,
            detail=detail, created_at=now,
        )  # fmt: skip
        self._alerts.setdefault(alert.id, alert)
        effects.alerts.append(Raised(alert, pos.plate))

    def _suppressed(self, kind: AlertKind, plate: str, now: datetime) -> bool:
        """Whether the same kind was raised for the same cart within the window."""
        last = self._last_raised.get((kind, plate))
        return last is not None and now - last < self.rules.suppress

    def _report(self, report: FugitiveReport) -> Effects:
        """Every report is shown with the nearest live cart and raises one alert."""
        now = self.clock()
        nearest = self.nearest(report.lat, report.lon)
        registered = self.nearest(report.lat, report.lon, registered_only=True)
        match = registered if registered and registered[1] <= self.rules.match_radius_m else None
        seen = SeenReport(
            report.id, report.lat, report.lon, report.description, report.plate, report.received_at,
            nearest[0].plate if nearest else None, nearest[1] if nearest else None,
        )  # fmt: skip
        self._reports.setdefault(report.id, seen)
        if match:
            detail = f"report {report.id}: registered cart {match[0].plate} is {match[1]:.0f} m away"
        else:
            detail = f"report {report.id}: no registered cart within {self.rules.match_radius_m:g} m"
        if report.plate:
            detail += f"; reported plate {report.plate}"
        if report.description:
            detail += f"; {report.description[:120]!r}"
        alert = Alert(
            id=alert_id(report.id, "fugitive_report"), kind="fugitive_report",
            plate=match[0].plate if match else None, lat=report.lat, lon=report.lon,
            detail=detail, created_at=now,
        )  # fmt: skip
        self._alerts.setdefault(alert.id, alert)
        return Effects(alerts=[Raised(alert, str(report.id))], reports=[seen])

    # --- helpers ------------------------------------------------------------------------

    def _recent_alerts(self, now: datetime) -> list[Alert]:
        since = now - self.rules.report_window
        recent = [a for a in self._alerts.values() if a.created_at >= since]
        recent.sort(key=lambda a: (a.created_at, str(a.id)), reverse=True)
        return recent[: self.rules.recent_alerts]

    def _trim_alerts(self, now: datetime) -> None:
        keep = {a.id for a in self._recent_alerts(now)}
        for alert_id_ in [i for i in self._alerts if i not in keep]:
            del self._alerts[alert_id_]


def _report_json(report: SeenReport) -> dict[str, Any]:
    return {
        "id": str(report.id),
        "lat": report.lat,
        "lon": report.lon,
        "description": report.description,
        "plate": report.plate,
        "received_at": report.received_at.isoformat(),
        "nearest_plate": report.nearest_plate,
        "nearest_distance_m": None
        if report.nearest_distance_m is None
        else round(report.nearest_distance_m, 1),
    }
