"""The live view over HTTP: the live map (`/`), `GET /v1/live` (JSON) and `/metrics`, on LIVE_PORT.

The app is built by `create_app(view)` with one blueprint per resource. The map page
(templates/live.html, static/live.js, over gremio.web's offline map) polls `/v1/live`
every 2 s. It is served from a thread of the service process by werkzeug, which is plenty
for a few dashboards polling every 2 s.

**Staff login.** The map and `/v1/live` show where every cart is, so every path needs the
staff login (HTTP Basic, STAFF_USER and a werkzeug hash in STAFF_PASSWORD_HASH; `make up` and
`gremio secrets` generate them, docs/OPERATIONS.md). A browser asks for it once and sends it
with the page's polls. A successful check is remembered for CACHE_SECONDS, keyed by a SHA-256
of the header, so polling does not pay scrypt every 2 s; a failed one is never remembered.
`/metrics` (counts only: no plate, position or personal data) is open to loopback clients,
the local Prometheus; from anywhere else it needs the login too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import threading
import time

import msgspec
from flask import Blueprint, Flask, Response, current_app, request, url_for
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from werkzeug.datastructures import Authorization
from werkzeug.security import check_password_hash

from consumers.locations.view import Area, LiveView
from gremio.records import NEW_PLATE, OLD_PLATE
from gremio.settings import Settings, get_settings
from gremio.web import assets, page

log = logging.getLogger(__name__)

live = Blueprint("live", __name__)
metrics = Blueprint("metrics", __name__)
live_map = Blueprint("live_map", __name__)
REFRESH_SECONDS = 2.0  # how often the map page polls /v1/live
REALM = "gremio staff"
CACHE_SECONDS = 60.0  # how long a successful login check is remembered
CACHE_MAX = 256  # remembered headers at most (each staff browser has one)
OPEN_ON_LOOPBACK = ("metrics.get_metrics",)  # endpoints loopback clients reach without the login
# GET /v1/live's query parameters (docs/LOCATIONS.md); any other is a 400.
LIVE_PARAMS = frozenset({"bbox", "limit", "after"})
MAX_LIMIT = 1000  # carts per page at most
_DEGREES = r"(-?[0-9]{1,3}(?:\.[0-9]{1,12})?)"
_BBOX = re.compile(",".join([_DEGREES] * 4), re.ASCII)
_LIMIT = re.compile(r"[1-9][0-9]{0,3}", re.ASCII)


class StaffLogin:
    """HTTP Basic against one user and a werkzeug password hash, successful checks cached."""

    def __init__(self, user: str, password_hash: str, cache_seconds: float = CACHE_SECONDS) -> None:
        self.user = user
        self._hash = password_hash
        self.cache_seconds = cache_seconds
        self._passed: dict[bytes, float] = {}  # sha256(header) -> monotonic expiry
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> StaffLogin:
        """The service's login; stops with one line naming STAFF_PASSWORD_HASH when it is unset."""
        return cls(settings.staff_user, settings.secret("staff_password_hash"))

    def allows(self, header: str | None) -> bool:
        """Whether this Authorization header carries the staff login."""
        if not header:
            return False
        key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        now = time.monotonic()
        with self._lock:
            if self._passed.get(key, 0.0) > now:
                return True
        auth = Authorization.from_header(header)
        if auth is None or auth.type != "basic" or auth.username is None or auth.password is None:
            return False
        # Both are checked, whatever the user name: a wrong name costs the same time as a wrong password.
        right_user = hmac.compare_digest(auth.username.encode(), self.user.encode())
        right_password = check_password_hash(self._hash, auth.password)
        if not (right_user and right_password):
            return False
        with self._lock:
            if len(self._passed) >= CACHE_MAX:
                self._passed = {k: t for k, t in self._passed.items() if t > now}
                if len(self._passed) >= CACHE_MAX:
                    self._passed.clear()
            self._passed[key] = now + self.cache_seconds
        return True


def _from_loopback() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _require_staff() -> Response | None:
    """Before every request: the staff login, or 401 (problem+json) asking for it."""
    if request.endpoint in OPEN_ON_LOOPBACK and _from_loopback():
        return None
    login: StaffLogin = current_app.extensions["staff_login"]
    if login.allows(request.headers.get("Authorization")):
        return None
    response = _problem(401, "Unauthorized", "the staff login is required (HTTP Basic; docs/OPERATIONS.md)")
    response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    return response


def _problem(status: int, title: str, detail: str) -> Response:
    """An RFC 9457 problem+json response."""
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
    }
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    response.headers["Cache-Control"] = "no-store"
    return response


@live_map.get("/")
def map_page() -> Response:
    """The live map: carts, fugitive reports and alerts, refreshed from /v1/live."""
    rules = current_app.extensions["live_view"].rules
    config = {
        "area": {
            "lat_min": rules.lat_min,
            "lat_max": rules.lat_max,
            "lon_min": rules.lon_min,
            "lon_max": rules.lon_max,
        },
        "live_url": url_for("live.get_live"),
        "refresh_seconds": REFRESH_SECONDS,
        "ttl_seconds": rules.ttl.total_seconds(),
        "report_window_seconds": rules.report_window.total_seconds(),
        "match_radius_m": rules.match_radius_m,
    }
    return page("live.html", url_for("static", filename="live.js"), config)


class BadQuery(ValueError):
    """A /v1/live query parameter that is not what docs/LOCATIONS.md describes: 400."""


def _one(name: str) -> str | None:
    values = request.args.getlist(name)
    if len(values) > 1:
        raise BadQuery(f"{name} is given {len(values)} times: give it at most once")
    return values[0] if values else None


def live_query() -> tuple[Area | None, int | None, str | None]:
    """(area, limit, after) of the request's query string, or BadQuery saying what is wrong.

    Every value is matched against a strict ASCII pattern before it is converted, so
    float()'s and int()'s leniencies (`nan`, `inf`, `1_0`, `1e308`, other scripts' digits,
    spaces) never get through.
    """
    unknown = sorted(set(request.args) - LIVE_PARAMS)
    if unknown:
        raise BadQuery(
            f"unknown query parameter {unknown[0][:40]!r}: /v1/live takes {', '.join(sorted(LIVE_PARAMS))}"
        )
    area = limit = after = None
    bbox = _one("bbox")
    if bbox is not None:
        match = _BBOX.fullmatch(bbox) if len(bbox) <= 120 else None
        if match is None:
            raise BadQuery(
                "bbox must be min_lon,min_lat,max_lon,max_lat in decimal degrees, e.g. -70.8,-33.6,-70.5,-33.3"
            )
        min_lon, min_lat, max_lon, max_lat = (float(v) for v in match.groups())
        if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
            raise BadQuery(
                "bbox must have -180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90"
            )
        area = Area(min_lon, min_lat, max_lon, max_lat)
    text = _one("limit")
    if text is not None:
        if not (_LIMIT.fullmatch(text) and 1 <= int(text) <= MAX_LIMIT):
            raise BadQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}")
        limit = int(text)
    after = _one("after")
    if after is not None and not (NEW_PLATE.fullmatch(after) or OLD_PLATE.fullmatch(after)):
        raise BadQuery("after must be a plate as /v1/live writes it (the `next` of the previous page)")
    return area, limit, after


@live.get("/v1/live")
def get_live() -> Response:
    """Live carts, fugitive reports of the report window, and recent alerts; optionally only
    those inside `bbox`, and the carts a page of `limit` at a time after `after`."""
    view: LiveView = current_app.extensions["live_view"]
    try:
        area, limit, after = live_query()
    except BadQuery as exc:
        return _problem(400, "Bad Request", str(exc))
    body = msgspec.json.encode(view.snapshot(area, limit, after))
    return Response(body, mimetype="application/json", headers={"Cache-Control": "no-store"})


@metrics.get("/metrics")
def get_metrics() -> Response:
    registry: CollectorRegistry = current_app.extensions["metrics_registry"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def create_app(
    view: LiveView, registry: CollectorRegistry = REGISTRY, login: StaffLogin | None = None
) -> Flask:
    """The live-location HTTP app around a view, behind `login` (default: the settings' staff
    login; SettingsError naming STAFF_PASSWORD_HASH when it is not set)."""
    app = Flask(__name__)
    app.extensions["live_view"] = view
    app.extensions["metrics_registry"] = registry
    app.extensions["staff_login"] = login or StaffLogin.from_settings(get_settings())
    app.before_request(_require_staff)
    app.register_blueprint(live)
    app.register_blueprint(metrics)
    app.register_blueprint(live_map)
    app.register_blueprint(assets)
    return app
