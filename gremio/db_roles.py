"""`gremio db-roles`: LOGIN and a password for each service role of the gremio database.

sql/060_roles.sql creates the roles NOLOGIN and grants each only its tables. This runs as the
owner after `gremio migrate` (the local stack does both; compose's gremio-init too), and may
run again any time: it sets each role's password from the settings again, so changing
PG_STOCK_PASSWORD (say) and running it again rotates that password.

The passwords are hashed here (SCRAM-SHA-256, by libpq) and only the hash is sent, so the clear
password never reaches the server's logs. A role found with more than its grants (superuser,
CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS, or a member of another role) is refused, not
repaired: someone changed it by hand, and an operator should look.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from gremio import db
from gremio.settings import DB_ROLES, Settings, get_settings

EXTRA_POWERS = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")


class RoleError(RuntimeError):
    """A service role is missing, or has powers it must not have."""


def ensure_logins(settings: Settings | None = None) -> list[str]:
    """Give every service role LOGIN and its password from the settings; returns their names."""
    settings = settings or get_settings()
    # Every password first: a missing one stops the command before anything changes.
    logins = {DB_ROLES[role]: settings.db_login(role)[1] for role in DB_ROLES}
    with db.connect(settings, autocommit=False) as conn:
        for name, password in logins.items():
            _check(conn, name)
            verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
            conn.execute(
                sql.SQL("alter role {} with login password {}").format(
                    sql.Identifier(name), sql.Literal(verifier.decode())
                )
            )
        conn.commit()
    return list(logins)


def _check(conn: psycopg.Connection, name: str) -> None:
    columns = sql.SQL(", ").join(map(sql.Identifier, EXTRA_POWERS))
    row = conn.execute(
        sql.SQL("select oid, {} from pg_roles where rolname = %s").format(columns), (name,)
    ).fetchone()
    if row is None:
        raise RoleError(f"database role {name} does not exist: run `gremio migrate` first")
    powers = [power.removeprefix("rol") for power, held in zip(EXTRA_POWERS, row[1:], strict=True) if held]
    member_of = [
        r[0]
        for r in conn.execute(
            "select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid where m.member = %s",
            (row[0],),
        )
    ]
    if powers or member_of:
        held = ", ".join(powers + [f"member of {g}" for g in member_of])
        raise RoleError(f"database role {name} has more than its grants ({held}); fix it by hand")
