"""The ingest API against the real broker. Operations: health, readiness, metrics and the generated OpenAPI."""

from __future__ import annotations

import json

from gremio.settings import get_settings
from tests.integration.api_support import auth, sale


def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"

    def counter(text: str, name: str, **labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = client.get("/metrics").get_data(as_text=True)
    client.post("/v1/sales", json=sale(), headers=auth())
    client.post("/v1/sales", json=sale(quantity=0), headers=auth())
    client.post("/v1/sales", json=sale())
    after = client.get("/metrics").get_data(as_text=True)
    for name, labels, delta in (
        ("gremio_api_accepted_total", {"endpoint": "/v1/sales"}, 1),
        ("gremio_api_rejected_total", {"endpoint": "/v1/sales", "reason": "invalid"}, 1),
        ("gremio_api_rejected_total", {"endpoint": "/v1/sales", "reason": "unauthorized"}, 1),
        ("gremio_api_produced_total", {"topic": "sales"}, 1),
    ):
        assert counter(after, name, **labels) - counter(before, name, **labels) == delta, name


def test_openapi_is_generated_from_the_models(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) >= {
        "/v1/members",
        "/v1/sales",
        "/v1/sales/batch",
        "/v1/locations",
        "/v1/reports",
    }
    schemas = doc["components"]["schemas"]
    assert {
        "MemberApplicationIn",
        "SaleIn",
        "SaleBatchIn",
        "CartPositionIn",
        "FugitiveReportIn",
        "Problem",
    } <= set(schemas)
    assert "`patente`" in schemas["SaleIn"]["properties"]["plate"]["description"]
    assert schemas["SaleIn"]["properties"]["quantity"]["maximum"] == 1000
    assert schemas["SaleBatchIn"]["properties"]["sales"]["maxItems"] == get_settings().max_batch_items
    sales = doc["paths"]["/v1/sales"]["post"]
    assert sales["security"] == [{"cartToken": []}] and {"401", "403", "503"} <= set(sales["responses"])
    assert "429" in doc["paths"]["/v1/members"]["post"]["responses"]
    refs = {m for m in json.dumps(doc).split('"') if m.startswith("#/components/schemas/")}
    assert {ref.rsplit("/", 1)[1] for ref in refs} <= set(schemas)
