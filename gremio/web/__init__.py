"""What the two web pages share: the report page (the API's `/`) and the live map (the
location service's `/`).

Both draw the service area on an SVG of their own (`static/santiago.js`): no tile server,
no CDN, nothing fetched from the internet, so the pages work on a laptop with no network
and on a phone behind the guild's own server. Each app registers `assets` (served at
`/assets/`) and renders its page with `page()`, which puts the page's settings in the HTML
as JSON and adds the security headers.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, make_response, render_template

from gremio.settings import Settings

assets = Blueprint(
    "assets", __name__, static_folder="static", static_url_path="/assets", template_folder="templates"
)

# Everything the pages load comes from their own server; the form posts to it with fetch.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "geolocation=(self)",
    "Cache-Control": "no-cache",
}


def service_area(settings: Settings) -> dict[str, float]:
    """The service area (DESIGN §5) as the map script takes it."""
    return {
        "lat_min": settings.service_area_lat_min,
        "lat_max": settings.service_area_lat_max,
        "lon_min": settings.service_area_lon_min,
        "lon_max": settings.service_area_lon_max,
    }


def page(template: str, script: str, config: dict[str, Any]) -> Response:
    """A page: `template` (extending gremio_base.html) with its module `script` and `config`."""
    response = make_response(render_template(template, script=script, config=config))
    response.headers.update(SECURITY_HEADERS)
    return response
