"""The sales_daily DAG, run for real with dag.test(): Kafka → drain → stats → report files.

The hand-built day is 2025-01-15 in Santiago (summer time, UTC-3), far from the dates other
tests use; its members, plates and sales are this module's own and are removed afterwards.
"""

from __future__ import annotations

import threading
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gremio import db
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import Sale, client_key
from gremio.settings import get_settings
from tests.support import TopicProbe, task_result, task_tries, wait_for, waits_on_lock

SCL = ZoneInfo("America/Santiago")
D = date(2025, 1, 15)

MEMBERS = [
    # rut, first, last, plate, approved (Santiago)
    ("11111111-1", "Rosa", "Fuentes", "WXZT11", datetime(2024, 12, 1, 9, 0, tzinfo=SCL)),
    ("22222222-2", "Pedro", "Soto", "WXZT22", datetime(2024, 12, 1, 9, 0, tzinfo=SCL)),
    # Approved after D: on D her cart was not a member's, so its sales are `unregistered`.
    ("33333333-3", "Marta", "Díaz", "WXZT33", datetime(2025, 1, 20, 9, 0, tzinfo=SCL)),
    ("44444444-4", "Juan", "Pérez", "KLPR44", datetime(2024, 12, 1, 9, 0, tzinfo=SCL)),
]
PLATES = [m[3] for m in MEMBERS] + ["QQ0001"]


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SCL)


def days(n: int) -> date:
    return D + timedelta(days=n)


# (plate, client, quantity, sold_at in Santiago)
SALES = [
    # Rosa (WXZT11): one client written three ways, a tie broken by name, one too old.
    ("WXZT11", "  Ana María ", 2, at(D, 0, 5)),  # 03:05 UTC
    ("WXZT11", "ana maría", 3, at(D, 10)),
    ("WXZT11", "bruno", 1, at(D, 11)),
    ("WXZT11", "carla", 1, at(D, 12)),
    ("WXZT11", "diego", 5, at(D, 13)),
    ("WXZT11", "elena", 1, at(D, 14)),
    ("WXZT11", "ANA MARÍA", 1, at(days(-5), 10)),
    ("WXZT11", "bruno", 1, at(days(-3), 10)),
    ("WXZT11", "carla", 1, at(days(-2), 10)),
    ("WXZT11", "diego", 5, at(days(-1), 10)),
    ("WXZT11", "elena", 1, at(days(-40), 10)),  # outside the 30 days
    # Pedro (WXZT22): around midnight in Santiago, which is 03:00 UTC.
    ("WXZT22", "Zoe", 4, at(D, 23, 30)),  # 2025-01-16 02:30 UTC: still D
    ("WXZT22", "zoe", 3, at(days(-1), 23, 50)),  # 2025-01-15 02:50 UTC: the day before
    ("WXZT22", "zoe", 10, at(days(1), 0, 10)),  # 2025-01-16 03:10 UTC: the day after
    ("WXZT22", "Ximena", 2, at(D, 15)),  # produced twice below
    # No approved member on D.
    ("QQ0001", "pablo", 7, at(D, 9)),
    ("QQ0001", "Pablo", 1, at(D, 9, 30)),
    ("WXZT33", "rita", 3, at(D, 16)),
    # Juan (KLPR44): nothing on D, but a frequent client in the window.
    ("KLPR44", "luis", 1, at(days(-10), 10)),
    ("KLPR44", "Luis ", 2, at(days(-9), 10)),
]
DUPLICATED = 14  # index into SALES

EXPECTED_CSV = """\
day,rut,name,plate,sales_count,units_sold,clients,avg_units_per_client,frequent_clients
2025-01-15,11111111-1,Rosa Fuentes,WXZT11,6,13,5,2.60,ana maría:3;diego:2;bruno:2
2025-01-15,unregistered,unregistered,QQ0001;WXZT33,3,11,2,5.50,pablo:2
2025-01-15,22222222-2,Pedro Soto,WXZT22,2,6,2,3.00,zoe:2
2025-01-15,44444444-4,Juan Pérez,KLPR44,0,0,0,0.00,luis:2
"""

EXPECTED_NEXT_DAY_CSV = """\
day,rut,name,plate,sales_count,units_sold,clients,avg_units_per_client,frequent_clients
2025-01-16,22222222-2,Pedro Soto,WXZT22,1,10,1,10.00,zoe:3
2025-01-16,44444444-4,Juan Pérez,KLPR44,0,0,0,0.00,luis:2
2025-01-16,11111111-1,Rosa Fuentes,WXZT11,0,0,0,0.00,ana maría:3;diego:2;bruno:2
"""


def sale(plate: str, client: str, quantity: int, sold_at: datetime) -> Sale:
    return Sale(
        id=uuid.uuid4(),
        plate=plate,
        client=client,
        quantity=quantity,
        sold_at=sold_at,
        stock_remaining=40,
        lat=-33.44,
        lon=-70.65,
        received_at=sold_at,
    )


def produce_sales(sales: list[Sale]) -> None:
    gk.produce_all(
        gk.producer(),
        [(t.SALES.name, s.plate.encode(), s.to_bytes(), [("type", b"Sale")], None) for s in sales],
    )


def cleanup() -> None:
    with db.connect() as conn:
        conn.execute("delete from members where plate = any(%s)", (PLATES,))
        conn.execute("delete from sales where plate = any(%s)", (PLATES,))
        conn.execute("delete from daily_master_stats where day between %s and %s", (days(-1), days(3)))
        conn.execute("delete from daily_sales_totals where day between %s and %s", (days(-1), days(3)))


# The DAG told to start before the hand-built days (tests/dags/conftest.py, load_dag); moving
# SALES_DAILY_START_DATE back is also how an operator lets the DAG report older days.
DAG_SETTINGS = {"SALES_DAILY_START_DATE": "2024-12-01"}


@pytest.fixture(scope="module")
def dag(load_dag):
    """The DAG as the dag-processor sees it."""
    dag = load_dag("sales_daily")
    assert dag.start_date.date() == date(2024, 12, 1)
    return dag


@pytest.fixture(scope="module")
def hand_built_day(dag):
    """Members in the table, the day's sales (one duplicated, one poison) on the topic."""
    cleanup()
    with db.connect() as conn:
        for rut, first, last, plate, approved in MEMBERS:
            conn.execute(
                "insert into members (rut, first_name, last_name, email, plate, approved_at)"
                " values (%s, %s, %s, %s, %s, %s)",
                (rut, first, last, f"{first.lower()}@example.cl", plate, approved),
            )
    sales = [sale(*row) for row in SALES]
    probe = TopicProbe([t.DEADLETTER.name])
    produce_sales([*sales, sales[DUPLICATED]])
    poison = b'{"plate": "WXZT11", "client": "nobody", "quantity": 0}'
    gk.produce_all(gk.producer(), [(t.SALES.name, b"WXZT11", poison, [("type", b"Sale")], None)])
    yield {"sales": sales, "probe": probe, "poison": poison}
    cleanup()


def run_day(dag, day: date):
    """One real DAG run whose data interval is the scheduled one for `day` (00:15 to 00:15)."""
    from airflow.utils.state import DagRunState

    # A manual run's interval is the last complete one before its logical date; 00:16
    # keeps clear of the logical date (00:15) of the next day's scheduled run.
    run = dag.test(logical_date=at(day + timedelta(days=1), 0, 16))
    assert run.state == DagRunState.SUCCESS, f"the run for {day} ended {run.state}"
    return run


def report(day: date, ext: str) -> Path:
    return get_settings().reports_dir / "daily" / f"{day.isoformat()}.{ext}"


def report_bytes(day: date) -> dict[str, bytes]:
    return {ext: report(day, ext).read_bytes() for ext in ("txt", "csv", "json", "png")}


def test_the_hand_built_day_gives_exactly_the_expected_csv(dag, hand_built_day):
    run_day(dag, D)

    assert report(D, "csv").read_text(encoding="utf-8") == EXPECTED_CSV
    with db.connect() as conn:
        stored = conn.execute(
            "select count(*), count(distinct id) from sales where plate = any(%s)", (PLATES,)
        ).fetchone()
        rows = conn.execute(
            "select rut, units_sold, avg_units_per_client::text, frequent_clients from daily_master_stats"
            " where day = %s order by units_sold desc",
            (D,),
        ).fetchall()
    assert stored == (len(SALES), len(SALES)), "the duplicate was stored once"
    assert rows[0] == ("11111111-1", 13, "2.60", "ana maría:3;diego:2;bruno:2")
    dead = [m.value() for m in hand_built_day["probe"].records(t.DEADLETTER.name)]
    assert hand_built_day["poison"] in dead

    text = report(D, "txt").read_text(encoding="utf-8")
    assert "Miércoles 15 de enero de 2025" in text
    assert "1. Rosa Fuentes (WXZT11): 13 unidades" in text
    assert "Maestros con ventas: 2 de 3 · Ventas: 11 · Unidades: 30 · Clientes: 9" in text
    assert report(D, "png").read_bytes().startswith(b"\x89PNG")


def test_rerunning_the_day_rewrites_the_same_bytes(dag, hand_built_day, load_dag):
    from airflow.utils.state import DagRunState

    run_day(dag, D)
    first = report_bytes(D)
    run_day(dag, D)
    assert report_bytes(D) == first
    # Re-made the way staff would from the UI: a manual run told which day to report. On a
    # fresh copy of the DAG: a task run in-process writes the run's conf into the Param
    # objects it shares with the DAG (airflow.sdk process_params); workers parse afresh.
    run = load_dag("sales_daily").test(logical_date=at(days(40), 12), run_conf={"day": D.isoformat()})
    assert run.state == DagRunState.SUCCESS
    assert report_bytes(D) == first


def test_backfilling_two_days_gives_two_reports(dag, hand_built_day):
    for day in (days(1), days(2)):
        report(day, "csv").unlink(missing_ok=True)
    for day in (days(1), days(2)):
        run_day(dag, day)
    assert report(days(1), "csv").read_text(encoding="utf-8") == EXPECTED_NEXT_DAY_CSV
    quiet_day = report(days(2), "csv").read_text(encoding="utf-8").splitlines()
    assert len(quiet_day) == 4 and all(",0,0,0,0.00," in line for line in quiet_day[1:])


def test_client_key_in_sql_is_the_python_rule():
    samples = ["  Ana María ", "ÁRBOL\u00a0", "\u3000José\t", "Ñandú", "x\u2028", "İstanbul", "ß", "plain"]
    with db.connect() as conn:
        got = [conn.execute("select client_key(%s)", (s,)).fetchone()[0] for s in samples]
    assert got == [client_key(s) for s in samples]


def test_postgres_stopped_during_the_drain_fails_the_task_and_the_retry_loads_every_row_once(
    dag, hand_built_day, stack, execution_api_retries
):
    day = days(3)
    sales = [
        sale("WXZT11", f"cliente {i % 7}", 1 + i % 3, at(day, 8) + timedelta(minutes=i)) for i in range(60)
    ]
    produce_sales(sales)
    saved = {task.task_id: (task.retry_delay, task.retry_exponential_backoff) for task in dag.tasks}
    for task in dag.tasks:
        task.retry_delay, task.retry_exponential_backoff = timedelta(seconds=1), 0
    # The drain would ride out a short outage itself (tests/integration/test_drain_restart.py):
    # with no time for that, this is the path where the failure outlasts its bound.
    drain = dag.get_task("drain_sales")
    saved_transient_timeout, drain.transient_timeout = drain.transient_timeout, 0

    # Hold the drain inside its first transaction: its INSERT waits for this lock...
    blocker = db.connect(autocommit=False)
    blocker.execute("lock table sales in share mode")
    stopped = threading.Event()

    def stop_postgres_mid_drain() -> None:
        try:
            # ...and once it waits there, PostgreSQL stops under it, then comes back.
            wait_for(
                lambda: waits_on_lock("drain sales"),
                timeout=120,
                what="the drain to be inside its transaction",
            )
            stack.stop_postgres()
            stopped.set()
        finally:
            stack.start_postgres()

    fault = threading.Thread(target=stop_postgres_mid_drain, daemon=True)
    fault.start()
    try:
        run = run_day(dag, day)
    finally:
        fault.join(180)
        blocker.close()
        stack.start_postgres()
        for task in dag.tasks:
            task.retry_delay, task.retry_exponential_backoff = saved[task.task_id]
        drain.transient_timeout = saved_transient_timeout

    assert stopped.is_set(), "PostgreSQL was stopped during the drain"
    # Airflow archives a try that ended up_for_retry as failed.
    assert task_tries("sales_daily", run.run_id, "drain_sales") == [(1, "failed"), (2, "success")]
    with db.connect() as conn:
        stored = conn.execute(
            "select count(*) from sales where id = any(%s)", ([s.id for s in sales],)
        ).fetchone()
    assert stored == (60,)
    assert "2025-01-18,11111111-1,Rosa Fuentes,WXZT11,60," in report(day, "csv").read_text(encoding="utf-8")


def drain_summary(run) -> dict:
    """What the run's drain_sales returned (its XCom)."""
    return task_result("sales_daily", run.run_id, "drain_sales")


def test_a_sale_postgresql_refuses_is_dead_lettered_and_the_day_is_reported_without_it(dag, hand_built_day):
    """A sale that decodes but that PostgreSQL refuses (here a trigger raising 22021, as for a NUL
    byte) does not fail the run: it goes to deadletter with the error, the rest is reported."""
    day = days(5)
    sales = [sale("WXZT11", f"cliente {i}", 2, at(day, 9) + timedelta(minutes=i)) for i in range(8)]
    refused = sale("WXZT11", "cliente rechazado", 5, at(day, 9, 30))
    with db.connect() as conn:
        conn.execute(
            "create function refuse_test_sale() returns trigger language plpgsql as $$ begin"
            " if new.client = 'cliente rechazado' then"
            " raise exception 'refused for the test' using errcode = '22021'; end if;"
            " return new; end $$"
        )
        conn.execute(
            "create trigger refuse_test_sale before insert on sales for each row execute function refuse_test_sale()"
        )
    probe = TopicProbe([t.DEADLETTER.name])
    try:
        produce_sales([*sales[:4], refused, *sales[4:]])
        run = run_day(dag, day)
    finally:
        with db.connect() as conn:
            conn.execute("drop trigger if exists refuse_test_sale on sales")
            conn.execute("drop function if exists refuse_test_sale()")

    summary = drain_summary(run)
    assert summary["refused"] == 1
    assert summary["deadletters"]["sales"]["refused"] == 1
    assert task_tries("sales_daily", run.run_id, "drain_sales") == [(1, "success")]
    dead = [
        m for m in probe.records(t.DEADLETTER.name)
        if gk.header(m, t.DLQ_SOURCE_TOPIC) == "sales" and m.value() == refused.to_bytes()
    ]  # fmt: skip
    assert len(dead) == 1
    assert gk.header(dead[0], t.DLQ_ERROR).startswith(
        "CharacterNotInRepertoire [22021]: refused for the test"
    )
    with db.connect() as conn:
        stored = conn.execute(
            "select count(*) from sales where id = any(%s)", ([s.id for s in [*sales, refused]],)
        ).fetchone()
    assert stored == (8,)
    assert f"{day.isoformat()},11111111-1,Rosa Fuentes,WXZT11,8,16," in report(day, "csv").read_text(
        encoding="utf-8"
    )


def test_the_documented_backfill_command_selects_whole_days(dag, hand_built_day, backfill_dry_run):
    run_day(dag, D)  # the DAG is in Airflow's database, as the dag-processor would put it
    # The form docs/SALES_DAILY.md gives: the last day with a time. 00:15 in Santiago is
    # 03:15 UTC in summer: one run per day.
    assert backfill_dry_run("sales_daily", "2025-03-03", "2025-03-04T23:59") == [
        "2025-03-03 03:15:00+00:00",
        "2025-03-04 03:15:00+00:00",
    ]


# --- checks before publishing (issue 15) ----------------------------------------------------------


def test_a_seeded_inconsistency_fails_its_check_naming_the_master_and_leaves_the_files(
    dag, hand_built_day, capfd, caplog
):
    """compute_stats works the day out right, but what PostgreSQL stores for Pedro (WXZT22) is
    one unit more (a trigger on daily_master_stats): the checks catch it before any file changes,
    even though a new sale of the day would have changed every file."""
    from airflow.utils.state import DagRunState, TaskInstanceState

    run_day(dag, D)
    before = report_bytes(D)
    late = sale("WXZT11", "nuevo cliente", 4, at(D, 18))
    with db.connect() as conn:
        conn.execute(
            "insert into sales (id, plate, client, quantity, sold_at, stock_remaining, lat, lon, received_at)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (late.id, late.plate, late.client, late.quantity, late.sold_at, 40, -33.44, -70.65, late.sold_at),
        )
        conn.execute(
            "create function corrupt_test_stats() returns trigger language plpgsql as $$ begin"
            " if new.plate = 'WXZT22' then new.units_sold := new.units_sold + 1; end if;"
            " return new; end $$"
        )
        conn.execute(
            "create trigger corrupt_test_stats before insert on daily_master_stats"
            " for each row execute function corrupt_test_stats()"
        )
    try:
        run = dag.test(logical_date=at(D + timedelta(days=1), 0, 16))
    finally:
        with db.connect() as conn:
            conn.execute("drop trigger if exists corrupt_test_stats on daily_master_stats")
            conn.execute("drop function if exists corrupt_test_stats()")
            conn.execute("delete from sales where id = %s", (late.id,))

    assert run.state == DagRunState.FAILED
    # The run reports D alone (no late sales touched an earlier day): map index 0 of report_day.
    assert task_result("sales_daily", run.run_id, "touched_days") == [D.isoformat()]
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["report_day.compute_stats"] == TaskInstanceState.SUCCESS
    assert states["report_day.check_master_numbers"] == TaskInstanceState.FAILED
    assert states["report_day.check_day_totals"] == TaskInstanceState.FAILED
    assert states["report_day.check_nothing_negative"] == TaskInstanceState.SUCCESS
    assert states["report_day.write_reports"] == TaskInstanceState.UPSTREAM_FAILED
    # A failed check is not retried: the numbers would not change by themselves.
    assert task_tries("sales_daily", run.run_id, "report_day.check_master_numbers") == [(1, "failed")]
    out, err = capfd.readouterr()
    logged = "\n".join([out, err, caplog.text])  # dag.test() runs the tasks in-process
    failure = f"sales_daily {D.isoformat()}: check before publishing failed"
    assert (
        f"{failure}; the published files were left as they were.\nunits_sold_match_sales: failed for cart WXZT22 (has_name=True, sales_count=2, sales_count_in_sales=2, units_sold=7, units_sold_in_sales=6)\n"
        in logged
    )
    assert "failed for cart WXZT11" not in logged  # Rosa's new sale is stored right
    assert (
        "masters_add_up_to_units_sold: failed for the day's totals (sales_count=12, masters_sales_count=12, units_sold=34, masters_units_sold=35"
        in logged
    )
    assert report_bytes(D) == before, "the published files were left as they were"

    # Once the inconsistency is gone, the day passes its checks and writes the same bytes.
    run_day(dag, D)
    assert report_bytes(D) == before
    assert report(D, "csv").read_text(encoding="utf-8") == EXPECTED_CSV


def test_the_checks_day_bounds_are_the_guilds(dag):
    """The checks read the day between the bounds gremio.guild_time gives, 23 and 25-hour days too."""
    from gremio.guild_time import day_bounds

    tz = get_settings().guild_timezone
    for day in (D, date(2026, 4, 4), date(2026, 9, 6)):
        got = dag.user_defined_macros["guild_day"](at(day, 0, 15), {})
        start, end = day_bounds(day, tz)
        assert got == {
            "day": day.isoformat(),
            "day_start": start.isoformat(),
            "day_end": end.isoformat(),
            "what": f"sales_daily {day.isoformat()}",
        }
    assert dag.user_defined_macros["guild_day"](at(D, 0, 15), {"day": "2025-02-01"})["day"] == "2025-02-01"
