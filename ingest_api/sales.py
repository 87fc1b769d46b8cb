"""POST /v1/sales and /v1/sales/batch: a cart's sales (the cart's own token)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from gremio import records
from gremio import topics as t
from gremio.kafka import Outgoing
from ingest_api import intake
from ingest_api.problems import ApiProblem

bp = Blueprint("sales", __name__)


@bp.post("/v1/sales")
def sell() -> Response:
    """One sale, keyed by plate (so one cart's sales stay in order on one partition)."""
    body = intake.cart_body(records.SaleIn)
    sale = records.sale(body, intake.record_id(body, body.plate), records.now_utc())
    return intake.accept_one(sale, t.SALES.name, sale.plate)


@bp.post("/v1/sales/batch")
def sync() -> Response:
    """Sales a cart kept while offline: one result per sale, in the order sent.

    Every sale must be the token's cart's (else 403 and nothing is produced). A sale with
    bad fields gets its own error and the others go through; if none is valid the answer
    is 422. The valid ones are all acknowledged before the 202, or the answer is 503 and
    the cart resends the batch with the same Idempotency-Key (each item keeps its id).
    """
    plate = intake.cart_plate()
    batch = intake.body(records.SaleBatchIn, intake.state().settings.max_batch_body_bytes)
    received_at = records.now_utc()
    results: list[dict[str, Any] | None] = [None] * len(batch.sales)
    valid: list[tuple[int, records.Sale]] = []
    refused: list[dict[str, str]] = []
    for index, item in enumerate(batch.sales):
        try:
            body = intake.parse(records.SaleIn, item, prefix=f"sales[{index}]")
        except ApiProblem as problem:
            results[index] = {"status": 422, "title": "Invalid sale", "errors": problem.errors}
            refused += problem.errors
            continue
        intake.require_cart(plate, body.plate, field=f"sales[{index}].plate")
        valid.append((index, records.sale(body, intake.record_id(body, plate, str(index)), received_at)))
    if not valid:
        raise ApiProblem(422, "no sale in the batch is valid", refused)
    delivered = intake.deliver([Outgoing.of(sale, t.SALES.name, sale.plate) for _, sale in valid])
    for (index, sale), landed in zip(valid, delivered, strict=True):
        results[index] = intake.accepted_json(sale.id, landed)
    intake.count_item_rejections(len(batch.sales) - len(valid))
    return intake.accepted(
        {"accepted": len(valid), "rejected": len(batch.sales) - len(valid), "results": results}
    )
