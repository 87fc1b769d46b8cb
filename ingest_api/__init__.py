"""The ingest API (DESIGN §4): validates, authenticates and produces; never writes the database.

`create_app()` builds the Flask app; gunicorn serves it (`gunicorn_conf.py`):

    gunicorn -c ingest_api/gunicorn_conf.py 'ingest_api:create_app()'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from gremio.settings import Settings, get_settings
from gremio.web import assets
from ingest_api import locations, members, ops, problems, reports, sales, web
from ingest_api.delivery import Delivery, ProducerLike, process_delivery
from ingest_api.intake import ApiState
from ingest_api.ratelimit import RateLimits

BLUEPRINTS = (members.bp, sales.bp, locations.bp, reports.bp, ops.bp, web.bp, assets)


def create_app(test_config: Mapping[str, Any] | None = None, producer: ProducerLike | None = None) -> Flask:
    """The API. `test_config` keys that name settings (DELIVERY_TIMEOUT_SECONDS, RATE_LIMIT_MEMBERS,
    ...) override them; others go to Flask's config. `producer` replaces this process's Kafka
    producer (a do-nothing one for the benchmark's baseline, for instance).
    """
    app = Flask(__name__)
    overrides = dict(test_config or {})
    settings = _settings(overrides)
    app.config.update(overrides)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    delivery = Delivery(producer) if producer is not None else process_delivery(settings)
    app.extensions["gremio"] = ApiState(settings, delivery)

    problems.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
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
