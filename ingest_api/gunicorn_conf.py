"""gunicorn's configuration for the ingest API (`make up`, docker-compose), from gremio's settings.

    gunicorn -c ingest_api/gunicorn_conf.py 'ingest_api:create_app()'

gthread workers: a request thread blocks until the broker acknowledges its record, so a
few threads per worker keep the CPU busy while others wait. API_WORKERS and API_THREADS
default to what measured best on a 2-core machine (docs/BENCHMARKS.md, "Ingest API").
Each worker owns one long-lived idempotent acks=all producer, created after the fork and
flushed when the worker exits, and one reader of the revoked cart tokens
(ingest_api/revocations.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile

# prometheus-client picks its value store when first imported: set multiprocess mode up
# before any worker imports it, so /metrics adds up every worker (ingest_api/metrics.py).
_metrics_dir = tempfile.mkdtemp(prefix="gremio-api-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

from gremio.logs import setup_logging  # noqa: E402
from gremio.settings import get_settings  # noqa: E402
from gremio.tokens import signing_keys  # noqa: E402

setup_logging()
_settings = get_settings()  # a refused setting stops gunicorn here, with one line naming it
_settings.require("cart_token_secret")
signing_keys(_settings)  # and a half-set key rotation (docs/API.md, "Rotating CART_TOKEN_SECRET")

wsgi_app = "ingest_api:create_app()"
bind = [f"{_settings.bind_host}:{_settings.api_port}"]
worker_class = "gthread"
workers = _settings.api_workers
threads = _settings.api_threads
keepalive = 5  # carts and the simulator reuse their connections
timeout = 30
graceful_timeout = 30  # time for a stopping worker to answer in-flight requests and flush
proc_name = "gremio-api"
# gunicorn 25+ opens a control socket in $HOME by default, one path for every instance on the
# machine; the process manager (supervisord, docker) is our control interface instead.
control_socket_disable = True
errorlog = "-"


def post_fork(server, worker) -> None:
    """The worker's producer, created in the worker (librdkafka threads do not survive fork).

    A fatal producer error retires the worker; gunicorn starts a fresh one with a new producer.
    """
    from ingest_api.delivery import process_delivery
    from ingest_api.revocations import process_revocations

    def retire() -> None:
        worker.alive = False

    process_delivery(_settings, on_fatal=retire)
    process_revocations(_settings)  # the worker's own reader of cart_revocations, from the start


def worker_exit(server, worker) -> None:
    """Flush whatever the worker still has in flight before it goes."""
    from ingest_api.delivery import close_process_delivery
    from ingest_api.revocations import close_process_revocations

    close_process_delivery(timeout=graceful_timeout)
    close_process_revocations()


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    shutil.rmtree(_metrics_dir, ignore_errors=True)
