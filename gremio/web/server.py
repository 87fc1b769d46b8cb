"""A threaded werkzeug server in a daemon thread: the live map's and the monitor's HTTP."""

from __future__ import annotations

import logging
import threading

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

log = logging.getLogger(__name__)


class _QuietRequests(WSGIRequestHandler):
    """No access-log line per request: dashboards poll every few seconds. Errors still log."""

    def log_request(self, *args: object) -> None:
        return None


class HttpServer:
    """A threaded werkzeug server for the app, in a daemon thread."""

    def __init__(self, app: Flask, host: str, port: int) -> None:
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_QuietRequests
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> HttpServer:
        self._thread.start()
        log.info("serving on http://%s:%d", self._server.host, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
