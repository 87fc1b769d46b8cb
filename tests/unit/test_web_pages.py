"""The two web pages as the apps serve them: their settings, headers and assets (no browser).

tests/browser drives them in Chromium; these check what the server is responsible for,
including that nothing the pages load comes from outside the server.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from consumers.locations.view import LiveView, Rules
from consumers.locations.web import create_app as live_app
from gremio.settings import REPO_ROOT, get_settings
from ingest_api import create_app as api_app
from tests.support import staff_auth

STATIC = [
    *(REPO_ROOT / "gremio/web").rglob("*.*"),
    *(REPO_ROOT / "ingest_api/static").rglob("*.*"),
    *(REPO_ROOT / "ingest_api/templates").rglob("*.*"),
    *(REPO_ROOT / "consumers/locations/static").rglob("*.*"),
    *(REPO_ROOT / "consumers/locations/templates").rglob("*.*"),
]
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
MIMETYPES = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}


class NoProducer:
    """The API's producer, never used here: the pages produce nothing."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a page must not produce")

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def list_topics(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture(scope="module")
def api():
    return api_app({"TESTING": True}, producer=NoProducer()).test_client()


@pytest.fixture(scope="module")
def live():
    rules = Rules.from_settings(get_settings().model_copy(update={"live_ttl_seconds": 42.0}))
    client = live_app(LiveView(rules)).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = staff_auth()["Authorization"]  # the staff login
    return client


def page_config(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="page-config">(.*?)</script>', html, re.S)
    assert found, "the page carries its settings as JSON"
    return json.loads(found.group(1))


def local_urls(html: str) -> list[str]:
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls
    return urls


def test_the_report_page_is_the_apis_root_with_its_settings(api) -> None:
    response = api.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert '<html lang="es-CL">' in html
    assert "Reportar un carrito fugitivo" in html
    settings = get_settings()
    assert page_config(html) == {
        "area": {
            "lat_min": settings.service_area_lat_min,
            "lat_max": settings.service_area_lat_max,
            "lon_min": settings.service_area_lon_min,
            "lon_max": settings.service_area_lon_max,
        },
        "reports_url": "/v1/reports",
        "description_max": 500,
    }
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_live_map_is_the_location_services_root_with_its_rules(live) -> None:
    response = live.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Mapa en vivo" in html
    assert "desaparece tras 42 s" in html
    config = page_config(html)
    assert config["live_url"] == "/v1/live"
    assert config["refresh_seconds"] == 2.0
    assert config["ttl_seconds"] == 42.0
    assert config["area"] == {"lat_min": -33.75, "lat_max": -33.15, "lon_min": -70.95, "lon_max": -70.40}
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert live.get("/v1/live").get_json() == {"carts": [], "reports": [], "alerts": []}


@pytest.mark.parametrize("client_name", ["api", "live"])
def test_every_asset_a_page_names_is_served_by_its_own_app(client_name, request) -> None:
    client = request.getfixturevalue(client_name)
    html = client.get("/").get_data(as_text=True)
    for url in local_urls(html):
        assert url.startswith("/"), f"{url} is not served by the page's own server"
        with client.get(url) as response:  # a file response: closed when done
            assert response.status_code == 200, url
            assert response.mimetype == MIMETYPES[url.rsplit(".", 1)[-1]], url


def test_the_pages_fetch_nothing_from_the_internet() -> None:
    assert STATIC, "the pages' files"
    for path in STATIC:
        if path.suffix not in {".js", ".css", ".html", ".svg"}:
            continue
        text = path.read_text(encoding="utf-8").replace(SVG_NAMESPACE, "")
        assert not re.search(r"https?://|//[a-z0-9-]+\.[a-z]", text), f"{path} names an outside URL"


def test_the_pages_are_not_in_the_api_document(api) -> None:
    paths = api.get("/openapi.json").get_json()["paths"]
    assert "/" not in paths
    assert not any(path.startswith(("/static", "/assets")) for path in paths)
