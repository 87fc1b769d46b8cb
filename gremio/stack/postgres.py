"""A private PostgreSQL cluster from the OS packages, on loopback (DESIGN §7).

PostgreSQL refuses to run as root, so when we are root the cluster belongs to the
`postgres` system user that Debian's package creates. The superuser is reached only
through a unix socket inside the cluster's own folder; applications use TCP with
passwords (scram-sha-256).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from gremio.stack.system import StackError, apt_install

SERVER_PACKAGE = "postgresql"


def bin_dir() -> Path:
    """The newest installed server's bin folder, installing the server if there is none."""
    found = _find_bin_dir()
    if found is None:
        apt_install([SERVER_PACKAGE])
        found = _find_bin_dir()
    if found is None:
        raise StackError(
            f"PostgreSQL server binaries not found; install them with: sudo apt-get install -y {SERVER_PACKAGE}"
        )
    return found


def _find_bin_dir() -> Path | None:
    candidates = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if candidates:
        return max(candidates, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def service_user() -> str | None:
    """The OS user the server runs as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root needs the 'postgres' OS user; install the postgresql package"
        ) from None
    return "postgres"


@dataclass
class PostgresCluster:
    root: Path  # holds data/ and run/ (the socket)
    port: int
    bindir: Path
    user: str | None  # OS user to run as, None for the current one

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def _as_user(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _chown(self, path: Path) -> None:
        if self.user:
            info = pwd.getpwnam(self.user)
            os.chown(path, info.pw_uid, info.pw_gid)

    def prepare(self) -> None:
        """initdb once; safe to call again."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._chown(self.root)
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        os.chmod(self.socket_dir, 0o700)
        if (self.data_dir / "PG_VERSION").exists():
            return
        subprocess.run(
            self._as_user(
                [
                    str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                    "-E", "UTF8", "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def command(self) -> list[str]:
        """The server in the foreground, for the process manager or a test fixture."""
        return [
            str(self.bindir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "max_connections=200",
            "-c", "shared_buffers=128MB",
            "-c", "fsync=on",
            "-c", "log_min_messages=warning",
        ]  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> None:
        from gremio.db import wait_for_dsn

        try:
            wait_for_dsn(self.superuser_dsn(), timeout)
        except TimeoutError as exc:
            raise StackError(f"PostgreSQL did not start: {exc}") from exc

    def superuser_dsn(self) -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname=postgres"

    def ensure_database(self, user: str, password: str, database: str, createrole: bool = False) -> None:
        """A login role owning its own database; passwords are refreshed every time.

        `createrole`: the gremio owner creates the services' roles in its migrations
        (sql/060_roles.sql) and gives them LOGIN (`gremio db-roles`), as a plain role with
        CREATEROLE rather than a superuser.
        """
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (user,)).fetchone()
            verb = "alter" if exists else "create"
            conn.execute(
                sql.SQL(
                    verb + " role {} login " + ("createrole " if createrole else "") + "password {}"
                ).format(sql.Identifier(user), sql.Literal(password))
            )
            if not conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone():
                conn.execute(
                    sql.SQL("create database {} owner {}").format(
                        sql.Identifier(database), sql.Identifier(user)
                    )
                )
