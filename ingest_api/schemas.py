"""The API's response bodies. Request bodies are the `*In` models of gremio.records."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field


class Accepted(BaseModel):
    """The broker has acknowledged the record: where it landed."""

    id: uuid.UUID = Field(description="the record's id; derived from Idempotency-Key when one is sent")
    topic: str
    partition: int
    offset: int


class FieldError(BaseModel):
    """One thing wrong with a request, and where."""

    field: str = Field(description="the field as sent, e.g. `rut`, `location.lat`, `sales[3].quantity`")
    message: str
    code: str = Field(description="a stable machine-readable code, e.g. `value_error`, `missing`")


class Problem(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str = Field(description="the request path")
    errors: list[FieldError] = Field(default_factory=list, description="every bad field, one entry each")


class BatchItemError(BaseModel):
    """A sale of a batch that was refused (the others are unaffected)."""

    status: Literal[422] = 422
    title: str = "Invalid sale"
    errors: list[FieldError]


class BatchAccepted(BaseModel):
    """One result per sale, in the order sent: where it landed, or why it was refused."""

    accepted: int
    rejected: int
    results: list[Accepted | BatchItemError]


class Health(BaseModel):
    status: Literal["ok", "ready"]
    detail: str = ""
