"""The live view over HTTP: the live map (`/`), `GET /v1/live` (JSON) and `/metrics`, on LIVE_PORT.

The app is built by `create_app(view)` with one blueprint per resource. The map page
(templates/live.html, static/live.js, over gremio.web's offline map) polls `/v1/live`
every 2 s. It is served from a thread of the service process by werkzeug, which is plenty
for a few dashboards polling every 2 s.
"""

from __future__ import annotations

import logging
import threading

from flask import Blueprint, Flask, Response, current_app, jsonify, url_for
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from consumers.locations.view import LiveView
from gremio.web import assets, page

log = logging.getLogger(__name__)

live = Blueprint("live", __name__)
metrics = Blueprint("metrics", __name__)
live_map = Blueprint("live_map", __name__)
REFRESH_SECONDS = 2.0  # how often the map page polls /v1/live


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


@live.get("/v1/live")
def get_live() -> Response:
    """Live carts, fugitive reports of the report window, and recent alerts."""
    view: LiveView = current_app.extensions["live_view"]
    response = jsonify(view.snapshot())
    response.headers["Cache-Control"] = "no-store"
    return response


@metrics.get("/metrics")
def get_metrics() -> Response:
    registry: CollectorRegistry = current_app.extensions["metrics_registry"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def create_app(view: LiveView, registry: CollectorRegistry = REGISTRY) -> Flask:
    """The live-location HTTP app around a view."""
    app = Flask(__name__)
    app.extensions["live_view"] = view
    app.extensions["metrics_registry"] = registry
    app.register_blueprint(live)
    app.register_blueprint(metrics)
    app.register_blueprint(live_map)
    app.register_blueprint(assets)
    return app


class _QuietRequests(WSGIRequestHandler):
    """No access-log line per request: dashboards poll /v1/live every 2 s. Errors still log."""

    def log_request(self, *args: object) -> None:
        return None


class LiveServer:
    """A threaded werkzeug server for the app, in a daemon thread."""

    def __init__(self, app: Flask, host: str, port: int) -> None:
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_QuietRequests
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> LiveServer:
        self._thread.start()
        log.info("live view on http://%s:%d/v1/live", self._server.host, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
