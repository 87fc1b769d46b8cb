"""Accepted means processable (issue 12): property tests of hostile text, with the real parts.

Hypothesis writes request bodies whose text fields hold anything Unicode has: controls,
lone surrogates, bidi overrides, zero-width and combining marks, emoji, other scripts,
spreadsheet formulas, rich markup, very long strings. Each body is validated the way the
API validates it (JSON bytes for an endpoint; the parsed value for each item of a batch).
A refusal is fine: refusing is the models' job, and tests/unit/test_records.py says which
refusal. But whatever a model ACCEPTS, built into its record the way the API builds it,
must then be processable by everything downstream:

* on the wire: encoded by `Outgoing.of` as the API encodes them, produced to a real broker (a
  topic of the test's own, so no other consumer sees it), consumed back and decoded by the
  drain's and the consumers' decoders into an equal record;
* in PostgreSQL, through the code that puts it there: the DAGs' own KafkaDrainOperator
  (read, decode, COPY, insert) for sales and member applications, the membership
  decisions for members, the live-location service's `process` for fugitive reports,
  positions and their alerts; and read back as it was written;
* downstream: the replenishment rules, the live view and its terminal board, the daily
  sales report files (CSV, JSON, TXT, PNG), the monthly members report (CSV, TXT) and the
  `gremio applications` / `gremio members` tables. CSV files parse back to their rows, with
  every text cell that could start a formula neutralized; text files and screens carry no
  control or invisible character but the line break.

Each test keeps one drain or service (and so one PostgreSQL connection) for all its
examples; every example's rows have fresh ids and are deleted, or rolled back, before the
next example runs.
"""

from __future__ import annotations

import csv
import io
import json
import runpy
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, ValidationError
from rich.console import Console, RenderableType
from stdnum.cl import rut as stdnum_rut

from consumers.locations import board
from consumers.locations.service import LocationService
from consumers.locations.store import LiveStore
from consumers.locations.view import LiveView, Rules, alert_id
from consumers.stock import rules as stock_rules
from gremio import (
    db,
    guild_time,
    members_cli,
    membership,
    membership_report,
    runner,
    sales_daily_report,
    sales_stats,
)
from gremio import kafka as gk
from gremio import records as r
from gremio import topics as t
from gremio.kafka import Outgoing
from gremio.safetext import screen
from gremio.settings import REPO_ROOT, get_settings
from tests.support import make_topic

M = TypeVar("M", bound=BaseModel)

# --- how many examples ----------------------------------------------------------------------

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(PROPERTY, max_examples=25)

# --- hostile text ------------------------------------------------------------------------------

ZALGO = "Z\u0351\u034a\u0310\u0334\u0321a\u0308\u0301\u0337\u0316l\u0342\u0354\u0338g\u0300\u0336\u0353o\u030c\u0335\u0329"
NASTY = (
    "\x00",
    "\u202e",
    "\ud800",
    '=HYPERLINK("http://x")',
    "+56912345678",
    "-2+3",
    "@SUM(A1)",
    "'; DROP TABLE sales;--",
    "{0}%s",
    "<script>",
    "${jndi:ldap://x}",
    "[/b][red]",
    "e\u0301",
    "👩\u200d👩\u200d👧",
    "مرحبا",
    "漢字",
    ZALGO,
    "x" * 80,
    "x" * 81,
    "  padded  ",
    # A few more: whitespace the trim keeps or folds in front of a formula, mathtext for the
    # chart, a script matplotlib warns about, and characters no UTF-8 text should carry.
    " \u00a0=1+1",
    "\t=cmd|' /C calc'!A0",
    "$x^2$ \\$ cost",
    "नमस्ते",
    "\ufeff",
    "\u2028",
    "\x1b[31mred",
    "\uffff\U0010ffff",
    "'=already quoted",
)

# Every code point, lone surrogates included (st.characters leaves them out by default).
ANY_CHAR = st.characters(exclude_categories=())
# What the text rules let through: everything but controls, surrogates, format characters
# and the line and paragraph separators.
KEPT_CHAR = st.characters(exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp"))
SPICY_CHAR = st.sampled_from(
    "=+-@'\";:,.[]/\\$%{}<>|!#&*^~`"
    "\t\r\n \u00a0\u2000\u2007\u202f\u3000"
    "\u0301\u0308\u0336\u0489\u20dd"
    "\x00\x1b\x7f\x85\u200b\u200d\u202e\u2066\ufeff\ud800\udfff\u2028\u2029"
    "\u05d0\u0627\u0928\u09a6\u0e01\u6f22\uac00\U0001f600\U0001f469\U000e0041\ue000\uffff\U0010ffff"
)
hostile_text = st.one_of(
    st.text(ANY_CHAR, max_size=90),
    st.text(st.one_of(KEPT_CHAR, SPICY_CHAR), max_size=90),
    st.text(st.one_of(KEPT_CHAR, SPICY_CHAR), min_size=70, max_size=520),
    st.sampled_from(NASTY),
)

# --- plates, RUTs, emails, times and places, as a cart or an applicant may spell them ---------

CONSONANTS = "BCDFGHJKLPRSTVWXYZ"
_plates = st.one_of(
    st.from_regex(r"\A[A-Z]{2}[0-9]{4}\Z"), st.from_regex(rf"\A[{CONSONANTS}]{{4}}[0-9]{{2}}\Z")
)


def fullwidth(text: str) -> str:
    """'AB12' as a phone's fullwidth keyboard types it: 'ＡＢ１２' (NFKC folds it back)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


@st.composite
def spelled_plates(draw: st.DrawFn) -> str:
    plate = draw(_plates)
    if draw(st.booleans()):
        plate = plate.lower()
    sep = draw(st.sampled_from(["", "-", " ", ".", "·", "\u00a0", " - "]))
    plate = plate[:2] + sep + plate[2:4] + sep + plate[4:]
    if draw(st.booleans()):
        plate = fullwidth(plate)
    return draw(st.sampled_from(["", " ", "\u3000"])) + plate + draw(st.sampled_from(["", " "]))


plates = st.one_of(spelled_plates(), hostile_text)


def rut_of(body: int) -> str:
    return f"{body}-{stdnum_rut.calc_check_digit(str(body))}"


@st.composite
def spelled_ruts(draw: st.DrawFn) -> str:
    text = rut_of(draw(st.integers(1, 99_999_999)))
    if draw(st.booleans()):
        body, _, check = text.partition("-")
        text = f"{int(body):,}".replace(",", ".") + "-" + check
    style = draw(st.sampled_from(["plain", "lower", "fullwidth", "arabic-indic", "spaced", "no-dash"]))
    if style == "lower":
        text = text.lower()
    elif style == "fullwidth":
        text = fullwidth(text)
    elif style == "arabic-indic":
        text = "".join(chr(0x0660 + int(c)) if c.isdigit() else c for c in text)
    elif style == "spaced":
        text = f"  {text} "
    elif style == "no-dash":
        text = text.replace("-", "")
    return text


ruts = st.one_of(spelled_ruts(), hostile_text)
_label = st.text(st.one_of(KEPT_CHAR, SPICY_CHAR), min_size=1, max_size=20)
emails = st.one_of(
    st.emails(),
    st.builds("{}@{}".format, _label, st.sampled_from(["example.cl", "EXAMPLE.CL", "correo.uchile.cl"])),
    st.builds("{}@{}.cl".format, _label, _label),
    hostile_text,
)


def at(seconds: float, offset_minutes: int, zulu: bool) -> str:
    """A time `seconds` from now, as ISO 8601 text with a UTC offset (or Z)."""
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    if zulu:
        return moment.isoformat().replace("+00:00", "Z")
    return moment.astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat()


# Inside the window the API accepts (7 days back, 300 s ahead), with a margin either side.
recent_times = st.one_of(
    st.none(),
    st.builds(at, st.floats(-6.5 * 86400, 200), st.integers(-23 * 60 - 59, 23 * 60 + 59), st.booleans()),
)
latitudes = st.one_of(st.floats(-56, -17), st.floats(-90, 90), st.integers(-90, 90))
longitudes = st.one_of(st.floats(-76, -66), st.floats(-180, 180), st.integers(-180, 180))

# --- helpers: validation as the API does it -----------------------------------------------------


def validation_context() -> dict[str, Any]:
    """`intake.validation_context()` without a Flask app: the same settings, the same keys."""
    s = get_settings()
    return {
        "max_future_seconds": s.max_future_seconds,
        "max_age_days": s.sales_max_age_days,
        "max_batch_items": s.max_batch_items,
    }


def validated(model: type[M], body: Any) -> M | None:
    """The body as the API validates it, or None if refused.

    An endpoint validates the JSON bytes (`json.dumps` escapes a lone surrogate as
    `\\ud800`, as a client would have to send it); /v1/sales/batch validates each item after
    JSON parsing, as a Python value. Both ways must agree, and give the same model.
    """
    from_json = from_wire(model, body)
    try:
        from_python = model.model_validate(body, context=validation_context())
    except ValidationError:
        from_python = None
    assert (from_json is None) == (from_python is None), (body, from_json, from_python)
    assert from_json == from_python
    event(f"{model.__name__} {'accepted' if from_json is not None else 'refused'}")
    return from_json


def from_wire(model: type[M], body: Any) -> M | None:
    """The body sent as JSON and validated as an endpoint does, or None if refused."""
    try:
        return model.model_validate_json(json.dumps(body).encode(), context=validation_context())
    except ValidationError:
        event(f"{model.__name__} refused")
        return None


def spanish(body: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(k, k): v for k, v in body.items()}


def fresh_key() -> str:
    """An Idempotency-Key, so the id is derived from the body's digest (records.request_id)."""
    return str(uuid.uuid4())


# --- helpers: what may be shown -------------------------------------------------------------------

HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def hidden_chars(text: str) -> list[str]:
    """Control and invisible characters in `text`, but the line break."""
    return [f"U+{ord(c):04X}" for c in text if c != "\n" and unicodedata.category(c) in HIDDEN]


def shown(renderable: RenderableType) -> str:
    """What a 120-column terminal would show; it must carry no hidden character."""
    out = io.StringIO()
    Console(file=out, width=120).print(renderable)
    text = out.getvalue()
    assert hidden_chars(text) == []
    return text


def csv_rows(content: bytes, columns: tuple[str, ...], expected_rows: int) -> list[dict[str, str]]:
    """A report CSV parsed back by the csv module: the header, then one row per report row."""
    parsed = list(csv.reader(io.StringIO(content.decode("utf-8"), newline="")))
    assert parsed[0] == list(columns)
    assert len(parsed) == expected_rows + 1
    assert all(len(row) == len(columns) for row in parsed)
    for row in parsed:
        for cell in row:
            assert not cell.startswith(FORMULA_START), f"formula cell {cell!r}"
    return [dict(zip(columns, row, strict=True)) for row in parsed[1:]]


def same_cell(cell: str, value: str) -> bool:
    """A text cell holds `value`, or `value` neutralized with a leading `'` (csv_cell)."""
    return cell == value or (value.startswith(FORMULA_START) and cell == "'" + value)


def clean_file(content: bytes) -> str:
    text = content.decode("utf-8")
    assert hidden_chars(text) == []
    return text


# --- helpers: the wire and the drain ---------------------------------------------------------------


def dag_task(dag_id: str, task_id: str):
    """A task as its DAG file declares it (dags/DAG_ID.py), so the test drains as the DAG does."""
    namespace = runpy.run_path(str(REPO_ROOT / "dags" / f"{dag_id}.py"))
    return namespace[dag_id]().get_task(task_id)


@pytest.fixture(scope="module")
def producer() -> Iterator[Producer]:
    """One producer for the module, as the API keeps one per process (ingest_api.delivery)."""
    prod = gk.producer()
    yield prod
    prod.flush(10)


def produce(prod: Producer, outgoing: list[Outgoing]) -> list[Message]:
    """The API's records as it produces them, acknowledged by the broker."""
    return gk.produce_all(prod, outgoing)


@dataclass
class Drain:
    """The DAG's KafkaDrainOperator, pointed at a topic of the test's own and at the DAG's table.

    `land()` produces records as the API does, then runs the drain's own steps on them:
    read and decode the chunk (`read_chunk`), COPY it into staging (`stage`), insert and
    commit (`insert`).
    """

    drain: Any
    conn: Any
    topic: str
    producer: Producer

    def land(self, outgoing: list[Outgoing]) -> list[Message]:
        delivered = produce(self.producer, outgoing)
        start: dict[int, int] = {}
        todo: dict[int, int] = {}
        for msg in delivered:
            p = msg.partition()
            start[p] = min(start.get(p, msg.offset()), msg.offset())
            todo[p] = max(todo.get(p, 0), msg.offset() + 1)
        assigned = [TopicPartition(self.topic, p, start[p]) for p in sorted(todo)]
        # A fresh consumer for each landing, as every drain run has its own. One consumer
        # re-assigned to the same partition example after example (paused at its mark each
        # time) once fetched nothing for the whole stall_timeout under CI load.
        from kafka_drain import _consumer

        self.drain.consumer.close()
        self.drain.consumer = _consumer(self.drain.op.kafka_config_id, self.drain.op.group_id)
        self.drain.consumer.assign(assigned)
        self.drain.consumer.resume(assigned)
        # A chunk of exactly these records: the drain asks the broker for no more than that.
        self.drain.op.rows_per_transaction = len(outgoing)
        chunk = self.drain.read_chunk(dict(todo))
        assert chunk.poison == [], "the drain could not decode an accepted record"
        assert chunk.read == len(outgoing)
        self.drain.stage(self.conn, chunk)
        assert chunk.failure is None, f"PostgreSQL refused an accepted record: {chunk.failure!r}"
        inserted = self.drain.stats["inserted"]
        self.drain.insert(self.conn)
        assert self.drain.stats["inserted"] - inserted == len(outgoing)
        return chunk.msgs

    def delete(self, table: str, ids: list[uuid.UUID]) -> None:
        """Clean up as the owner: the drain's role (gremio_airflow) may insert, never delete."""
        self.conn.rollback()
        with db.connect() as owner:
            owner.execute(sql.SQL("delete from {} where id = any(%s)").format(sql.Identifier(table)), (ids,))


# The drain's Kafka connection with one change: a fetch waits 10 ms for new data, not 500, so
# the next example's assign() is not held up by the long poll the last one left running.
QUICK_KAFKA = "kafka_hostile_properties"


@pytest.fixture(scope="module", autouse=True)
def _quick_kafka_connection() -> Iterator[None]:
    quick = {
        "conn_type": "kafka",
        "extra": {**json.loads(get_settings().airflow_connections()["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"],
                  "fetch.wait.max.ms": "10"},
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv(f"AIRFLOW_CONN_{QUICK_KAFKA.upper()}", json.dumps(quick))
        yield


@contextmanager
def drain_for(dag_id: str, task_id: str, partitions: int, prod: Producer) -> Iterator[Drain]:
    from kafka_drain import KafkaDrainOperator, _Drain

    task = dag_task(dag_id, task_id)
    topic = make_topic(f"hostile-{task.topic}-{uuid.uuid4().hex[:8]}", partitions)
    op = KafkaDrainOperator(
        task_id=task.task_id,
        topic=topic,
        table=task.table,
        record=task.record,
        group_id=f"hostile-{uuid.uuid4().hex[:8]}",
        columns=task.columns,
        message_columns=task.message_columns,
        partitions=task.partitions,
        conflict_columns=task.conflict_columns,
        prepare=task.prepare,
        kafka_config_id=QUICK_KAFKA,
    )
    model = op.record_model()
    drain = _Drain(op, model, op.column_map(model))
    try:
        conn = drain.connect()
        drain.conns.append(conn)
        yield Drain(drain, conn, topic, prod)
    finally:
        drain.close()


def decoded_as_sent(msg: Message, record: r.Record) -> None:
    """The record came back equal from the wire, by the consumers' decoder too."""
    assert runner.decode(msg, {record.type_name: type(record)}) == record
    assert type(record).from_bytes(msg.value()) == record


def reports_settings(tmp_path: Path):
    return get_settings().model_copy(update={"reports_dir": tmp_path})


def today() -> date:
    return datetime.now(ZoneInfo(get_settings().guild_timezone)).date()


def check_daily_report(conn: Any, tmp_path: Path, chart: bool) -> list[sales_stats.MasterDay]:
    """The sales_daily DAG's last two steps on the day so far: compute and store the day,
    load it back, write the files; each file read back. Returns the rows loaded."""
    day = today()
    rows, totals = sales_stats.compute_day(conn, day)
    sales_stats.store_day(conn, day, rows, totals)
    loaded, loaded_totals = sales_stats.load_day(conn, day)
    assert (loaded, loaded_totals) == (rows, totals)
    paths = {
        p.suffix: p
        for p in sales_daily_report.write_daily(day, loaded, loaded_totals, reports_settings(tmp_path), chart)
    }
    cells = csv_rows(paths[".csv"].read_bytes(), sales_daily_report.CSV_COLUMNS, len(loaded))
    for cell, row in zip(cells, loaded, strict=True):
        assert same_cell(cell["name"], row.name)
        assert same_cell(cell["rut"], row.rut)
        assert same_cell(cell["plate"], row.plate)
        assert same_cell(cell["frequent_clients"], row.frequent_clients_text)
        assert cell["units_sold"] == str(row.units_sold)
    doc = json.loads(paths[".json"].read_bytes())
    assert [(m["rut"], m["name"]) for m in doc["masters"]] == [(x.rut, x.name) for x in loaded]
    assert [[c["client"] for c in m["frequent_clients"]] for m in doc["masters"]] == [
        [c.client for c in x.frequent_clients] for x in loaded
    ]
    clean_file(paths[".txt"].read_bytes())
    if chart:
        assert paths[".png"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    return loaded


def with_examples(*cases: dict[str, Any]) -> Callable:
    """@example for each case, in order."""

    def apply(test: Callable) -> Callable:
        for case in reversed(cases):
            test = example(**case)(test)
        return test

    return apply


# --- sales: one sale (/v1/sales) ---------------------------------------------------------------

SALE_SPANISH = {
    "plate": "patente", "client": "cliente", "quantity": "cantidad", "sold_at": "hora",
    "stock_remaining": "stock", "location": "ubicacion",
}  # fmt: skip


@pytest.fixture
def sales_drain(producer) -> Iterator[Drain]:
    with drain_for("sales_daily", "drain_sales", t.SALES.partitions, producer) as drain:
        yield drain


def sale_case(client: str, **changes: Any) -> dict[str, Any]:
    case = {
        "client": client, "plate": "bbcl-12", "quantity": 2, "stock": 15, "sold_at": None,
        "lat": -33.45, "lon": -70.66, "in_spanish": False,
    }  # fmt: skip
    return case | changes


@PROPERTY
@given(
    client=hostile_text,
    plate=plates,
    quantity=st.integers(1, 1000),
    stock=st.integers(0, 10_000),
    sold_at=recent_times,
    lat=latitudes,
    lon=longitudes,
    in_spanish=st.booleans(),
)
@with_examples(*(sale_case(s) for s in NASTY), sale_case("Ana", plate="ＢＢ－ＣＬ１２", in_spanish=True))
def test_an_accepted_sale_is_processable(
    sales_drain, tmp_path, client, plate, quantity, stock, sold_at, lat, lon, in_spanish
):
    body = {
        "plate": plate, "client": client, "quantity": quantity, "stock_remaining": stock,
        "location": {"lat": lat, "lon": lon},
    }  # fmt: skip
    if sold_at is not None:
        body["sold_at"] = sold_at
    sale_in = validated(r.SaleIn, spanish(body, SALE_SPANISH) if in_spanish else body)
    if sale_in is None:
        return
    received_at = r.now_utc()
    # Sent twice (a second purchase by the same client), so the client is a frequent one.
    sales = [
        r.sale(sale_in, r.request_id(fresh_key(), "/v1/sales", sale_in, sale_in.plate), received_at)
        for _ in range(2)
    ]
    try:
        msgs = sales_drain.land([Outgoing.of(s, sales_drain.topic, s.plate) for s in sales])
        by_id = {s.id: s for s in sales}
        for msg in msgs:
            decoded_as_sent(msg, by_id[r.Sale.from_bytes(msg.value()).id])
        conn = sales_drain.conn
        stored = conn.execute(
            "select client, plate, quantity, stock_remaining, sold_at, lat, lon from sales where id = any(%s)",
            ([s.id for s in sales],),
        ).fetchall()
        sale = sales[0]
        expected = (
            sale.client,
            sale.plate,
            sale.quantity,
            sale.stock_remaining,
            sale.sold_at,
            sale.lat,
            sale.lon,
        )
        assert stored == [expected, expected]

        # The replenishment rules: an order opens below the threshold, and travels as a record.
        decision = stock_rules.handle(sales, {}, stock_rules.Rules.from_settings(get_settings()), received_at)
        assert len(decision.opened) == (1 if sale.stock_remaining < get_settings().stock_threshold else 0)
        for order in decision.opened:
            assert r.ReplenishmentOrder.from_bytes(order.to_bytes()) == order

        # The live view (a sale carries its cart's position) and its board.
        view = LiveView(Rules.from_settings(get_settings()))
        effects = view.apply(sale)
        for raised in effects.alerts:
            assert r.Alert.from_bytes(raised.alert.to_bytes()) == raised.alert
        shown(board.render(view.snapshot(), ZoneInfo(get_settings().guild_timezone)))
        shown(screen(sale.client))

        # The daily report of the day so far, this cart's sales among them; rolled back after.
        with conn.transaction(force_rollback=True):
            rows = check_daily_report(conn, tmp_path, chart=False)
        start, end = guild_time.day_bounds(today(), get_settings().guild_timezone)
        if start <= sale.sold_at < end:
            mine = [row for row in rows if sale.plate in row.plate.split(";")]
            assert mine, f"cart {sale.plate} is missing from the daily report"
            key = conn.execute("select client_key(%s)", (sale.client,)).fetchone()[0]
            frequent = [c.client for c in mine[0].frequent_clients]
            assert key in frequent or len(frequent) == get_settings().frequent_clients_max
    finally:
        sales_drain.delete("sales", [s.id for s in sales])


# --- sales: a batch kept offline (/v1/sales/batch) ---------------------------------------------------


@FEW
@given(
    plate=_plates,
    items=st.lists(
        st.fixed_dictionaries(
            {
                "client": hostile_text,
                "plate": st.one_of(st.none(), spelled_plates(), hostile_text),
                "quantity": st.one_of(st.integers(1, 1000), st.integers()),
                "stock_remaining": st.integers(0, 10_000),
                "location": st.fixed_dictionaries({"lat": latitudes, "lon": longitudes}),
            },
            optional={"sold_at": recent_times},
        ),
        min_size=1,
        max_size=6,
    ),
)
@example(plate="BBCL12", items=[{"client": s} for s in NASTY])
def test_the_accepted_sales_of_a_batch_are_processable(sales_drain, plate, items):
    # Items without a plate of their own are the token's cart's, spelled as the cart spells it.
    items = [
        {
            "plate": plate.lower(),
            "quantity": 1,
            "stock_remaining": 50,
            "location": {"lat": -33.4, "lon": -70.6},
        }
        | {k: v for k, v in item.items() if v is not None}
        for item in items
    ]
    batch = from_wire(r.SaleBatchIn, {"sales": items})
    if batch is None:
        return  # 400: a lone surrogate is not JSON
    received_at = r.now_utc()
    accepted: list[r.Sale] = []
    for index, item in enumerate(batch.sales):
        try:  # as intake.parse does it: the item already parsed from the JSON body
            body = r.SaleIn.model_validate(item, context=validation_context())
        except ValidationError:
            continue
        if body.plate != plate:
            return  # 403 for the whole batch: another cart's sale; nothing is produced
        key = r.request_id(fresh_key(), "/v1/sales/batch", body, plate, str(index))
        accepted.append(r.sale(body, key, received_at))
    if not accepted:
        return  # 422: no sale in the batch is valid
    try:
        msgs = sales_drain.land([Outgoing.of(s, sales_drain.topic, s.plate) for s in accepted])
        by_id = {s.id: s for s in accepted}
        for msg in msgs:
            decoded_as_sent(msg, by_id[r.Sale.from_bytes(msg.value()).id])
        stored = dict(
            sales_drain.conn.execute(
                "select id, client from sales where id = any(%s)", ([s.id for s in accepted],)
            ).fetchall()
        )
        assert stored == {s.id: s.client for s in accepted}
        decision = stock_rules.handle(accepted, {}, stock_rules.Rules(), received_at)
        assert len(decision.carts) == 1
    finally:
        sales_drain.delete("sales", [s.id for s in accepted])


# --- member applications (/v1/members), decisions, members and both reports ---------------------------


@pytest.fixture
def members_drain(producer) -> Iterator[Drain]:
    with drain_for("members_premium", "drain_applications", t.MEMBERS.partitions, producer) as drain:
        yield drain


def member_case(first_name: str, **changes: Any) -> dict[str, Any]:
    case = {
        "first_name": first_name, "last_name": first_name, "rut": None, "email": "ana@example.cl",
        "plate": None, "premium": True, "in_spanish": False,
    }  # fmt: skip
    return case | changes


MEMBER_SPANISH = {"first_name": "nombre", "last_name": "apellido", "email": "correo", "plate": "patente"}


@FEW
@given(
    first_name=hostile_text,
    last_name=hostile_text,
    rut=st.one_of(st.none(), ruts),
    email=emails,
    plate=st.one_of(st.none(), plates),
    premium=st.booleans(),
    in_spanish=st.booleans(),
)
@with_examples(
    *(member_case(s) for s in NASTY),
    *(member_case("Ana", email=f"{s}@example.cl") for s in ("ñandú", "\u202eevil", "=cmd", '"q"', "a.b")),
    member_case("Ana", rut="12.345.678-5", plate="ab·1234", in_spanish=True, premium=False),
)
def test_an_accepted_member_application_is_processable(
    members_drain, tmp_path, first_name, last_name, rut, email, plate, premium, in_spanish
):
    # A RUT and a plate no other example holds, unless Hypothesis chose how to spell them.
    rng = uuid.uuid4().int
    body = {
        "first_name": first_name,
        "last_name": last_name,
        "rut": rut if rut is not None else rut_of(30_000_000 + rng % 60_000_000),
        "email": email,
        "plate": plate
        if plate is not None
        else "".join(CONSONANTS[(rng >> (5 * i)) % 18] for i in range(4)) + f"{rng % 100:02d}",
        "premium": premium,
    }
    application_in = validated(r.MemberApplicationIn, spanish(body, MEMBER_SPANISH) if in_spanish else body)
    if application_in is None:
        return
    app = r.member_application(
        application_in,
        r.request_id(fresh_key(), "/v1/members", application_in, application_in.rut),
        r.now_utc(),
    )
    partition = t.member_partition(app.premium)
    conn = members_drain.conn
    try:
        [msg] = members_drain.land([Outgoing.of(app, members_drain.topic, app.rut, partition)])
        decoded_as_sent(msg, app)
        stored = conn.execute(
            "select first_name, last_name, rut, email, plate, premium, received_at, kafka_partition"
            " from member_applications where id = %s",
            (app.id,),
        ).fetchone()
        assert stored == (app.first_name, app.last_name, app.rut, app.email, app.plate, app.premium,
                          app.received_at, partition)  # fmt: skip

        # Decided as its lane decides it, then everything that shows members; rolled back after.
        # As the owner: the screens are the operators' commands (`gremio members` shows e-mails,
        # which the DAGs' role gremio_airflow may not read).
        with db.connect() as owner, owner.transaction(force_rollback=True):
            [decision] = membership.decide_pending(
                owner,
                premium=app.premium,
                decided_by="hostile-properties",
                received_from=app.received_at,
                received_until=app.received_at + timedelta(microseconds=1),
            )
            assert decision.application.id == app.id
            check_screens_and_reports(owner, tmp_path, app, decision)
    finally:
        members_drain.delete("member_applications", [app.id])


def check_screens_and_reports(conn: Any, tmp_path: Path, app: r.MemberApplication, decision: Any) -> None:
    tz = get_settings().guild_timezone
    name = f"{app.first_name} {app.last_name}"
    if decision.approved:
        member = conn.execute("select first_name, last_name, email from members where rut = %s", (app.rut,))
        assert member.fetchone() == (app.first_name, app.last_name, app.email)

    # `gremio applications` and `gremio members`.
    month = today().replace(day=1)
    start, end = guild_time.month_bounds(month, tz)
    by_name = conn.cursor(row_factory=dict_row)
    listed = by_name.execute(
        db.query("members_applications_list"),
        {"status": None, "month_start": start, "month_end": end, "limit": 200},
    ).fetchall()
    shown(members_cli.applications_table(listed, tz, "Applications"))
    shown(members_cli.members_table(by_name.execute(db.query("members_list")).fetchall(), tz))

    # The monthly members report.
    rows = membership.month_decisions(conn, month, tz)
    assert app.id in {row["id"] for row in rows}
    txt, csv_path = membership_report.write_monthly(month, rows, reports_settings(tmp_path))
    text = clean_file(txt.read_bytes())
    assert name in text
    cells = csv_rows(csv_path.read_bytes(), membership_report.CSV_COLUMNS, len(rows))
    [mine] = [cell for cell in cells if cell["application_id"] == str(app.id)]
    assert same_cell(mine["name"], name)
    assert mine["status"] == decision.status

    # The live board names the cart's master; the daily report (and its chart) lists them.
    view = LiveView(Rules.from_settings(get_settings()))
    members = LiveStore(get_settings())
    try:
        view.set_members(members.members())
    finally:
        members.close()
    position = r.CartPosition(
        id=uuid.uuid4(),
        plate=app.plate,
        lat=-33.45,
        lon=-70.66,
        recorded_at=r.now_utc(),
        received_at=r.now_utc(),
    )
    view.apply(position)
    shown(board.render(view.snapshot(), ZoneInfo(tz)))
    daily = check_daily_report(conn, tmp_path, chart=True)
    if decision.approved:
        assert name in [row.name for row in daily if row.rut == app.rut]


# --- the live-location service: fugitive reports (/v1/reports) and positions (/v1/locations) -------------


@dataclass
class Live:
    """The live-location service on topics of the test's own; its store is the test's connection."""

    service: LocationService
    topic: str
    consumer: Consumer
    producer: Producer

    def process(self, outgoing: Outgoing) -> r.Record:
        """Produce as the API does, consume it back, decode and process it as the service does."""
        [delivered] = produce(self.producer, [outgoing])
        self.consumer.assign([TopicPartition(self.topic, delivered.partition(), delivered.offset())])
        msg = self.consumer.poll(30)
        assert msg is not None and msg.error() is None, msg and msg.error()
        record = runner.decode(msg, LocationService.accepts)
        assert self.service.process([runner.Envelope.of(record, msg)]) == []
        return record

    def delete(self, reports: list[uuid.UUID], alerts: list[uuid.UUID]) -> None:
        conn = self.service.store.conn
        conn.execute("delete from fugitive_reports where id = any(%s)", (reports,))
        conn.execute("delete from alerts where id = any(%s)", (alerts,))


@pytest.fixture
def live(producer) -> Iterator[Live]:
    topic = make_topic(f"hostile-locations-{uuid.uuid4().hex[:8]}", t.LOCATIONS.partitions)
    service = LocationService(get_settings(), group_id=f"hostile-{uuid.uuid4().hex[:8]}", locations_topic=topic,
                              sales_topic=topic)  # fmt: skip
    consumer = Consumer(
        get_settings().kafka_config(
            **{
                "group.id": f"hostile-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
    )
    try:
        yield Live(service.start(), topic, consumer, producer)
    finally:
        consumer.close()
        service.close()


def report_case(description: str | None, **changes: Any) -> dict[str, Any]:
    return {"description": description, "plate": None, "lat": -33.45, "lon": -70.66} | changes


@PROPERTY
@given(
    description=st.one_of(st.none(), hostile_text),
    plate=st.one_of(st.none(), plates),
    lat=latitudes,
    lon=longitudes,
)
@with_examples(
    *(report_case(s) for s in NASTY),
    report_case("line one\r\nline two\ttabbed", plate="bb cl 12"),
    report_case("x" * 500),
    report_case("x" * 501),
)
def test_an_accepted_fugitive_report_is_processable(live, description, plate, lat, lon):
    body = {"lat": lat, "lon": lon} | ({"description": description} if description is not None else {})
    if plate is not None:
        body["patente"] = plate
    report_in = validated(r.FugitiveReportIn, body)
    if report_in is None:
        return
    report = r.fugitive_report(report_in, r.request_id(fresh_key(), "/v1/reports", report_in), r.now_utc())
    alert = alert_id(report.id, "fugitive_report")
    try:
        processed = live.process(
            Outgoing.of(report, live.topic, report.plate or str(report.id), t.FUGITIVE_PARTITION)
        )
        assert processed == report
        conn = live.service.store.conn
        stored = conn.execute(
            "select description, plate, lat, lon from fugitive_reports where id = %s", (report.id,)
        ).fetchone()
        assert stored == (report.description, report.plate, report.lat, report.lon)
        [detail] = conn.execute("select detail from alerts where id = %s", (alert,)).fetchone()
        assert str(report.id) in detail
        # The feeds other instances read back, and the board.
        since = report.received_at - timedelta(seconds=1)
        assert report.id in {seen.id for seen in live.service.store.recent_reports(since)}
        assert alert in {a.id for a in live.service.store.recent_alerts(since, 500)}
        text = shown(board.render(live.service.view.snapshot(), ZoneInfo(get_settings().guild_timezone)))
        assert "Fugitive reports" in text
        shown(screen(report.description))
    finally:
        live.delete([report.id], [alert])


@FEW
@given(plate=plates, lat=latitudes, lon=longitudes, recorded_at=recent_times)
@with_examples(*({"plate": s, "lat": -33.45, "lon": -70.66, "recorded_at": None} for s in NASTY))
def test_an_accepted_cart_position_is_processable(live, plate, lat, lon, recorded_at):
    body = {"patente": plate, "lat": lat, "lon": lon} | ({"hora": recorded_at} if recorded_at else {})
    position_in = validated(r.CartPositionIn, body)
    if position_in is None:
        return
    position = r.cart_position(
        position_in, r.request_id(fresh_key(), "/v1/locations", position_in, position_in.plate), r.now_utc()
    )
    partition = t.position_partition(position.plate, t.LOCATIONS.partitions)
    alerts = [alert_id(position.id, kind) for kind in ("jump", "out_of_area", "unregistered_cart")]
    try:
        assert live.process(Outgoing.of(position, live.topic, position.plate, partition)) == position
        shown(board.render(live.service.view.snapshot(), ZoneInfo(get_settings().guild_timezone)))
    finally:
        live.delete([], alerts)
