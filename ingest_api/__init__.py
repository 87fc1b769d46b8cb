"""The ingest API (DESIGN §4): validates, authenticates and produces; never writes the database.

`create_app()` builds the Flask app; gunicorn serves it (`gunicorn_conf.py`):

    gunicorn -c ingest_api/gunicorn_conf.py 'ingest_api:create_app()'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from gremio.settings import Settings, get_settings
from gremio.tokens import signing_keys
from gremio.web import assets
from ingest_api import locations, members, ops, problems, reports, sales, web
from ingest_api.delivery import Delivery, ProducerLike, process_delivery
from ingest_api.intake import ApiState
from ingest_api.ratelimit import RateLimits
from ingest_api.revocations import STARTUP_WAIT_SECONDS, Revocations, process_revocations

BLUEPRINTS = (members.bp, sales.bp, locations.bp, reports.bp, ops.bp, web.bp, assets)


def create_app(
    test_config: Mapping[str, Any] | None = None,
    producer: ProducerLike | None = None,
    revocations: Revocations | None = None,
) -> Flask:
    """The API. `test_config` keys that name settings (DELIVERY_TIMEOUT_SECONDS, RATE_LIMIT_MEMBERS,
    ...) override them; others go to Flask's config. `producer` replaces this process's Kafka
    producer (a do-nothing one for the benchmark's baseline, for instance).

    The revoked cart tokens come from this process's consumer of `cart_revocations`
    (ingest_api/revocations.py), which a new app waits for (at most STARTUP_WAIT_SECONDS);
    with a stand-in producer, from `revocations` (none unless given).
    """
    app = Flask(__name__)
    overrides = dict(test_config or {})
    settings = _settings(overrides)
    app.config.update(overrides)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    signing_keys(settings)  # a half-set key rotation stops the service here, naming the setting
    delivery = Delivery(producer) if producer is not None else process_delivery(settings)
    if revocations is None:
        revocations = Revocations() if producer is not None else process_revocations(settings)
    revocations.wait_loaded(STARTUP_WAIT_SECONDS)
    app.extensions["gremio"] = ApiState(settings, delivery, revocations)

    problems.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    if settings.api_proxy_hops:  # the client's address as the trusted proxies saw it
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.api_proxy_hops)  # type: ignore[method-assign]
    limits = RateLimits(settings.rate_limit_storage_uri)
    limits.protect(app, members.bp.name, settings.rate_limit_members)
    limits.protect(app, reports.bp.name, settings.rate_limit_reports)
    return app


def _settings(overrides: dict[str, Any]) -> Settings:
    """The settings, with the test_config keys that name settings taken out and applied."""
    settings = get_settings()
    update = {
        key.lower(): overrides.pop(key) for key in list(overrides) if key.lower() in Settings.model_fields
    }
    return Settings.model_validate({**settings.model_dump(), **update}) if update else settings


__all__ = ["create_app"]
