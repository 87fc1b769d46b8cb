"""The `gremio` command line.

Each sub-command imports what it needs when it runs, so `gremio --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from gremio.logs import setup_logging
from gremio.settings import get_settings

Command = Callable[[argparse.Namespace], int]


def cmd_up(args: argparse.Namespace) -> int:
    from gremio.credentials import ensure_local_secrets
    from gremio.settings import local_secrets_file
    from gremio.stack.local import up

    # Before the settings are read: they require the secrets this makes on the first run.
    if ensure_local_secrets(local_secrets_file().parent):
        print(f"secrets: generated the local stack's own in {local_secrets_file()} (mode 0600)")
        get_settings.cache_clear()
    settings = get_settings()
    if args.cluster:
        settings = settings.model_copy(update={"topology": "cluster"})
    return up(settings)


def cmd_secrets(args: argparse.Namespace) -> int:
    """Write every secret docker-compose.yaml requires into a .env, fresh and random."""
    import os
    from pathlib import Path

    from gremio.credentials import write_deployment_env, write_deployment_staff_login

    path = Path(args.env_file)
    added = write_deployment_env(path)
    # The staff login (live map, /v1/live): its hash in .env, the clear login beside it.
    login_file = write_deployment_staff_login(path, os.environ.get("STAFF_USER") or "staff")
    added += ["STAFF_PASSWORD_HASH"] if login_file else []
    kept = "" if added else "; every secret was already there, nothing changed"
    print(f"{path}: {len(added)} secret(s) written, mode 0600{kept}")
    for name in added:
        print(f"  {name}")
    if login_file:
        print(f"the staff login (user and password) is in {login_file}, mode 0600")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from gremio.stack.local import down

    return down(get_settings())


def cmd_status(args: argparse.Namespace) -> int:
    from gremio.stack.local import report

    return report(get_settings(), wait=args.wait)


def cmd_migrate(args: argparse.Namespace) -> int:
    from gremio import db

    applied = db.migrate()
    print(f"{len(applied)} migration(s) applied" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_db_roles(args: argparse.Namespace) -> int:
    from gremio import db_roles

    try:
        names = db_roles.ensure_logins()
    except db_roles.RoleError as exc:
        print(f"gremio: {exc}", file=sys.stderr)
        return 1
    print("database roles with LOGIN and their passwords: " + ", ".join(names))
    return 0


def cmd_kafka_access(args: argparse.Namespace) -> int:
    from gremio import kafka_access

    settings = get_settings()
    if args.show:
        print("\n".join(kafka_access.describe(kafka_access.principals(settings))))
        return 0
    done = kafka_access.apply(settings)
    print(
        f"kafka principals: {done['users']} SCRAM user(s) set; ACLs: {done['created']} created,"
        f" {done['deleted']} stale deleted"
    )
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from gremio import kafka

    for name, what in kafka.ensure_topics().items():
        print(f"{name}: {what}")
    return 0


def cmd_airflow(args: argparse.Namespace) -> int:
    """Run Airflow's own CLI against the local stack's Airflow (its home, database, connections)."""
    import os

    from gremio.stack import airflow as af

    env = {**os.environ, **af.environment(get_settings())}
    os.execve(af.airflow_bin(), [af.airflow_bin(), *args.airflow_args], env)  # noqa: S606 - our venv's airflow
    return 0  # not reached: execve replaces this process


def cmd_settings(args: argparse.Namespace) -> int:
    print(json.dumps(get_settings().masked(), indent=2, default=str))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """`python -m consumers.watch` in this process's place: the package below the
    consumers does not import them (the one import that ran up the floors)."""
    import os

    argv = [sys.executable, "-m", "consumers.watch", *(["--once"] if args.once else [])]
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter
    return 0  # not reached: execv replaces this process


def cmd_token(args: argparse.Namespace) -> int:
    """`gremio token PLATE` prints a new token; `gremio token revoke PLATE` revokes them all."""
    from confluent_kafka import KafkaException

    from gremio.tokens import cart_token, revoke

    action, plate = ("issue", args.first) if args.plate is None else (args.first, args.plate)
    if action not in ("issue", "revoke") or plate == "revoke":
        print("usage: gremio token PLATE | gremio token revoke PLATE", file=sys.stderr)
        return 2
    try:
        if action == "issue":
            print(cart_token(plate, get_settings()))
            return 0
        revoked_at = revoke(plate, get_settings())
    except ValueError as exc:
        print(f"gremio token: {exc}", file=sys.stderr)
        return 2
    except KafkaException as exc:
        print(f"gremio token revoke: not revoked, Kafka said: {exc.args[0]}", file=sys.stderr)
        return 1
    print(
        f"revoked every token of {plate.upper()} issued up to {revoked_at.isoformat(timespec='milliseconds')}:"
        " every API worker refuses them within 10 s. `gremio token PLATE` issues a new one."
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from gremio.simulate import main as simulate

    return simulate(args)


def cmd_flag(args: argparse.Namespace) -> int:
    from gremio.members_cli import flag_rut

    return flag_rut(args.rut, args.reason, remove=args.remove)


def cmd_applications(args: argparse.Namespace) -> int:
    from gremio.members_cli import print_applications

    return print_applications(status=args.status, month=args.month, limit=args.limit)


def cmd_members(args: argparse.Namespace) -> int:
    from gremio.members_cli import print_members

    return print_members()


def cmd_deadletter(args: argparse.Namespace) -> int:
    from gremio import deadletter as dl

    action = args.action or "list"
    if action == "show":
        return dl.show_command(args.handle, max_bytes=args.max_bytes, timeout=args.timeout)
    if action == "replay":
        return dl.replay_command(
            args.handles, all_from=args.all_from, since=args.since, again=args.again, timeout=args.timeout
        )
    return dl.list_command(limit=args.limit, source_topic=args.topic, since=args.since, timeout=args.timeout)


def _deadletter_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    """`gremio deadletter [list|show|replay]`; the list's options work without `list` too."""
    parser = add("deadletter", cmd_deadletter, "list, show and replay dead letters (docs/OPERATIONS.md)")

    def options(p: argparse.ArgumentParser, listing: bool, on_action: bool) -> None:
        # Given on `deadletter` and again on each action: the action's copy counts only when
        # it is given (SUPPRESS), so `deadletter --limit 5` and `deadletter list --limit 5` agree.
        def default(value: object) -> object:
            return argparse.SUPPRESS if on_action else value

        p.add_argument(
            "--timeout", type=float, default=default(10.0), help="give up reading after this many s"
        )
        if listing:
            p.add_argument("--limit", type=int, default=default(20), help="the newest this many (0: all)")
            p.add_argument("--topic", default=default(None), metavar="SOURCE", help="only those from SOURCE")
            p.add_argument(
                "--since", default=default(None), help="only those since: 30m, 2h, 7d or an ISO time"
            )

    options(parser, listing=True, on_action=False)
    actions = parser.add_subparsers(dest="action", metavar="action")
    listing = actions.add_parser("list", help="the newest dead letters, newest last (no payloads)")
    options(listing, listing=True, on_action=True)
    show = actions.add_parser("show", help="one dead letter: its headers and value, escaped")
    show.add_argument("handle", metavar="P@O", help="the dead letter's partition@offset in deadletter")
    show.add_argument("--max-bytes", type=int, default=4096, help="show at most this much of the value")
    options(show, listing=False, on_action=True)
    replay = actions.add_parser("replay", help="send dead letters back to their source topic and partition")
    replay.add_argument("handles", nargs="*", metavar="P@O", help="the dead letters to replay")
    replay.add_argument("--all-from", metavar="SOURCE", help="every dead letter from this source topic ...")
    replay.add_argument("--since", default=argparse.SUPPRESS, help="... since: 30m, 2h, 7d or an ISO time")
    replay.add_argument("--again", action="store_true", help="replay even those replayed before")
    options(replay, listing=False, on_action=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gremio", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def add(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    start = add("up", cmd_up, "install what is missing and start the whole stack")
    start.add_argument(
        "--cluster",
        action="store_true",
        help="three Kafka nodes, two of each service, nginx, two Celery workers (make up-cluster)",
    )
    add("down", cmd_down, "stop everything `gremio up` started")
    status = add("status", cmd_status, "show each part's health")
    status.add_argument("--wait", type=float, default=0, help="wait up to this many seconds for health")
    add("migrate", cmd_migrate, "apply the SQL migrations in sql/")
    add(
        "db-roles",
        cmd_db_roles,
        "give the services' database roles LOGIN and their passwords (after migrate)",
    )
    add("topics", cmd_topics, "create missing topics and grow partition counts")
    access = add("kafka-access", cmd_kafka_access, "create the Kafka SCRAM users and their ACLs, as admin")
    access.add_argument("--show", action="store_true", help="print who may do what, change nothing")
    add("settings", cmd_settings, "print the settings in force (secrets masked)")
    secrets = add("secrets", cmd_secrets, "write fresh random secrets for docker compose into a .env (0600)")
    secrets.add_argument("--env-file", default=".env", help="the file to write (default: ./.env)")
    airflow = add(
        "airflow", cmd_airflow, "run Airflow's CLI against the local stack, e.g. `gremio airflow dags list`"
    )
    airflow.add_argument("airflow_args", nargs=argparse.REMAINDER, help="arguments for `airflow`")

    watch = add("watch", cmd_watch, "carts, reports, alerts and refill orders of the running stack, live")
    watch.add_argument("--once", action="store_true", help="print one screen and exit")

    token = add("token", cmd_token, "print a new API token of a cart, or revoke all its tokens")
    token.usage = "gremio token PLATE | gremio token revoke PLATE"
    token.add_argument("first", metavar="PLATE | revoke", help="the cart's plate, e.g. BBCL12; or `revoke`")
    token.add_argument(
        "plate", nargs="?", metavar="PLATE", help="after `revoke`: the cart whose tokens to revoke"
    )

    simulate = add("simulate", cmd_simulate, "drive simulated carts, clients and applicants against the API")
    simulate.add_argument("--carts", type=int, default=None, help="number of carts (default SIMULATE_CARTS)")
    simulate.add_argument("--seed", type=int, default=None, help="make the run deterministic")
    simulate.add_argument("--api", default=None, help="API base URL (default http://127.0.0.1:API_PORT)")
    simulate.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    simulate.add_argument("--speedup", type=float, default=1.0, help="run the clock this many times faster")

    flag = add("flag", cmd_flag, "flag a RUT in background_flags (antecedentes)")
    flag.add_argument("rut", help="the RUT, written any usual way (12.345.678-5)")
    flag.add_argument("--reason", default="antecedentes", help="why, for the staff (default: antecedentes)")
    flag.add_argument("--remove", action="store_true", help="lift the flag instead")

    apps = add("applications", cmd_applications, "list member applications and their status")
    apps.add_argument("--status", choices=["pending", "approved", "rejected"], default=None)
    apps.add_argument("--month", default=None, help="received in this month, YYYY-MM, in Santiago time")
    apps.add_argument("--limit", type=int, default=200, help="the newest this many (0: all; default 200)")

    add("members", cmd_members, "list the guild's members")
    _deadletter_parser(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
