"""What the local stack needs from the machine: OS packages, free ports, users."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterable, Sequence


class StackError(SystemExit):
    """A problem the user must fix, said in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(f"gremio: {message}")
        self.message = message


def can_install() -> list[str] | None:
    """The prefix that runs apt-get as root here, or None if we may not."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


_apt_updated = False


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian/Ubuntu packages, or stop with one line saying what to install."""
    global _apt_updated
    prefix = can_install()
    if prefix is None or not shutil.which("apt-get"):
        raise StackError(
            f"missing OS packages; install them with: sudo apt-get install -y {' '.join(packages)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True, env=env)
        _apt_updated = True
    subprocess.run(
        [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def ensure_command(command: str, package: str, version_check: Sequence[str] | None = None) -> str:
    """The path of `command`, installing `package` first if it is missing."""
    path = shutil.which(command)
    if path is None:
        apt_install([package])
        path = shutil.which(command)
        if path is None:
            raise StackError(f"{command} is still missing after installing {package}")
    if version_check and subprocess.run(version_check, capture_output=True).returncode != 0:
        raise StackError(f"{command} is installed but does not run: try `{' '.join(version_check)}`")
    return path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports_free(ports: Iterable[tuple[int, str]]) -> None:
    """Stop before starting anything if one of (port, setting) is taken."""
    busy = [(port, setting) for port, setting in ports if port_in_use(port)]
    if busy:
        detail = "; ".join(
            f"port {port} is already in use (change {setting} in .env)" for port, setting in busy
        )
        raise StackError(f"{detail}. Nothing was started.")


def free_port() -> int:
    """A port nobody listens on right now (for throwaway test services)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False
