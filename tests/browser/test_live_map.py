"""The live map (the location service's `/`) in Chromium, fed by the real service.

Carts ping through Kafka; the service (run loop in a thread, short TTL) serves the page and
/v1/live; the page must show each cart with its plate and seconds since seen, the fugitive
reports and the alerts, and drop a cart once it has been silent past the TTL. The page and
/v1/live need the staff login (HTTP Basic): without it, or with a wrong password, 401.
"""

from __future__ import annotations

import re
import threading
import uuid

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from consumers.locations.view import LiveView, Rules
from consumers.locations.web import create_app
from gremio import records as r
from gremio.settings import get_settings
from tests.browser.conftest import staff_credentials
from tests.integration.test_locations import (  # members is a fixture
    Instance,
    members,  # noqa: F401
    new_plate,
    now,
    position,
    send,
)
from tests.support import wait_for

TTL_SECONDS = 6.0
PING_SECONDS = 0.5


class Pinger:
    """Carts that ping their position from a thread until told to stop, one by one."""

    def __init__(self, carts: dict[str, tuple[float, float]]) -> None:
        self.carts = dict(carts)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pinger", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            with self._lock:
                pings = [position(plate, lat, lon) for plate, (lat, lon) in self.carts.items()]
            if pings:
                send(*pings)
            self._done.wait(PING_SECONDS)

    def silence(self, plate: str) -> None:
        with self._lock:
            del self.carts[plate]

    def stop(self) -> None:
        self._done.set()
        self._thread.join(30)


def report(lat: float, lon: float, description: str | None, plate: str | None = None) -> r.FugitiveReport:
    return r.FugitiveReport(
        id=uuid.uuid4(), lat=lat, lon=lon, description=description, plate=plate, received_at=now()
    )


def test_carts_reports_and_alerts_show_and_a_silent_cart_disappears(members, phone, artifacts):  # noqa: F811
    maria, juan, stranger = new_plate(), new_plate(), new_plate()
    members(maria, juan)  # registered before the service starts, so it knows them at once
    instance = Instance(f"test-live-map-{uuid.uuid4()}", live_ttl_seconds=TTL_SECONDS)
    pinger = None
    try:
        assert instance.runner.assigned.wait(60), "partition assignment"
        pinger = Pinger(
            {maria: (-33.4372, -70.6506), juan: (-33.4262, -70.6185), stranger: (-33.4525, -70.6652)}
        )
        # Reports after the carts are live, so each report has its nearest cart.
        wait_for(lambda: {maria, juan, stranger} <= set(instance.carts()), what="the carts on /v1/live")
        prank = report(-33.4440, -70.6395, '<img src="x" onerror="document.title=1">')
        seen = report(-33.4518, -70.6641, "Carrito amarillo frente al metro, sin credencial", plate=stranger)
        send(prank)
        send(seen)

        page, _ = phone(http_credentials=staff_credentials())
        page.goto(f"http://127.0.0.1:{instance.server.port}/")
        expect(page).to_have_title(re.compile("Mapa en vivo"))
        for plate in (maria, juan, stranger):
            marker = page.locator(f'g.marker-cart[data-plate="{plate}"]')
            expect(marker).to_be_visible()
            expect(marker.locator(".marker-label")).to_have_text(re.compile(rf"^{plate}\s*\d+ s$"))
        expect(page.locator(f'g.marker-cart[data-plate="{maria}"]')).to_have_class(
            re.compile(r"\bregistered\b")
        )
        expect(page.locator(f'g.marker-cart[data-plate="{stranger}"]')).to_have_class(
            re.compile(r"\bunregistered\b")
        )
        expect(page.locator(f'#cart-list li[data-plate="{maria}"]')).to_contain_text(f"Maestra {maria}")
        expect(page.locator("#live-status")).to_have_text("En vivo")

        for fugitive in (prank, seen):
            expect(page.locator(f'g.marker-report[data-report-id="{fugitive.id}"]')).to_be_attached()
        seen_item = page.locator(f'#report-list li[data-report-id="{seen.id}"]')
        expect(seen_item).to_contain_text("Carrito amarillo frente al metro, sin credencial")
        expect(seen_item).to_contain_text(f"Patente {stranger}")
        expect(seen_item).to_contain_text(re.compile(r"Carrito más cercano: \w{6} a \d+ m"))
        # Text from the public is shown as text, never as markup.
        prank_item = page.locator(f'#report-list li[data-report-id="{prank.id}"]')
        expect(prank_item).to_contain_text('<img src="x" onerror="document.title=1">')
        expect(page.locator('img[src="x"]')).to_have_count(0)
        alerts = page.locator("#alert-list")
        expect(alerts).to_contain_text("Reporte fugitivo")
        expect(alerts.locator("li", has_text="Carrito no registrado")).to_contain_text(stranger)

        # The seconds count up between pings (and are reset by each one): never past the TTL.
        page.wait_for_timeout(2500)  # a second poll, so the screenshot shows settled labels
        page.screenshot(path=artifacts / "live-map.png")
        page.screenshot(path=artifacts / "live-map-full.png", full_page=True)

        pinger.silence(stranger)
        gone = page.locator(f'g.marker-cart[data-plate="{stranger}"]')
        expect(gone).to_have_count(0, timeout=(TTL_SECONDS + 20) * 1000)
        expect(page.locator(f'#cart-list li[data-plate="{stranger}"]')).to_have_count(0)
        for plate in (maria, juan):
            expect(page.locator(f'g.marker-cart[data-plate="{plate}"]')).to_be_visible()
        expect(page.locator("#count-carts")).to_have_text("2")
    finally:
        if pinger:
            pinger.stop()
        instance.stop()


def assert_asks_for_the_login(answer) -> None:
    assert answer is not None and answer.status == 401, answer and answer.url
    assert answer.headers["www-authenticate"] == 'Basic realm="gremio staff"'
    assert answer.headers["content-type"] == "application/problem+json"
    assert "carts" not in answer.json()


def test_the_map_and_its_json_need_the_staff_login(serve, phone):
    base = serve(create_app(LiveView(Rules.from_settings(get_settings()))))
    # Without a login the browser is refused the page (under Playwright's routing Chromium
    # reports ERR_INVALID_AUTH_CREDENTIALS); the page's API client shows the server's 401.
    page, _ = phone()
    for path in ("/", "/v1/live"):
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            page.goto(base + path)
        assert_asks_for_the_login(page.request.get(base + path))
    expect(page.locator("#map")).to_have_count(0)
    # A wrong password, or none: the server's 401 is what the browser gets.
    for wrong in ("not-the-staff-password", ""):
        page, _ = phone(http_credentials=staff_credentials(password=wrong))
        for path in ("/", "/v1/live"):
            assert_asks_for_the_login(page.goto(base + path))
            assert_asks_for_the_login(page.request.get(base + path))
        expect(page.locator("#map")).to_have_count(0)
    page, _ = phone(http_credentials=staff_credentials())
    answer = page.goto(base + "/")
    assert answer is not None and answer.status == 200
    expect(page).to_have_title(re.compile("Mapa en vivo"))
    # The page's own polls carry the login the browser was given: it shows as live.
    expect(page.locator("#live-status")).to_have_text("En vivo")
    assert page.request.get(base + "/v1/live").status == 200
    live = page.goto(base + "/v1/live")
    assert live is not None and live.status == 200 and set(live.json()) == {"carts", "reports", "alerts"}


def test_airflows_alerts_are_listed_without_a_cart_or_a_place(serve, phone):
    """report_late and premium_pending, as the service merges them from the `alerts` table."""
    from datetime import date, timedelta

    from deadlines import report_late_alert

    from gremio import membership

    now = r.now_utc()
    view = LiveView(Rules.from_settings(get_settings()))
    late = report_late_alert(date(2026, 12, 2), now - timedelta(minutes=1), "America/Santiago", now)
    waiting = membership.premium_pending_alert(uuid.uuid4(), "17710042-3", now - timedelta(seconds=75), now)
    view.merge_alerts([late, waiting])
    page, _ = phone(http_credentials=staff_credentials())
    page.goto(serve(create_app(view)) + "/")
    item = page.locator(f'#alert-list li[data-alert-id="{late.id}"]')
    expect(item).to_contain_text("Informe atrasado")
    expect(item).to_contain_text("El informe de ventas del 02-12-2026 no estaba listo a la hora.")
    waiting_item = page.locator(f'#alert-list li[data-alert-id="{waiting.id}"]')
    expect(waiting_item).to_contain_text("Solicitud premium en espera")
    expect(waiting_item).to_contain_text("Una solicitud premium lleva 75 s sin decidirse.")
    expect(page.locator("#alert-list .plate")).to_have_count(0)  # no cart to name
    expect(page.locator("g.marker-alert")).to_have_count(0)  # and nowhere to draw them
    expect(page.locator("#count-alerts")).to_have_text("2")
