"""Docker's own compose CLI, built from the Go module proxy, to load docker-compose.yaml.

`docker-compose config` parses, interpolates and validates the file exactly as
`docker compose up` would, and needs no Docker engine. The binary is built once, with the
machine's Go, into REPO_ROOT/.local/tools (Go's module and build caches under .local/go), so a
fresh clone needs nothing but Go and the proxy; later runs reuse it. Used by
tests/integration/test_compose_cli.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from gremio.settings import REPO_ROOT

MODULE = "github.com/docker/compose/v5"
VERSION = "v5.6.0"  # needs Go 1.26.8, the machine's (its go.mod); GOTOOLCHAIN=local never fetches one
CACHE = REPO_ROOT / ".local"
BUILD_TIMEOUT_SECONDS = 1200.0
# What `go` says when it cannot reach the module proxy.
_UNREACHABLE = (
    "dial tcp",
    "no such host",
    "connection refused",
    "i/o timeout",
    "tls handshake timeout",
    "network is unreachable",
    "temporary failure in name resolution",
    "connection reset",
)


class ComposeCliError(RuntimeError):
    """The compose CLI could not be built: the message says why and what to do."""


def binary(cache: Path = CACHE) -> Path:
    return cache / "tools" / f"docker-compose-{VERSION}"


def go_binary() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")
    return str(fallback) if fallback.exists() else None


def go_env(cache: Path = CACHE) -> dict[str, str]:
    """Go's environment with every cache under `cache`/go, and no toolchain download."""
    root = cache / "go"
    return {
        **os.environ,
        "GOPATH": str(root / "path"),
        "GOMODCACHE": str(root / "modcache"),
        "GOCACHE": str(root / "cache"),
        "GOFLAGS": "-buildvcs=false -modcacherw",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }


def ensure(cache: Path = CACHE, timeout: float = BUILD_TIMEOUT_SECONDS) -> Path:
    """The compose CLI's path, built first if it is not there yet (once, under a lock)."""
    target = binary(cache)
    if os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".docker-compose-{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be building it
        if not os.access(target, os.X_OK):
            _build(cache, target, timeout)
    return target


def build_record(cache: Path = CACHE) -> dict | None:
    """How the cached binary was built: {"version", "go", "seconds"}, or None."""
    path = binary(cache).with_name(binary(cache).name + ".build.json")
    return json.loads(path.read_text()) if path.exists() else None


def _build(cache: Path, target: Path, timeout: float) -> None:
    go = go_binary()
    if go is None:
        raise ComposeCliError(
            f"cannot build docker compose {VERSION}: Go is not installed (put `go` on PATH or in /usr/local/go)"
        )
    env = go_env(cache)
    module_dir = cache / "go" / f"compose-{VERSION}"
    module_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if not (module_dir / "go.mod").exists():
        _go([go, "mod", "init", "gremio.local/compose"], module_dir, env, timeout)
    _go([go, "get", f"{MODULE}/cmd@{VERSION}"], module_dir, env, timeout - (time.monotonic() - started))
    partial = target.with_name(target.name + ".partial")
    remaining = timeout - (time.monotonic() - started)
    _go([go, "build", "-o", str(partial), f"{MODULE}/cmd"], module_dir, env, remaining)
    partial.replace(target)
    seconds = round(time.monotonic() - started, 1)
    go_version = subprocess.run([go, "version"], capture_output=True, text=True, env=env).stdout.strip()
    # The binary is all that is needed from now on: give back the caches' disk (about 800 MB).
    subprocess.run(
        [go, "clean", "-cache", "-modcache"], cwd=module_dir, env=env, capture_output=True, check=False
    )
    record = {"version": VERSION, "go": go_version, "seconds": seconds}
    target.with_name(target.name + ".build.json").write_text(json.dumps(record) + "\n")


def _go(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> None:
    step = " ".join(command[1:3])
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=max(timeout, 1)
        )
    except subprocess.TimeoutExpired:
        raise ComposeCliError(
            f"building docker compose {VERSION}: `go {step}` timed out "
            f"(is the Go module proxy, GOPROXY={_goproxy(env)}, slow or unreachable?)"
        ) from None
    if done.returncode == 0:
        return
    output = (done.stderr or done.stdout).strip()
    last = output.splitlines()[-1] if output else f"exit status {done.returncode}"
    if any(marker in output.lower() for marker in _UNREACHABLE):
        raise ComposeCliError(
            f"cannot build docker compose {VERSION}: the Go module proxy (GOPROXY={_goproxy(env)}) "
            f"is unreachable: {last}"
        )
    raise ComposeCliError(f"building docker compose {VERSION}: `go {step}` failed: {last}")


def _goproxy(env: dict[str, str]) -> str:
    if env.get("GOPROXY"):
        return env["GOPROXY"]
    go = go_binary()
    found = subprocess.run([go, "env", "GOPROXY"], capture_output=True, text=True, env=env) if go else None
    return found.stdout.strip() if found and found.returncode == 0 else "unknown"
