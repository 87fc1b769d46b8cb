"""Premium fast-track latency: from an application's 202 to its decision in PostgreSQL.

    .venv/bin/python -m bench.premium [--api URL] [--db URL] [--airflow-db URL]
                                      [--count 20] [--spacing 3] [--timeout 180]

Against a running stack (`make up`, or a private `gremio up`): it sends `--count` premium
applications through POST /v1/members, `--spacing` seconds apart (0: all at once, a burst
like the simulator's start), each with its own new RUT and plate, and polls
`member_applications` every 0.2 s until each is decided (approved or rejected). The
latency of an application is the time from its 202 to the poll that first sees it decided.
It prints every application, then p50, p90 and p100, and exits 1 if any took longer than
`--goal` (60 s) or was not decided within `--timeout`.

With `--airflow-db` (Airflow's metadata database; by default the local stack's), it also
splits each latency at the DAG run that decided it (`decided_by` names it): 202 → the
asset event the triggerer made from the record, → the run queued by the scheduler, → the
run started, → the decision. There is no baseline run: the split is the reference, it
shows which component takes the time.

The defaults point at the local stack of these settings (API_PORT, POSTGRES_PORT). A 429
(the applicants' rate limit, 20 a minute per address, which the simulator may already have
used) is retried after its Retry-After with the same Idempotency-Key, and the clock starts
at the 202.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg
from stdnum.cl import rut as stdnum_rut

from gremio.settings import get_settings

CONSONANTS = "BCDFGHJKLPRSTVWXYZ"


@dataclass
class Applied:
    key: str
    body: dict
    id: uuid.UUID | None = None
    offset: int | None = None  # where the API put it on members p1
    accepted: float | None = None  # time.time() at the 202
    seen: float | None = None  # time.time() of the poll that saw it decided
    status: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None

    @property
    def latency(self) -> float | None:
        return None if self.seen is None or self.accepted is None else self.seen - self.accepted


def applicant(rng: random.Random, run: str, i: int) -> Applied:
    body = str(rng.randint(60_000_000, 69_999_999))
    plate = "".join(rng.choice(CONSONANTS) for _ in range(4)) + f"{rng.randint(10, 99)}"
    return Applied(
        key=f"bench-premium-{run}-{i}",
        body={
            "first_name": "Bench",
            "last_name": f"Premium {i + 1:02d}",
            "rut": f"{body}-{stdnum_rut.calc_check_digit(body)}",
            "email": f"bench.{run}.{i}@example.cl",
            "plate": plate,
            "premium": True,
        },
    )


def submit(api: str, app: Applied, deadline: float) -> None:
    """POST it until a 202 (waiting out 429s and 503s); the 202 starts its clock."""
    data = json.dumps(app.body).encode()
    while True:
        request = urllib.request.Request(  # noqa: S310 - the API URL we were given
            api.rstrip("/") + "/v1/members",
            data=data,
            headers={"Content-Type": "application/json", "Idempotency-Key": app.key},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                reply = json.load(response)
                app.accepted = time.time()
                app.id = uuid.UUID(reply["id"])
                app.offset = int(reply["offset"])
                return
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 503) or time.time() > deadline:
                raise RuntimeError(f"POST /v1/members answered {exc.code}: {exc.read()[:300]!r}") from None
            wait = float(exc.headers.get("Retry-After") or 2)
            print(f"  {exc.code} for application {app.key}; retrying in {wait:.0f} s", file=sys.stderr)
            time.sleep(wait)


def poll(db: str, apps: list[Applied], sent: threading.Event, deadline: float) -> None:
    """Until every application is sent and decided: note when each is first seen decided."""
    with psycopg.connect(db, autocommit=True) as conn:
        while time.time() < deadline:
            waiting = {a.id: a for a in apps if a.id is not None and a.seen is None}
            if not waiting and sent.is_set():
                return
            rows = conn.execute(
                "select id, status, reason, decided_at, decided_by from member_applications"
                " where id = any(%s) and status <> 'pending'",
                (list(waiting),),
            ).fetchall()
            now = time.time()
            for app_id, status, reason, decided_at, decided_by in rows:
                app = waiting[app_id]
                app.seen, app.status, app.reason = now, status, reason
                app.decided_at, app.decided_by = decided_at, decided_by
            time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def split(airflow_db: str, apps: list[Applied]) -> None:
    """Where each application's time went, from Airflow's records: its asset event, the deciding run."""
    runs = sorted({a.decided_by.split("/", 1)[1] for a in apps if a.decided_by and "/" in a.decided_by})
    with psycopg.connect(airflow_db) as conn:
        timing = {
            run_id: (queued, started)
            for run_id, queued, started in conn.execute(
                "select run_id, queued_at, start_date from dag_run"
                " where dag_id = 'members_premium' and run_id = any(%s)",
                (runs,),
            )
        }
        events = dict(
            conn.execute(
                "select (e.extra -> 'payload' ->> 'offset')::bigint, min(e.timestamp) from asset_event e"
                " join asset a on a.id = e.asset_id"
                " where a.name = 'members_premium_applications' and e.extra -> 'payload' ->> 'partition' = '1'"
                " and (e.extra -> 'payload' ->> 'offset')::bigint = any(%s) group by 1",
                ([a.offset for a in apps if a.offset is not None],),
            ).fetchall()
        )
    parts: dict[str, list[float]] = {
        "202 → its asset event": [],
        "→ deciding run queued": [],
        "→ run started": [],
        "→ decided": [],
    }
    for a in apps:
        queued, started = timing.get((a.decided_by or "/").split("/", 1)[1], (None, None))
        event = events.get(a.offset)
        if None in (queued, started, event, a.decided_at, a.accepted):
            continue
        parts["202 → its asset event"].append(event.timestamp() - a.accepted)
        parts["→ deciding run queued"].append(queued.timestamp() - event.timestamp())
        parts["→ run started"].append(started.timestamp() - queued.timestamp())
        parts["→ decided"].append(a.decided_at.timestamp() - started.timestamp())
    print(f"\nsplit over {len(runs)} members_premium run(s) (median / max, seconds):")
    for name, values in parts.items():
        if values:
            print(f"  {name:<24} {statistics.median(values):6.1f} / {max(values):6.1f}")
    print(
        '  (negative "→ deciding run queued": an earlier record\'s run was queued first and took this one along)'
    )


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default=f"http://127.0.0.1:{settings.api_port}", help="the ingest API")
    parser.add_argument("--db", default=settings.db_url, help="gremio's PostgreSQL (libpq URL)")
    parser.add_argument(
        "--airflow-db",
        default=settings.airflow_db_url.replace("+psycopg2", ""),
        help="Airflow's metadata database, for the split ('' to skip)",
    )
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument(
        "--spacing", type=float, default=3.0, help="seconds between applications (0: a burst)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on decisions after this long")
    parser.add_argument("--goal", type=float, default=60.0, help="p100 goal in seconds (DESIGN §5)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    run = uuid.uuid4().hex[:8]
    rng = random.Random(args.seed if args.seed is not None else run)
    apps = [applicant(rng, run, i) for i in range(args.count)]
    started = time.time()
    print(f"sending {args.count} premium applications to {args.api}, {args.spacing:g} s apart")
    sent = threading.Event()

    def send_all() -> None:
        try:
            for i, app in enumerate(apps):
                if i and args.spacing:
                    time.sleep(max(0.0, started + i * args.spacing - time.time()))
                submit(args.api, app, started + args.timeout)
        except (OSError, RuntimeError) as exc:
            print(f"sending stopped: {exc}", file=sys.stderr)
        finally:
            sent.set()

    sender = threading.Thread(target=send_all, name="sender", daemon=True)
    sender.start()
    poll(args.db, apps, sent, started + args.count * args.spacing + args.timeout)
    sender.join()

    print(f"\n{'#':>3}  {'application id':36}  {'status':8}  {'latency':>8}  decided by")
    for i, a in enumerate(apps, 1):
        latency = f"{a.latency:7.1f}s" if a.latency is not None else "   never"
        print(f"{i:3}  {a.id!s:36}  {a.status or 'pending':8}  {latency}  {a.decided_by or ''}")
    latencies = [a.latency for a in apps if a.latency is not None]
    undecided = len(apps) - len(latencies)
    if latencies:
        print(
            f"\npremium 202 → decision in the database, {len(latencies)} of {len(apps)} decided: "
            f"p50 {percentile(latencies, 0.5):.1f} s · p90 {percentile(latencies, 0.9):.1f} s · "
            f"p100 {max(latencies):.1f} s (min {min(latencies):.1f} s; goal p100 ≤ {args.goal:g} s); "
            f"{len({a.decided_by for a in apps if a.decided_by})} DAG run(s) decided them"
        )
    if args.airflow_db and latencies:
        try:
            split(args.airflow_db, apps)
        except psycopg.Error as exc:
            print(f"(no split: Airflow's database is not reachable: {exc})")
    if undecided:
        print(f"{undecided} application(s) not decided within {args.timeout:g} s")
    return 1 if undecided or not latencies or max(latencies) > args.goal else 0


if __name__ == "__main__":
    sys.exit(main())
