"""Late sales correct their days by themselves (issue 15, part 1), with real sales_daily runs.

A cart syncs its offline batch after its day's report was written: the batch reaches the
topic, the next day's ordinary run drains it, finds the day it touched (touched_days) and
reports that day again in the mapped task group `report_day`, beside its own day. The days
are this module's own (March and February 2025, Santiago summer time, far from the other
DAG tests' days), as are its members, plates and sales.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest

from gremio import db
from gremio.report_files import spanish_moment
from gremio.settings import get_settings
from tests.dags.test_sales_daily import at, produce_sales, sale
from tests.support import task_result

MEMBERS = [
    ("55555555-5", "Olga", "Rivas", "LTSR01"),
    ("66666666-6", "Tomás", "Vera", "LTSR02"),
]
PLATES = [m[3] for m in MEMBERS]
APPROVED = at(date(2024, 12, 1), 9)
FIRST, LAST = date(2025, 2, 1), date(2025, 3, 31)  # every day this module reports

DAG_SETTINGS = {"SALES_DAILY_START_DATE": "2024-12-01"}
HEADER = "day,rut,name,plate,sales_count,units_sold,clients,avg_units_per_client,frequent_clients\n"


def cleanup() -> None:
    with db.connect() as conn:
        conn.execute("delete from members where plate = any(%s)", (PLATES,))
        conn.execute("delete from sales where plate = any(%s)", (PLATES,))
        conn.execute("delete from daily_master_stats where day between %s and %s", (FIRST, LAST))
        conn.execute("delete from daily_sales_totals where day between %s and %s", (FIRST, LAST))
    day = FIRST
    while day <= LAST:
        for ext in ("txt", "csv", "json", "png"):
            report(day, ext).unlink(missing_ok=True)
        day += timedelta(days=1)


@pytest.fixture(scope="module")
def dag(load_dag):
    cleanup()
    with db.connect() as conn:
        for rut, first, last, plate in MEMBERS:
            conn.execute(
                "insert into members (rut, first_name, last_name, email, plate, approved_at)"
                " values (%s, %s, %s, %s, %s, %s)",
                (rut, first, last, f"{first.lower()}@example.cl", plate, APPROVED),
            )
    yield load_dag("sales_daily")
    cleanup()


def run_day(dag, day: date, success: bool = True, **kwargs):
    """One real run whose data interval is the scheduled one for `day`: the day's ordinary run."""
    from airflow.utils.state import DagRunState

    run = dag.test(logical_date=at(day + timedelta(days=1), 0, 16), **kwargs)
    if success:
        assert run.state == DagRunState.SUCCESS, f"the run for {day} ended {run.state}"
    return run


def report(day: date, ext: str):
    return get_settings().reports_dir / "daily" / f"{day.isoformat()}.{ext}"


def report_bytes(day: date) -> dict[str, bytes]:
    return {ext: report(day, ext).read_bytes() for ext in ("txt", "csv", "json", "png")}


def csv_text(day: date) -> str:
    return report(day, "csv").read_text(encoding="utf-8")


def touched(run) -> list[str]:
    return task_result("sales_daily", run.run_id, "touched_days")


def mapped(run) -> dict[tuple[str, int], tuple[str, str | None]]:
    """(task id, map index) → (state, the name the UI shows for that index) of the run's tasks."""
    return {(ti.task_id, ti.map_index): (ti.state, ti.rendered_map_index) for ti in run.get_task_instances()}


def test_a_late_batch_for_yesterday_is_in_its_report_after_the_next_ordinary_run(dag, load_dag):
    from airflow.utils.state import TaskInstanceState

    yesterday, today = date(2025, 3, 3), date(2025, 3, 4)
    on_time = [
        sale("LTSR01", "ana", 2, at(yesterday, 10)),
        sale("LTSR01", "ana", 1, at(yesterday, 11)),
        sale("LTSR01", "beto", 3, at(yesterday, 12)),
        sale("LTSR02", "carla", 1, at(yesterday, 13)),
    ]
    produce_sales(on_time)
    run_day(dag, yesterday)
    assert csv_text(yesterday) == (
        HEADER
        + "2025-03-03,55555555-5,Olga Rivas,LTSR01,3,6,2,3.00,ana:2\n"
        + "2025-03-03,66666666-6,Tomás Vera,LTSR02,1,1,1,1.00,\n"
    )
    assert "revision" not in json.loads(report(yesterday, "json").read_bytes())
    assert "REVISADO" not in report(yesterday, "txt").read_text(encoding="utf-8")

    # The cart that was offline syncs in the morning: three of yesterday's sales (and a copy of
    # one already stored, which is not a late sale), with today's.
    late = [
        sale("LTSR02", "carla", 4, at(yesterday, 18)),
        sale("LTSR02", "dora", 2, at(yesterday, 19)),
        sale("LTSR01", "beto", 1, at(yesterday, 23, 50)),
    ]
    produce_sales([*late, on_time[0], sale("LTSR01", "ana", 5, at(today, 9))])
    began = datetime.now().astimezone()
    run = run_day(dag, today)
    ended = datetime.now().astimezone()

    assert touched(run) == [yesterday.isoformat(), today.isoformat()]
    tasks = mapped(run)
    for task_id in ("compute_stats", "check_master_numbers", "check_nothing_negative", "check_day_totals"):
        for index, day in enumerate((yesterday, today)):
            assert tasks[(f"report_day.{task_id}", index)] == (TaskInstanceState.SUCCESS, day.isoformat())
    assert tasks[("report_day.write_reports", 0)] == (TaskInstanceState.SUCCESS, yesterday.isoformat())

    assert csv_text(yesterday) == (
        HEADER
        + "2025-03-03,55555555-5,Olga Rivas,LTSR01,4,7,2,3.50,beto:2;ana:2\n"
        + "2025-03-03,66666666-6,Tomás Vera,LTSR02,3,7,2,3.50,carla:2\n"
    )
    revision = json.loads(report(yesterday, "json").read_bytes())["revision"]
    assert revision["late_sales"] == 3, "the duplicate is not a late sale"
    revised_at = datetime.fromisoformat(revision["revised_at"])
    assert began.replace(microsecond=0) <= revised_at <= ended
    assert revised_at.utcoffset() == timedelta(hours=-3)  # the guild's time
    assert datetime.fromisoformat(revision["first_reported_at"]) < began
    text = report(yesterday, "txt").read_text(encoding="utf-8")
    assert text.splitlines()[2] == (
        f"REVISADO el {spanish_moment(revised_at, get_settings().guild_timezone)}: "
        "3 ventas de este día llegaron después del primer informe y ya están incluidas."
    )
    assert "Ventas: 7 · Unidades: 14" in text
    assert "revision" not in json.loads(report(today, "json").read_bytes())

    # Nothing new: the next run touches no past day, and yesterday's files keep their bytes,
    # its revision note included, also when staff re-make it by hand.
    revised = report_bytes(yesterday)
    assert touched(run_day(dag, today)) == [today.isoformat()]
    assert report_bytes(yesterday) == revised
    from airflow.utils.state import DagRunState

    # On a fresh copy of the DAG, as in test_sales_daily: an in-process run keeps its conf in the Params.
    again = load_dag("sales_daily").test(
        logical_date=at(date(2025, 4, 20), 12), run_conf={"day": yesterday.isoformat()}
    )
    assert again.state == DagRunState.SUCCESS
    assert touched(again) == [yesterday.isoformat()]
    assert report_bytes(yesterday) == revised


def test_a_day_older_than_sales_max_age_days_is_not_recomputed(dag):
    """The look-back is the oldest sale the API accepts: the run's day minus SALES_MAX_AGE_DAYS."""
    day = date(2025, 3, 22)
    max_age = get_settings().sales_max_age_days
    oldest, too_old = day - timedelta(days=max_age), day - timedelta(days=max_age + 1)
    produce_sales([sale("LTSR01", "ana", 1, at(d, 10)) for d in (too_old, oldest)])
    for d in (too_old, oldest):
        run_day(dag, d)
    before = report_bytes(too_old)

    produce_sales([sale("LTSR01", "eva", 2, at(d, 15)) for d in (too_old, oldest)])
    run = run_day(dag, day)

    assert touched(run) == [oldest.isoformat(), day.isoformat()]
    assert f"{oldest.isoformat()},55555555-5,Olga Rivas,LTSR01,2,3,2," in csv_text(oldest)
    assert report_bytes(too_old) == before
    assert f"{too_old.isoformat()},55555555-5,Olga Rivas,LTSR01,1,1,1," in csv_text(too_old)


def test_a_seeded_inconsistency_in_a_touched_day_fails_that_day_and_leaves_its_files(dag, capfd, caplog):
    """The late day's stored numbers for Tomás (LTSR02) are one unit more than its sales (a
    trigger): that day's checks fail, naming the day, the check and the cart, and its files stay
    as they were; the run's own day is still reported. Once fixed, the next run corrects it."""
    from airflow.utils.state import DagRunState, TaskInstanceState

    late_day, today = date(2025, 2, 10), date(2025, 2, 11)
    produce_sales([sale("LTSR01", "ana", 2, at(late_day, 10)), sale("LTSR02", "bo", 3, at(late_day, 11))])
    run_day(dag, late_day)
    before = report_bytes(late_day)
    produce_sales([sale("LTSR01", "ana", 4, at(late_day, 20)), sale("LTSR02", "bo", 1, at(today, 9))])
    with db.connect() as conn:
        conn.execute(
            "create function corrupt_late_stats() returns trigger language plpgsql as $$ begin"
            " if new.plate = 'LTSR02' and new.day = date '2025-02-10' then"
            " new.units_sold := new.units_sold + 1; end if; return new; end $$"
        )
        conn.execute(
            "create trigger corrupt_late_stats before insert on daily_master_stats"
            " for each row execute function corrupt_late_stats()"
        )
    try:
        run = run_day(dag, today, success=False)
    finally:
        with db.connect() as conn:
            conn.execute("drop trigger if exists corrupt_late_stats on daily_master_stats")
            conn.execute("drop function if exists corrupt_late_stats()")

    assert run.state == DagRunState.FAILED
    assert touched(run) == [late_day.isoformat(), today.isoformat()]
    states = {key: state for key, (state, _) in mapped(run).items()}
    assert states[("report_day.compute_stats", 0)] == TaskInstanceState.SUCCESS
    assert states[("report_day.check_master_numbers", 0)] == TaskInstanceState.FAILED
    assert states[("report_day.check_day_totals", 0)] == TaskInstanceState.FAILED
    assert states[("report_day.write_reports", 0)] == TaskInstanceState.UPSTREAM_FAILED
    for task_id in ("compute_stats", "check_master_numbers", "check_day_totals", "write_reports"):
        assert states[(f"report_day.{task_id}", 1)] == TaskInstanceState.SUCCESS, task_id
    out, err = capfd.readouterr()
    logged = "\n".join([out, err, caplog.text])
    assert (
        "sales_daily 2025-02-10: check before publishing failed; the published files were left as they were.\n"
        "units_sold_match_sales: failed for cart LTSR02 (has_name=True, sales_count=1, sales_count_in_sales=1,"
        " units_sold=4, units_sold_in_sales=3)\n"
    ) in logged
    assert report_bytes(late_day) == before, "the late day's files were left as they were"
    assert "2025-02-11,66666666-6,Tomás Vera,LTSR02,1,1,1,1.00," in csv_text(today)

    # Fixed: the late sale is still unreported, so the next ordinary run corrects the day.
    run = run_day(dag, today)
    assert touched(run) == [late_day.isoformat(), today.isoformat()]
    assert "2025-02-10,55555555-5,Olga Rivas,LTSR01,2,6,1,6.00,ana:2" in csv_text(late_day)
    assert json.loads(report(late_day, "json").read_bytes())["revision"]["late_sales"] == 1
    assert "1 venta de este día llegó después del primer informe y ya está incluida." in report(
        late_day, "txt"
    ).read_text(encoding="utf-8")
