"""The public report page (the API's `/`) in Chromium, with the API's real producer.

A report made on the page lands on locations p0; the API's refusals (field errors, a GPS
without a fix, the rate limit) show on the page in plain Spanish, and nothing is produced.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from gremio import topics as t
from ingest_api import create_app
from tests.support import TopicProbe, wait_for

CATEDRAL = {"latitude": -33.4372, "longitude": -70.6506}


@pytest.fixture
def api(serve) -> str:
    return serve(create_app({"RATE_LIMIT_REPORTS": "1000/minute"}))


def on_locations(probe: TopicProbe, report_id: str) -> Any:
    """The record with this id that landed on `locations` since the probe, if any."""
    for msg in probe.records(t.LOCATIONS.name):
        if json.loads(msg.value())["id"] == report_id:
            return msg
    return None


def send_report(page: Page, status: int) -> dict[str, Any]:
    """Press the button; the API must answer `status`. Returns the answer's JSON."""
    with page.expect_response(re.compile(r"/v1/reports$")) as answer:
        page.get_by_role("button", name="Enviar reporte").click()
    assert answer.value.status == status, answer.value.text()
    return answer.value.json()


def test_a_report_from_the_phones_location_lands_on_locations_p0(api, phone, artifacts):
    page, _ = phone(geolocation=CATEDRAL, permissions=["geolocation"])
    page.goto(api + "/")
    expect(page).to_have_title(re.compile("Reportar un carrito fugitivo"))
    probe = TopicProbe([t.LOCATIONS.name])

    page.get_by_role("button", name="Usar mi ubicación").click()
    expect(page.locator("#lat")).to_have_value("-33.437200")
    expect(page.locator("#lon")).to_have_value("-70.650600")
    expect(page.locator(".marker-pin")).to_be_visible()
    page.get_by_label("Patente").fill("bb-cl 12")
    page.get_by_label("¿Qué viste?").fill("Carrito amarillo frente a la Catedral, sin credencial")
    expect(page.locator("#description-count")).to_have_text("53/500")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=artifacts / "report-page.png")

    answer = send_report(page, 202)
    done = page.locator("#status .notice.ok")
    expect(done).to_contain_text("¡Gracias! Recibimos tu reporte.")
    expect(done).to_have_attribute("data-report-id", answer["id"])
    expect(page.get_by_label("Patente")).to_have_value("")
    page.screenshot(path=artifacts / "report-page-sent.png", full_page=True)

    msg = wait_for(lambda: on_locations(probe, answer["id"]), what="the report on locations")
    assert (msg.partition(), answer["partition"]) == (t.FUGITIVE_PARTITION, t.FUGITIVE_PARTITION)
    assert dict(msg.headers())["type"] == b"FugitiveReport"
    report = json.loads(msg.value())
    assert (report["lat"], report["lon"], report["plate"]) == (-33.4372, -70.6506, "BBCL12")
    assert report["description"] == "Carrito amarillo frente a la Catedral, sin credencial"


def test_a_tap_on_the_map_places_the_point_that_is_sent(api, phone):
    page, _ = phone()
    page.goto(api + "/")
    probe = TopicProbe([t.LOCATIONS.name])
    box = page.locator("#map svg").bounding_box()
    assert box is not None
    # At the first zoom the view is centred on the service area, so its middle is the area's.
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(page.locator(".marker-pin")).to_be_visible()
    expect(page.locator("#where-hint")).to_have_text("Punto marcado en el mapa.")
    lat, lon = float(page.locator("#lat").input_value()), float(page.locator("#lon").input_value())
    assert abs(lat - (-33.45)) < 0.005 and abs(lon - (-70.675)) < 0.005, (lat, lon)

    answer = send_report(page, 202)
    expect(page.locator("#status .notice.ok")).to_be_visible()
    report = json.loads(wait_for(lambda: on_locations(probe, answer["id"]), what="the report").value())
    assert (report["lat"], report["lon"], report["plate"], report["description"]) == (lat, lon, None, None)


def test_invalid_coordinates_show_the_apis_errors_and_nothing_is_sent(api, phone, artifacts):
    page, _ = phone()
    page.goto(api + "/")
    probe = TopicProbe([t.LOCATIONS.name])
    page.get_by_label("Latitud").fill("-95")
    page.get_by_label("Longitud").fill("-70.65")
    expect(page.locator("#where-hint")).to_have_text("Esas coordenadas no existen.")
    page.get_by_label("Patente").fill("ZZ")

    problem = send_report(page, 422)  # the page leaves the judging to the API
    assert {error["field"] for error in problem["errors"]} == {"lat", "plate"}
    expect(page.locator("#error-where")).to_have_text("La latitud debe estar entre -90 y 90.")
    expect(page.locator("#error-plate")).to_have_text(
        "La patente no es válida: debe ser como AB1234 (antigua) o BBCL12 (nueva)."
    )
    expect(page.get_by_label("Latitud")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#status .notice.error")).to_contain_text("Revisa lo marcado en rojo")
    page.screenshot(path=artifacts / "report-page-errors.png", full_page=True)

    page.get_by_label("Latitud").fill("-33.44")
    page.get_by_label("Patente").fill("")
    send_report(page, 202)
    expect(page.locator("#error-where")).to_be_hidden()
    expect(page.locator("#status .notice.ok")).to_be_visible()
    assert len(probe.records(t.LOCATIONS.name)) == 1, "only the corrected report is produced"


def test_a_gps_without_a_fix_is_refused_in_plain_words(api, phone):
    page, _ = phone(geolocation={"latitude": 0, "longitude": 0}, permissions=["geolocation"])
    page.goto(api + "/")
    page.get_by_role("button", name="Usar mi ubicación").click()
    expect(page.locator("#where-hint")).to_contain_text("fuera del área de servicio")
    send_report(page, 422)
    expect(page.locator("#error-where")).to_contain_text("La ubicación (0, 0) no está en Chile")


def test_the_rate_limit_shows_how_long_to_wait(serve, phone):
    api = serve(create_app({"RATE_LIMIT_REPORTS": "1/hour"}))
    page, _ = phone()
    page.goto(api + "/")
    page.get_by_label("Latitud").fill("-33.44")
    page.get_by_label("Longitud").fill("-70.65")
    send_report(page, 202)
    send_report(page, 429)
    notice = page.locator("#status .notice.warn")
    expect(notice).to_contain_text("Enviaste muchos reportes seguidos.")
    expect(notice).to_contain_text(re.compile(r"Espera \d+ segundos"))
    submit = page.locator("#submit")
    expect(submit).to_be_disabled()
    expect(submit).to_have_text(re.compile(r"Espera \d+ s"))
