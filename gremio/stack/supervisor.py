"""The process manager of the local stack: supervisord from PyPI.

supervisord daemonizes, so the stack outlives the terminal that ran `make up`. Every
program runs in its own process group and is stopped as a group, so `make down` leaves
no child (uvicorn workers, LocalExecutor task processes, gunicorn workers) behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from gremio.settings import REPO_ROOT


@dataclass
class Program:
    name: str
    command: list[str]
    priority: int  # lower starts first and stops last
    user: str | None = None
    stopsignal: str = "TERM"
    stopwaitsecs: int = 30
    startsecs: int = 3
    environment: Mapping[str, str] = field(default_factory=dict)

    def section(self, log_dir: Path) -> str:
        lines = [
            f"[program:{self.name}]",
            "command=" + " ".join(_quote(arg) for arg in self.command),
            f"directory={REPO_ROOT}",
            f"priority={self.priority}",
            "autostart=false",
            "autorestart=true",
            f"startsecs={self.startsecs}",
            "startretries=5",
            f"stopsignal={self.stopsignal}",
            f"stopwaitsecs={self.stopwaitsecs}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={log_dir / (self.name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=3",
        ]
        if self.user:
            lines.append(f"user={self.user}")
        if self.environment:
            pairs = ",".join(f'{k}="{_escape_env(v)}"' for k, v in self.environment.items())
            lines.append(f"environment={pairs}")
        return "\n".join(lines) + "\n"


def _quote(arg: str) -> str:
    arg = arg.replace("%", "%%")
    return f'"{arg}"' if any(c in arg for c in " '\"") else arg


def _escape_env(value: str) -> str:
    return value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')


class Supervisor:
    """supervisord for one .local folder."""

    def __init__(self, local_dir: Path) -> None:
        self.dir = local_dir / "supervisor"
        self.log_dir = local_dir / "logs"
        self.conf = self.dir / "supervisord.conf"
        self.socket = self.dir / "supervisor.sock"
        self.pidfile = self.dir / "supervisord.pid"

    def render(self, programs: list[Program]) -> str:
        head = f"""\
[supervisord]
logfile={self.log_dir / "supervisord.log"}
logfile_maxbytes=10MB
pidfile={self.pidfile}
childlogdir={self.log_dir}
minfds=4096
identifier=gremio

[unix_http_server]
file={self.socket}
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.socket}
"""
        return head + "\n" + "\n".join(p.section(self.log_dir) for p in programs)

    def write(self, programs: list[Program]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.render(programs))

    def start_daemon(self, env: Mapping[str, str]) -> None:
        """Start supervisord (it daemonizes) and wait until it answers."""
        supervisord = str(Path(sys.executable).with_name("supervisord"))
        subprocess.run([supervisord, "-c", str(self.conf)], env={**os.environ, **env}, check=True)
        deadline = time.monotonic() + 15
        while not self.running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"supervisord did not start; see {self.log_dir / 'supervisord.log'}")
            time.sleep(0.2)

    @property
    def rpc(self):
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return self.rpc.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def start(self, name: str) -> None:
        try:
            self.rpc.startProcess(name, True)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise RuntimeError(
                    f"{name} did not start ({fault.faultString}); see {self.log_dir / (name + '.log')}"
                ) from None

    def states(self) -> dict[str, str]:
        try:
            return {info["name"]: info["statename"] for info in self.rpc.getAllProcessInfo()}
        except (OSError, xmlrpc.client.Fault):
            return {}

    def pids(self) -> dict[str, int]:
        """Each running program's main pid (also its process group id)."""
        try:
            return {i["name"]: i["pid"] for i in self.rpc.getAllProcessInfo() if i["pid"]}
        except (OSError, xmlrpc.client.Fault):
            return {}

    def shutdown(self, timeout: float = 120.0) -> bool:
        """Stop every program (as process groups) and supervisord itself; True when gone."""
        pid = self.pid()
        with contextlib.suppress(OSError, xmlrpc.client.Fault):
            self.rpc.shutdown()
        deadline = time.monotonic() + timeout
        while pid and _alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is as good as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def group_pss_kib(pgid: int) -> int:
    """Proportional set size (KiB) of every process in a process group."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (proc / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            continue
    return total
