"""The staff login of the live service (consumers/locations/web.py): the map and /v1/live
need HTTP Basic against STAFF_PASSWORD_HASH; gremio's own clients send it.

Real werkzeug hashes (scrypt), the real werkzeug server on a free port, the real `gremio
watch` and `gremio secrets` processes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest

from consumers.locations.view import LiveView, Rules
from consumers.locations.web import StaffLogin, create_app
from gremio import credentials
from gremio.settings import REPO_ROOT, Settings, SettingsError, env_names, get_settings
from gremio.stack.local import _http_check
from gremio.web.server import HttpServer as LiveServer
from tests.support import http, staff_auth

PASSWORD = "a-staff-password-only-these-tests-use-0123"  # pragma: allowlist secret
GUARDED = ("/", "/v1/live", "/assets/santiago.js", "/no-such-page")


def basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


@pytest.fixture(scope="module")
def login() -> StaffLogin:
    return StaffLogin("staff", credentials.staff_password_hash(PASSWORD))


@pytest.fixture(scope="module")
def served(login):
    """The live app over real HTTP on a free loopback port."""
    view = LiveView(Rules.from_settings(get_settings()))
    server = LiveServer(create_app(view, login=login), "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def assert_refused(answer) -> None:
    assert answer.status == 401, answer.body[:300]
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="gremio staff"'
    assert answer.headers["Content-Type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 401 and "staff login" in problem["detail"]
    assert "carts" not in problem


def test_the_map_and_live_json_need_the_staff_login(served):
    right = basic("staff", PASSWORD)
    refused = [
        {},
        basic("staff", PASSWORD + "x"),
        basic("staff", ""),
        basic("admin", PASSWORD),
        basic("Staff", PASSWORD),
        {"Authorization": f"Bearer {PASSWORD}"},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    ]
    for path in GUARDED:
        for headers in refused:
            assert_refused(http("GET", served + path, headers=headers))
    assert http("GET", served + "/", headers=right).status == 200
    live = http("GET", served + "/v1/live", headers=right)
    assert live.status == 200 and set(live.json()) == {"carts", "reports", "alerts"}
    assert http("GET", served + "/no-such-page", headers=right).status == 404
    # A refusal is not remembered as a success, nor a success for another password.
    assert_refused(http("GET", served + "/v1/live", headers=basic("staff", PASSWORD + "x")))


def test_metrics_are_open_on_loopback_only(login):
    client = create_app(LiveView(Rules.from_settings(get_settings())), login=login).test_client()
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    away = {"REMOTE_ADDR": "10.20.30.40"}
    refused = client.get("/metrics", environ_base=away)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/metrics", environ_base=away, headers=basic("staff", PASSWORD)).status_code == 200
    # Loopback opens /metrics only, never the map or the carts.
    assert client.get("/v1/live").status_code == 401
    assert client.get("/").status_code == 401


def test_a_successful_check_is_remembered_briefly_and_a_failed_one_never():
    login = StaffLogin("staff", credentials.staff_password_hash(PASSWORD), cache_seconds=1.0)
    header = basic("staff", PASSWORD)["Authorization"]
    started = time.perf_counter()
    assert login.allows(header)
    scrypt = time.perf_counter() - started
    started = time.perf_counter()
    assert all(login.allows(header) for _ in range(200))
    cached = time.perf_counter() - started
    assert cached < scrypt, (cached, scrypt)  # 200 polls cost less than one password check
    wrong = basic("staff", PASSWORD + "x")["Authorization"]
    assert not login.allows(wrong) and not login.allows(wrong)
    time.sleep(1.2)  # expired: checked again, and still right
    assert login.allows(header)


def test_the_service_stops_at_start_without_a_usable_hash():
    bare = Settings(_env_file=None, staff_password_hash=None)
    with pytest.raises(SettingsError, match="STAFF_PASSWORD_HASH is not set"):
        StaffLogin.from_settings(bare)
    env = {**os.environ, "STAFF_PASSWORD_HASH": PASSWORD}  # a password, not its hash
    result = subprocess.run(
        [sys.executable, "-m", "consumers.locations"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("gremio: setting STAFF_PASSWORD_HASH is not a werkzeug password hash"), lines
    assert PASSWORD not in result.stderr


def test_gremio_watch_and_status_use_the_login(served, tmp_path):
    """STAFF_PASSWORD (another deployment), or LOCAL_DIR/staff-login.json (`make up`)."""
    port = served.rsplit(":", 1)[1]
    base = {k: v for k, v in os.environ.items() if k not in ("STAFF_PASSWORD", "STAFF_USER")}

    def watch(**env: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "consumers.watch", "--once"],
            cwd=REPO_ROOT, env={**base, "LIVE_PORT": port, "COLUMNS": "160", **env},
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "Live carts (0)" in watch(STAFF_PASSWORD=PASSWORD)
    refused = watch(STAFF_PASSWORD=PASSWORD + "-wrong")
    assert "staff login was refused" in refused and "Live carts" not in refused
    local = tmp_path / "local"
    assert "staff login was refused" in watch(LOCAL_DIR=str(local))  # no login file: no header
    file = local / credentials.STAFF_LOGIN_FILE
    file.parent.mkdir()
    file.write_text(json.dumps({"user": "staff", "password": PASSWORD}))
    assert "Live carts (0)" in watch(LOCAL_DIR=str(local))

    # `gremio status`'s locations check, with and without the login.
    settings = get_settings()
    assert _http_check("locations", served + "/v1/live", staff_auth()).healthy is False  # not this hash
    found = _http_check("locations", served + "/v1/live", credentials.staff_basic_auth(
        settings.model_copy(update={"staff_password": None, "local_dir": local})
    ))  # fmt: skip
    assert found.healthy, found.detail
    assert "401" in _http_check("locations", served + "/v1/live").detail


def test_the_login_file_is_made_once_private_and_kept(tmp_path):
    path = tmp_path / "local" / credentials.STAFF_LOGIN_FILE
    first = credentials.ensure_staff_login(path, "staff")
    assert path.stat().st_mode & 0o777 == 0o600
    assert first["user"] == "staff" and len(first["password"]) >= 32
    path.chmod(0o644)
    assert credentials.ensure_staff_login(path, "staff") == first  # kept, and made private again
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == first


def test_gremio_secrets_writes_the_hash_and_the_clear_login_beside_it(tmp_path, monkeypatch):
    env_file = tmp_path / "deploy" / ".env"
    env = {k: v for k, v in os.environ.items() if k not in env_names()}
    run = [sys.executable, "-m", "gremio.cli", "secrets", "--env-file", str(env_file)]
    first = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    login_file = env_file.parent / credentials.STAFF_LOGIN_FILE
    assert str(login_file) in first.stdout and "STAFF_PASSWORD_HASH" in first.stdout
    assert login_file.stat().st_mode & 0o777 == 0o600 and env_file.stat().st_mode & 0o777 == 0o600
    login = json.loads(login_file.read_text())
    assert login["password"] not in env_file.read_text()
    # Single-quoted in .env (compose would read `$salt` as a variable); the settings read it whole.
    line = next(x for x in env_file.read_text().splitlines() if x.startswith("STAFF_PASSWORD_HASH="))
    assert line.startswith("STAFF_PASSWORD_HASH='scrypt:") and line.endswith("'")
    for name in env_names():  # only what the .env says
        monkeypatch.delenv(name, raising=False)
    loaded = Settings(_env_file=env_file)
    checker = StaffLogin.from_settings(loaded)
    assert checker.allows(basic(login["user"], login["password"])["Authorization"])
    second = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "nothing changed" in second.stdout, second.stdout
    assert json.loads(login_file.read_text()) == login
    assert Settings(_env_file=env_file).staff_password_hash == loaded.staff_password_hash


def test_a_werkzeug_hash_is_required_of_the_setting():
    for refused in ("q" * 40, "sha256$" + "a" * 40, "scrypt:32768:8:1$salt$not-hex-" + "z" * 30):
        with pytest.raises(ValueError, match="not a werkzeug password hash"):
            Settings(_env_file=None, staff_password_hash=refused)
    for method in ("scrypt", "pbkdf2"):
        from werkzeug.security import generate_password_hash

        Settings(_env_file=None, staff_password_hash=generate_password_hash(PASSWORD, method=method))
