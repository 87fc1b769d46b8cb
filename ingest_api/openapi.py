"""/openapi.json, generated from the pydantic models (STYLE 7): the request bodies are the
`*In` models of gremio.records, the responses those of ingest_api.schemas.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel
from pydantic.json_schema import models_json_schema

from gremio import records
from gremio.settings import Settings
from ingest_api import schemas

REF = "#/components/schemas/{model}"
INPUTS: tuple[type[BaseModel], ...] = (
    records.MemberApplicationIn,
    records.SaleIn,
    records.SaleBatchIn,
    records.CartPositionIn,
    records.FugitiveReportIn,
)
OUTPUTS: tuple[type[BaseModel], ...] = (
    schemas.Accepted,
    schemas.BatchAccepted,
    schemas.Problem,
    schemas.Health,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref(schemas.Problem)}},
    }
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}


def _spanish_aliases(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Say in each property's description which other name the field is accepted under."""
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        if not isinstance(alias, AliasChoices):
            continue
        others = [choice for choice in alias.choices if isinstance(choice, str) and choice != name]
        if others:
            prop = schema["properties"][name]
            note = "Also accepted as " + ", ".join(f"`{other}`" for other in others) + "."
            prop["description"] = f"{prop['description']} {note}" if prop.get("description") else note


def _operation(
    summary: str, body: type[BaseModel], ok: type[BaseModel], cart: bool, limited: bool, description: str = ""
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "202": {
            "description": "accepted: the broker has acknowledged the record",
            "content": {"application/json": {"schema": _ref(ok)}},
        },
        "400": _problem("the body is not JSON, or a bad Idempotency-Key"),
        "413": _problem("the body is over the size limit"),
        "415": _problem("the body is not application/json"),
        "422": _problem("invalid fields, each named in `errors`"),
        "503": _problem(
            "the broker did not acknowledge in time: the record may still have been stored; retry"
            " with the same Idempotency-Key",
            RETRY_AFTER,
        ),
    }
    if cart:
        responses["401"] = _problem("missing or forged cart token")
        responses["403"] = _problem("the token belongs to another cart")
    if limited:
        responses["429"] = _problem("rate limit exceeded", RETRY_AFTER)
    operation: dict[str, Any] = {
        "summary": summary,
        "description": description or (body.__doc__ or "").strip(),
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "retrying with the same key gives the same record id",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
        "responses": dict(sorted(responses.items())),
    }
    if cart:
        operation["security"] = [{"cartToken": []}]
    return operation


def _get(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": responses}}


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API."""
    _, top = models_json_schema(
        [(model, "validation") for model in INPUTS] + [(model, "serialization") for model in OUTPUTS],
        ref_template=REF,
    )
    components = top["$defs"]
    for model in INPUTS:
        _spanish_aliases(model, components[model.__name__])
    sales = components["SaleBatchIn"]["properties"]["sales"]
    sales.update(items=_ref(records.SaleIn), maxItems=settings.max_batch_items)
    health = {"200": {"description": "up", "content": {"application/json": {"schema": _ref(schemas.Health)}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gremio ingest API",
            "version": "1",
            "description": (
                "How carts, applicants and the public reach the sopaipilla cart guild. Every 202 "
                "means the record is on Kafka (acks=all). Errors are application/problem+json "
                f"with an `errors` list. Bodies: at most {settings.max_body_bytes} bytes, "
                f"{settings.max_batch_body_bytes} on /v1/sales/batch."
            ),
        },
        "paths": {
            "/v1/members": {
                "post": _operation(
                    "Apply to join the guild",
                    records.MemberApplicationIn,
                    schemas.Accepted,
                    cart=False,
                    limited=True,
                )
            },
            "/v1/sales": {
                "post": _operation(
                    "Record a sale", records.SaleIn, schemas.Accepted, cart=True, limited=False
                )
            },
            "/v1/sales/batch": {
                "post": _operation(
                    "Send sales kept while offline",
                    records.SaleBatchIn,
                    schemas.BatchAccepted,
                    cart=True,
                    limited=False,
                    description=(
                        f"Up to {settings.max_batch_items} sales of the token's cart. One result per "
                        "sale in the order sent; a bad sale gets its own error and the others go "
                        "through. 422 if none is valid."
                    ),
                )
            },
            "/v1/locations": {
                "post": _operation(
                    "Report the cart's position",
                    records.CartPositionIn,
                    schemas.Accepted,
                    cart=True,
                    limited=False,
                )
            },
            "/v1/reports": {
                "post": _operation(
                    "Report a cart working outside the guild",
                    records.FugitiveReportIn,
                    schemas.Accepted,
                    cart=False,
                    limited=True,
                )
            },
            "/healthz": _get("The process is up", health),
            "/readyz": _get(
                "Ready to accept records (Kafka reachable)",
                {**health, "503": _problem("Kafka is unreachable or the topics are missing")},
            ),
            "/openapi.json": _get(
                "This document",
                {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            ),
            "/metrics": _get(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            ),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "cartToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the cart's token: `gremio token PLATE` prints it",
                }
            },
        },
    }
