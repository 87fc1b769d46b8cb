"""schemathesis against /openapi.json: no 5xx, and every response fits the document."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from stdnum.cl import rut

from gremio.records import normalize_plate
from gremio.tokens import cart_token
from ingest_api import create_app

# Valid-looking plates and RUTs half the time, so the fuzzer also reaches the 202 paths.
_old = st.from_regex(r"\A[A-Z]{2}[0-9]{4}\Z")
_new = st.from_regex(r"\A[BCDFGHJKLPRSTVWXYZ]{4}[0-9]{2}\Z")
_body = st.integers(1, 30_000_000).map(str)
schemathesis.openapi.format("cl-plate", st.one_of(_old, _new, st.text(max_size=10)))
schemathesis.openapi.format(
    "cl-rut", st.one_of(_body.map(lambda b: f"{b}-{rut.calc_check_digit(b)}"), _body.map(lambda b: f"{b}-0"))
)


# Built at import: schemathesis parametrizes at collection time (its lazy `from_fixture`
# does not work with pytest 9). The producer connects once the session's broker is up.
APP = create_app(
    {"TESTING": True, "RATE_LIMIT_MEMBERS": "100000/minute", "RATE_LIMIT_REPORTS": "100000/minute"}
)
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _cart_headers(case) -> dict[str, str]:
    """The token of the cart the body names (when it names a valid one), as a real cart would send."""
    body = case.body if isinstance(case.body, dict) else {}
    sales = body.get("sales") if isinstance(body.get("sales"), list) else []
    plates = [body.get("plate")] + [sale.get("plate") for sale in sales if isinstance(sale, dict)]
    for plate in plates:
        try:
            return {"Authorization": f"Bearer {cart_token(normalize_plate(plate))}"}
        except ValueError:
            continue
    return {}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_server_errors_and_responses_match_the_document(case):
    case.call_and_validate(headers=_cart_headers(case), checks=CHECKS)
