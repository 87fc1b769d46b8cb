"""Browser tests: Debian's Chromium, driven by Playwright, against the real broker and database.

The pages are served by the real apps on free ports (werkzeug in a thread), with the real
Kafka producer. Each test gets a phone-sized browser context (390x844, touch, es-CL) in
which every request must go to 127.0.0.1: anything else is refused and fails the test,
which is how "works with no internet" is checked. Screenshots go to test-artifacts/.
The live map needs the staff login: `phone(http_credentials=staff_credentials())`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from gremio.settings import REPO_ROOT, get_settings
from gremio.web.server import HttpServer as LiveServer

ARTIFACTS = REPO_ROOT / "test-artifacts"
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 1,
    "is_mobile": True,
    "has_touch": True,
    "locale": "es-CL",
    "timezone_id": "America/Santiago",
}
# No downloads, no phoning home: the browser talks only to the servers under test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def staff_credentials(password: str | None = None) -> dict[str, str]:
    """Playwright's http_credentials for the live map: the test stack's staff login."""
    settings = get_settings()
    assert settings.staff_password is not None, "the test stack sets STAFF_PASSWORD"
    return {
        "username": settings.staff_user,
        "password": settings.staff_password.get_secret_value() if password is None else password,
    }


# The machine is shared and slow at times: give the page time, never a fixed deadline.
expect.set_options(timeout=15_000)


@pytest.fixture(autouse=True)
def _services(stack):
    """Every browser test runs against the session's real broker and database."""
    return stack


def chromium_path() -> str:
    """Debian's Chromium (deploy/os-packages.sh installs it); Playwright never downloads one here."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is missing: run deploy/os-packages.sh (apt-get install chromium)"
    return found


# Package-scoped, not session-scoped: Playwright's sync API keeps an event loop running on
# the main thread until it stops, and later tests (the Kafka trigger's) call asyncio.run().
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Playwright gives every launch a fresh, throwaway --user-data-dir of its own.
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class Watched:
    """What a page did that a test must not accept: script errors and requests off this machine."""

    errors: list[str] = field(default_factory=list)
    offsite: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.offsite, f"the page reached out of the machine: {self.offsite}"
        assert not self.errors, f"script errors on the page: {self.errors}"


@pytest.fixture
def phone(browser: Browser) -> Iterator[Callable[..., tuple[Page, Watched]]]:
    """Open a phone-sized page (`phone(**context_options)`); it is checked for errors at the end."""
    opened: list[tuple[BrowserContext, Watched]] = []

    def open_page(**options: Any) -> tuple[Page, Watched]:
        context = browser.new_context(**{**PHONE, **options})
        context.set_default_timeout(15_000)
        watched = Watched()

        def only_local(route: Any) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                watched.offsite.append(route.request.url)
                route.abort()

        context.route("**/*", only_local)
        page = context.new_page()
        page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
        opened.append((context, watched))
        return page, watched

    yield open_page
    for context, watched in opened:
        context.close()
        watched.assert_clean()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], str]]:
    """Serve a Flask app on a free loopback port for one test (werkzeug, threaded); returns its URL."""
    servers: list[LiveServer] = []

    def start(app: Flask) -> str:
        servers.append(LiveServer(app, "127.0.0.1", 0).start())
        return f"http://127.0.0.1:{servers[-1].port}"

    yield start
    for server in servers:
        server.stop()
