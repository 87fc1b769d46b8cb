"""Security: cart tokens, rate limits under a burst, secrets in the repo, SQL built safely.

The token and rate-limit checks go through gunicorn with the repo's config (two workers),
as `make up` serves the API. Airflow's login is checked on a real `gremio up` stack in
tests/integration/test_local_stack.py.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from stdnum.cl import rut as stdnum_rut

from gremio import topics as t
from gremio.settings import REPO_ROOT, Settings
from gremio.tokens import cart_token
from tests.support import ApiServer, TopicProbe, http

SALE = {"client": "ana", "quantity": 1, "stock_remaining": 80, "location": {"lat": -33.44, "lon": -70.65}}
WORKERS = 2


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    log = tmp_path_factory.mktemp("api") / "api.log"
    with ApiServer(
        log, API_WORKERS=str(WORKERS), RATE_LIMIT_REPORTS="30/minute", RATE_LIMIT_MEMBERS="20/minute"
    ) as server:
        yield server.wait_ready()


def test_forged_and_mismatched_tokens_are_refused_and_produce_nothing(api):
    mine, other = "BBCL12", "CDFG34"
    genuine = cart_token(mine)
    other_guild_key = "another-guild-s-secret-of-32-bytes-or-more"  # pragma: allowlist secret
    foreign_secret = Settings(cart_token_secret=other_guild_key)
    head, signature = genuine.rsplit(".", 1)  # PLATE.KEY_ID.ISSUED and the signature
    after_plate = genuine.split(".", 1)[1]
    refused = {
        "no token": {},
        "not a bearer token": {"Authorization": f"Basic {genuine}"},
        "garbage": {"Authorization": "Bearer not-a-token"},
        "signed with another secret": {"Authorization": f"Bearer {cart_token(mine, foreign_secret)}"},
        "signature of another plate": {"Authorization": f"Bearer {mine}.{cart_token(other).split('.', 1)[1]}"},
        "one character changed": {"Authorization": f"Bearer {head}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}"},
        "plate not normalized": {"Authorization": f"Bearer bb-cl12.{after_plate}"},
    }  # fmt: skip
    probe = TopicProbe([t.SALES.name, t.LOCATIONS.name])
    answers = {
        why: api.post("/v1/sales", {"plate": mine, **SALE}, headers) for why, headers in refused.items()
    }
    assert {why: a.status for why, a in answers.items()} == dict.fromkeys(refused, 401)
    assert all(a.headers.get("Content-Type") == "application/problem+json" for a in answers.values())
    assert all("Bearer" in a.headers.get("WWW-Authenticate", "") for a in answers.values())

    # A genuine token of another cart: 403, on every cart endpoint.
    auth = {"Authorization": f"Bearer {genuine}"}
    mismatched = [
        api.post("/v1/sales", {"plate": other, **SALE}, auth),
        api.post("/v1/sales/batch", {"sales": [{"plate": mine, **SALE}, {"plate": other, **SALE}]}, auth),
        api.post("/v1/locations", {"plate": other, "lat": -33.44, "lon": -70.65}, auth),
    ]
    assert [a.status for a in mismatched] == [403, 403, 403]
    assert probe.records() == [], "a refused request produced something"
    assert api.post("/v1/sales", {"plate": mine, **SALE}, auth).status == 202  # the control


def _burst(api: ApiServer, path: str, bodies: list[dict]) -> list:
    """Every body at once from 16 threads, each request on a new connection (any worker may take it)."""
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda body: http("POST", api.base + path, body), bodies))


def _application(i: int) -> dict:
    body = str(3_000_000 + i)
    return {
        "first_name": "Ráfaga", "last_name": f"Prueba {i}", "rut": f"{body}-{stdnum_rut.calc_check_digit(body)}",
        "email": f"rafaga{i}@example.cl", "plate": f"BC{i % 10000:04d}", "premium": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("path", "limit", "topic"),
    [("/v1/reports", 30, t.LOCATIONS.name), ("/v1/members", 20, t.MEMBERS.name)],
)
def test_rate_limits_hold_under_a_burst(api, path, limit, topic, figures):
    """The documented bound (docs/API.md): per worker, so between the limit and WORKERS x the limit."""
    if path == "/v1/reports":
        bodies = [{"lat": -33.44, "lon": -70.65, "description": f"ráfaga {i}"} for i in range(200)]
    else:
        bodies = [_application(i) for i in range(200)]
    probe = TopicProbe([topic])
    answers = _burst(api, path, bodies)
    statuses = [a.status for a in answers]
    accepted = statuses.count(202)
    assert set(statuses) <= {202, 429}, sorted(set(statuses))
    assert limit <= accepted <= WORKERS * limit, f"{accepted} accepted of {len(bodies)}"
    limited = [a for a in answers if a.status == 429]
    assert all(int(a.headers["Retry-After"]) >= 1 for a in limited)
    assert all(a.headers.get("Content-Type") == "application/problem+json" for a in limited)
    landed = probe.records(topic)
    assert sorted(m.offset() for m in landed) == sorted(
        a.json()["offset"] for a in answers if a.status == 202
    )
    # Still limited a moment later: the window is a minute.
    assert http("POST", api.base + path, bodies[0]).status == 429
    figures.update(path=path, limit=f"{limit}/minute", workers=WORKERS, burst=len(bodies), accepted=accepted)


def test_the_secret_scanner_catches_a_planted_secret(tmp_path):
    """`make test` runs detect-secrets over the repo; this shows the gate would stop a real key."""
    planted = tmp_path / "settings_prod.py"
    key = "AKIA" + "QYLPMN5HHHFPZAM2"  # the shape of an AWS access key id, built so this file holds none
    planted.write_text(
        f'AWS_ACCESS_KEY_ID = "{key}"\nDB = "postgresql://app:{uuid.uuid4().hex}@db:5432/app"\n'
    )
    hook = Path(sys.executable).with_name("detect-secrets-hook")
    found = subprocess.run([str(hook), "-n", str(planted)], capture_output=True, text=True, timeout=120)
    assert found.returncode != 0
    assert "AWS Access Key" in found.stdout and "Basic Auth Credentials" in found.stdout


def test_sql_is_built_safely_and_s608_is_not_switched_off():
    """ruff's S608 (SQL built by string formatting) finds nothing, and nothing turns it off."""
    ruff = Path(sys.executable).with_name("ruff")
    found = subprocess.run(
        [str(ruff), "check", "--select", "S608", "--no-cache", "--output-format", "concise", "."],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert found.returncode == 0, found.stdout
    lint = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "S" in lint["select"]
    switched_off = [
        *lint.get("ignore", []),
        *(c for codes in lint.get("per-file-ignores", {}).values() for c in codes),
    ]
    assert not {"S", "S6", "S60", "S608"} & set(switched_off)
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "*.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    silenced = [path for path in tracked if "S608" in (REPO_ROOT / path).read_text(errors="replace")]
    assert silenced == [Path(__file__).relative_to(REPO_ROOT).as_posix()], silenced
