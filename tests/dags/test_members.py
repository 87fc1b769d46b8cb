"""members_monthly and members_premium, run for real with dag.test(): Kafka → drain → decide → list.

The hand-built month is February 2025 in Santiago (summer time, UTC-3), far from the dates
other tests use. Its RUTs (bodies 17.700.0xx) and plates (GRTP..) are this module's own, as
are the premium path's (bodies 17.710.0xx, plates GRTZ..), and all are removed afterwards.
Other tests of the session may leave applications of their own on `members` (received
today): the premium runs here decide them too, which is what a run is for.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from stdnum.cl import rut as stdnum_rut

from gremio import cli, db, membership
from gremio import kafka as gk
from gremio import topics as t
from gremio.records import MemberApplication, now_utc
from gremio.settings import get_settings
from tests.support import TopicProbe, task_result

SCL = ZoneInfo("America/Santiago")
DAG_SETTINGS = {"MEMBERS_MONTHLY_START_DATE": "2024-12-01"}


def rut(body: int) -> str:
    return f"{body}-{stdnum_rut.calc_check_digit(str(body))}"


def at(month: int, day: int, hour: int = 12, minute: int = 0, second: int = 0, year: int = 2025) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=SCL)


def application(
    body: int, name: str, plate: str, received_at: datetime, premium: bool = False
) -> MemberApplication:
    first, last = name.split(" ", 1)
    return MemberApplication(
        id=uuid.uuid4(),
        first_name=first,
        last_name=last,
        rut=rut(body),
        email=f"{first.lower()}.{body}@example.cl",
        plate=plate,
        premium=premium,
        received_at=received_at,
    )


def produce(apps: list[MemberApplication]) -> None:
    """As the API does: key RUT, premium on p1, regular on p0."""
    gk.produce_all(
        gk.producer(),
        [
            (t.MEMBERS.name, a.rut.encode(), a.to_bytes(), [("type", b"MemberApplication")], t.member_partition(a.premium))
            for a in apps
        ],
    )  # fmt: skip


def statuses(apps: list[MemberApplication]) -> dict[str, tuple[str, str | None]]:
    """name → (status, reason) as recorded, for these applications."""
    with db.connect() as conn:
        rows = conn.execute(
            "select id, status, reason from member_applications where id = any(%s)", ([a.id for a in apps],)
        ).fetchall()
    found = {row[0]: (row[1], row[2]) for row in rows}
    return {f"{a.first_name} {a.plate}": found.get(a.id, ("not drained", None)) for a in apps}


def cleanup() -> None:
    with db.connect() as conn:
        conn.execute("delete from members where plate like 'GRT%' or rut like '1770%'")
        conn.execute("delete from member_applications where plate like 'GRT%' or rut like '1770%'")
        conn.execute("delete from member_applications where rut like '1771%'")
        conn.execute("delete from background_flags where rut like '1770%' or rut like '1771%'")


@pytest.fixture(scope="module")
def monthly(load_dag):
    dag = load_dag("members_monthly")
    assert dag.start_date == at(12, 1, 0, year=2024)
    return dag


@pytest.fixture(scope="module")
def premium(load_dag):
    return load_dag("members_premium")


def run_month(dag, year: int, month: int):
    """One real run whose data interval is the scheduled one for the month (logical date 1st 00:01 next)."""
    from airflow.utils.state import DagRunState

    following = (year + month // 12, month % 12 + 1)
    run = dag.test(logical_date=at(following[1], 1, 0, 1, year=following[0]))
    assert run.state == DagRunState.SUCCESS
    return run


def run_premium(dag, **kwargs):
    from airflow.utils.state import DagRunState

    run = dag.test(**kwargs)
    assert run.state == DagRunState.SUCCESS
    return run


def report(month: str, ext: str) -> Path:
    return get_settings().reports_dir / "members" / f"{month}.{ext}"


# --- February 2025, by hand ---------------------------------------------------------------------

MEMBER, FLAGGED = rut(17700001), rut(17700002)

REGULAR = [
    application(17700011, "Ana Rojas", "GRTP11", at(2, 3, 10)),
    application(17700001, "Beto Soto", "GRTP12", at(2, 4, 11)),  # already a member
    application(17700013, "Carla Díaz", "GRTP01", at(2, 5, 12)),  # the member's plate
    application(17700002, "Diego Fuentes", "GRTP14", at(2, 6, 9)),  # flagged
    application(17700011, "Ana Rojas", "GRTP15", at(2, 10, 16)),  # Ana again: a duplicate
    application(17700016, "Elena Muñoz", "GRTP01", at(2, 11, 8)),  # a plate not hers...
    application(17700016, "Elena Muñoz", "GRTP17", at(2, 12, 8)),  # ...then her own: approved
    application(17700018, "Felipe Araya", "GRTP18", at(2, 13, 10)),  # his January one is pending
    application(17700019, "Gloria Tapia", "GRTP19", at(2, 1, 0)),  # the month's first instant
    application(17700020, "Hugo Reyes", "GRTP20", at(2, 28, 23, 59, 30)),  # 2025-03-01 02:59 UTC
    application(17700021, "Irene Castro", "GRTP21", at(2, 3, 9)),  # regular; her premium comes later
]
OUTSIDE = [
    # January, premium, and left pending by the fast-track: not the monthly run's to decide.
    application(17700018, "Felipe Araya", "GRTP22", at(1, 31, 23, 59, 59), premium=True),
    application(17700023, "Julia Silva", "GRTP23", at(3, 1, 0, 0, 0)),  # March
]
# The fast-track, as it ran in February: (application, when it decided it).
FAST_TRACK = [
    (application(17700033, "Laura Vega", "GRTP33", at(1, 31, 23, 59, 50), True), at(2, 1, 0, 0, 20)),
    (application(17700031, "Kevin Torres", "GRTP31", at(2, 5, 15), True), at(2, 5, 15, 0, 20)),
    (application(17700021, "Irene Castro", "GRTP32", at(2, 8, 10), True), at(2, 8, 10, 0, 15)),
    (application(17700035, "Nora Paz", "GRTP35", at(2, 28, 23, 59, 55), True), at(3, 1, 0, 0, 10)),
]
UNDECIDED_PREMIUM = application(17700034, "Mario Leal", "GRTP34", at(2, 20, 18), True)

EXPECTED = {
    "Ana GRTP11": ("approved", None),
    "Beto GRTP12": ("rejected", "RUT is already a member"),
    "Carla GRTP01": ("rejected", "plate belongs to another member"),
    "Diego GRTP14": ("rejected", "RUT is flagged in background_flags (antecedentes)"),
    "Ana GRTP15": ("rejected", "RUT is already a member"),
    "Elena GRTP01": ("rejected", "plate belongs to another member"),
    "Elena GRTP17": ("approved", None),
    "Felipe GRTP18": ("rejected", "an earlier pending application has the same RUT"),
    "Gloria GRTP19": ("approved", None),
    "Hugo GRTP20": ("approved", None),
    "Irene GRTP21": ("approved", None),
}


def csv_line(a: MemberApplication, status: str, reason: str = "") -> str:
    received = a.received_at.astimezone(SCL).isoformat()
    name = f"{a.first_name} {a.last_name}"
    return f"2025-02,{status},{str(a.premium).lower()},{a.rut},{name},{a.plate},{received},{reason},{a.id}"


def expected_csv() -> str:
    r, f = REGULAR, [a for a, _ in FAST_TRACK]
    lines = [
        "month,status,premium,rut,name,plate,received_at,reason,application_id",
        # approved, in received order
        csv_line(f[0], "approved"),  # Laura: received in January, decided in February
        csv_line(r[8], "approved"),
        csv_line(r[10], "approved"),
        csv_line(r[0], "approved"),
        csv_line(f[1], "approved"),
        csv_line(r[6], "approved"),
        csv_line(r[9], "approved"),
        # rejected, in received order
        csv_line(r[1], "rejected", "RUT is already a member"),
        csv_line(r[2], "rejected", "plate belongs to another member"),
        csv_line(r[3], "rejected", "RUT is flagged in background_flags (antecedentes)"),
        csv_line(f[2], "rejected", "an earlier pending application has the same RUT"),
        csv_line(r[4], "rejected", "RUT is already a member"),
        csv_line(r[5], "rejected", "plate belongs to another member"),
        csv_line(r[7], "rejected", "an earlier pending application has the same RUT"),
    ]
    return "\n".join(lines) + "\n"


EXPECTED_TXT = """\
GREMIO DE SOPAIPILLEROS · Nuevos socios del mes
Febrero de 2025 (solicitudes decididas, hora de Santiago)

Nuevos socios: 7 (2 premium) · Rechazadas: 7 · Solicitudes decididas: 14

NUEVOS SOCIOS
Socio         RUT         Patente  Vía        Solicitud
────────────  ──────────  ───────  ─────────  ────────────────
Laura Vega    17700033-7  GRTP33   premium ★  31-01-2025 23:59
Gloria Tapia  17700019-1  GRTP19   regular    01-02-2025 00:00
Irene Castro  17700021-3  GRTP21   regular    03-02-2025 09:00
Ana Rojas     17700011-6  GRTP11   regular    03-02-2025 10:00
Kevin Torres  17700031-0  GRTP31   premium ★  05-02-2025 15:00
Elena Muñoz   17700016-7  GRTP17   regular    12-02-2025 08:00
Hugo Reyes    17700020-5  GRTP20   regular    28-02-2025 23:59

SOLICITUDES RECHAZADAS
Postulante     RUT         Patente  Vía        Solicitud         Motivo
─────────────  ──────────  ───────  ─────────  ────────────────  ────────────────────────────────────────────────────────
Beto Soto      17700001-9  GRTP12   regular    04-02-2025 11:00  el RUT ya es socio del gremio
Carla Díaz     17700013-2  GRTP01   regular    05-02-2025 12:00  la patente es de otro socio
Diego Fuentes  17700002-7  GRTP14   regular    06-02-2025 09:00  antecedentes
Irene Castro   17700021-3  GRTP32   premium ★  08-02-2025 10:00  ya hay una solicitud anterior pendiente con el mismo RUT
Ana Rojas      17700011-6  GRTP15   regular    10-02-2025 16:00  el RUT ya es socio del gremio
Elena Muñoz    17700016-7  GRTP01   regular    11-02-2025 08:00  la patente es de otro socio
Felipe Araya   17700018-3  GRTP18   regular    13-02-2025 10:00  ya hay una solicitud anterior pendiente con el mismo RUT

★ premium: decidida por la vía rápida en menos de un minuto; aparece en el mes en que se decidió.
Regular: decidida en la revisión mensual de las solicitudes recibidas en el mes.
Una solicitud se rechaza si el RUT ya es socio, si la patente es de otro socio, por antecedentes,
o si ya hay una solicitud anterior pendiente con el mismo RUT.
"""


@pytest.fixture(scope="module")
def february(monthly, premium):
    """February's applications on Kafka and in the tables, the fast-track's decisions made back then."""
    cleanup()
    with db.connect() as conn:
        conn.execute(
            "insert into members (rut, first_name, last_name, email, plate, approved_at)"
            " values (%s, 'Olga', 'Bravo', 'olga@example.cl', 'GRTP01', %s)",
            (MEMBER, at(12, 1, 9, year=2024)),
        )
    assert cli.main(["flag", "17.700.002-7", "--reason", "deuda con el gremio"]) == 0
    produce([*REGULAR, *OUTSIDE, *(a for a, _ in FAST_TRACK), UNDECIDED_PREMIUM])
    # The premium DAG's drain alone brings both partitions into the table...
    run_premium(premium, mark_success_pattern="decide_premium")
    # ...and the fast-track decides each premium application when it did in February.
    with db.connect() as conn:
        for app, decided_at in FAST_TRACK:
            membership.decide_pending(
                conn,
                premium=True,
                received_from=app.received_at,
                received_until=app.received_at + timedelta(microseconds=1),
                decided_at=decided_at,
                decided_by="members_premium/february",
            )
    yield
    cleanup()


def test_the_month_is_decided_by_the_rules_with_a_reason_for_every_rejection(monthly, february):
    run = run_month(monthly, 2025, 2)

    assert statuses(REGULAR) == EXPECTED
    assert statuses(OUTSIDE) == {"Felipe GRTP22": ("pending", None), "Julia GRTP23": ("pending", None)}
    assert statuses([UNDECIDED_PREMIUM]) == {"Mario GRTP34": ("pending", None)}, "premium is not the month's"
    assert statuses([a for a, _ in FAST_TRACK]) == {
        "Laura GRTP33": ("approved", None),
        "Kevin GRTP31": ("approved", None),
        "Irene GRTP32": ("rejected", "an earlier pending application has the same RUT"),
        "Nora GRTP35": ("approved", None),
    }
    with db.connect() as conn:
        members = conn.execute(
            "select m.rut, m.plate, m.premium, m.approved_at = a.decided_at, a.decided_by"
            " from members m join member_applications a on a.id = m.application_id"
            " where m.rut like '1770%%' order by m.plate"
        ).fetchall()
    assert [m[:4] for m in members] == [
        (rut(17700011), "GRTP11", False, True),
        (rut(17700016), "GRTP17", False, True),
        (rut(17700019), "GRTP19", False, True),
        (rut(17700020), "GRTP20", False, True),
        (rut(17700021), "GRTP21", False, True),
        (rut(17700031), "GRTP31", True, True),
        (rut(17700033), "GRTP33", True, True),
        (rut(17700035), "GRTP35", True, True),
    ]
    assert {m[4] for m in members if not m[2]} == {f"members_monthly/{run.run_id}"}


def test_the_monthly_list_is_exactly_the_expected_one(monthly, february):
    run_month(monthly, 2025, 2)
    assert report("2025-02", "csv").read_text(encoding="utf-8") == expected_csv()
    assert report("2025-02", "txt").read_text(encoding="utf-8") == EXPECTED_TXT


def test_rerunning_the_month_decides_nothing_again_and_rewrites_the_same_bytes(monthly, february, load_dag):
    from airflow.utils.state import DagRunState

    run_month(monthly, 2025, 2)
    first = {ext: report("2025-02", ext).read_bytes() for ext in ("txt", "csv")}
    with db.connect() as conn:
        decided = conn.execute(
            "select id, status, decided_at, decided_by from member_applications where rut like '1770%' order by id"
        ).fetchall()
    run_month(monthly, 2025, 2)
    # As staff would from the UI: a manual run told which month (on a fresh copy of the DAG,
    # since an in-process task run writes the run's conf into the DAG's Param objects).
    run = load_dag("members_monthly").test(logical_date=at(6, 15, 12), run_conf={"month": "2025-02"})
    assert run.state == DagRunState.SUCCESS
    assert {ext: report("2025-02", ext).read_bytes() for ext in ("txt", "csv")} == first
    with db.connect() as conn:
        again = conn.execute(
            "select id, status, decided_at, decided_by from member_applications where rut like '1770%' order by id"
        ).fetchall()
    assert again == decided


def test_new_members_are_registered_carts_for_the_location_service(monthly, february):
    from consumers.locations.store import LiveStore

    run_month(monthly, 2025, 2)
    store = LiveStore(get_settings())
    try:
        registered = store.members()
    finally:
        store.close()
    assert registered["GRTP11"] == "Ana Rojas"
    assert registered["GRTP31"] == "Kevin Torres"
    assert "GRTP12" not in registered and "GRTP18" not in registered


def test_the_commands_list_applications_and_members(monthly, february, capsys):
    run_month(monthly, 2025, 2)
    capsys.readouterr()
    assert cli.main(["applications", "--month", "2025-02", "--status", "rejected"]) == 0
    listed = capsys.readouterr().out
    assert "Felipe Araya" in listed and "an earlier pending application has the same RUT" in listed
    assert "Gloria Tapia" not in listed and "Julia Silva" not in listed
    assert cli.main(["members"]) == 0
    assert "Hugo Reyes" in capsys.readouterr().out
    assert cli.main(["flag", "17700002-7", "--remove"]) == 0
    assert "flag lifted" in capsys.readouterr().out
    assert cli.main(["flag", "17700002-0", "--reason", "x"]) == 2, "a wrong check digit"


def test_a_rejection_without_a_reason_fails_the_list_check_and_leaves_the_files(
    monthly, february, capfd, caplog
):
    """A rejected application of February recorded with a blank reason (decided before, so the run
    does not touch it): the list check names it, and February's files stay as they were."""
    from airflow.utils.state import DagRunState, TaskInstanceState

    run_month(monthly, 2025, 2)
    before = {ext: report("2025-02", ext).read_bytes() for ext in ("csv", "txt")}
    blank = application(17700041, "Pia Blanco", "GRTP41", at(2, 14, 10))
    with db.connect() as conn:
        conn.execute(
            "insert into member_applications (id, first_name, last_name, rut, email, plate, premium,"
            " received_at, status, reason, decided_at, decided_by)"
            " values (%s, %s, %s, %s, %s, %s, false, %s, 'rejected', ' ', %s, 'test')",
            (blank.id, blank.first_name, blank.last_name, blank.rut, blank.email, blank.plate,
             blank.received_at, at(3, 1, 0, 5)),
        )  # fmt: skip
    try:
        run = monthly.test(logical_date=at(3, 1, 0, 1))
    finally:
        with db.connect() as conn:
            conn.execute("delete from member_applications where id = %s", (blank.id,))

    assert run.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["check_list"] == TaskInstanceState.FAILED
    assert states["write_reports"] == TaskInstanceState.UPSTREAM_FAILED
    out, err = capfd.readouterr()
    logged = "\n".join([out, err, caplog.text])
    assert (
        "members_monthly 2025-02: check before publishing failed; the published files were left as they were.\n"
        f"rejection_has_reason: failed for application {blank.id} (status=rejected, times_listed=1,"
        " decided_in_month=True, has_reason=False)"
    ) in logged
    assert blank.rut not in logged and "Pia" not in logged
    assert {ext: report("2025-02", ext).read_bytes() for ext in ("csv", "txt")} == before
    run_month(monthly, 2025, 2)
    assert report("2025-02", "csv").read_text(encoding="utf-8") == expected_csv()


# --- the premium fast-track --------------------------------------------------------------------------


@pytest.fixture
def fast_lane(premium):
    """Applications received just now: premium ones on p1, regular ones on p0."""
    now = now_utc()
    apps = {
        "zoe": application(17710001, "Zoe Fast", "GRTZ01", now - timedelta(seconds=50), premium=True),
        "flagged": application(17710002, "Yuri Flag", "GRTZ02", now - timedelta(seconds=40), premium=True),
        "waiting": application(17710003, "Xime Wait", "GRTZ03", now - timedelta(seconds=30)),
        "eager": application(17710003, "Xime Wait", "GRTZ04", now - timedelta(seconds=20), premium=True),
        "regular": application(17710005, "Walter Slow", "GRTZ05", now - timedelta(seconds=10)),
    }
    with db.connect() as conn:
        conn.execute(
            "insert into background_flags (rut, reason) values (%s, 'test') on conflict do nothing",
            (apps["flagged"].rut,),
        )
    produce(list(apps.values()))
    yield apps
    cleanup()


def test_the_premium_path_decides_premium_applications_and_leaves_regular_ones_for_the_month(
    premium, monthly, fast_lane
):
    run = run_premium(premium)

    assert statuses(list(fast_lane.values())) == {
        "Zoe GRTZ01": ("approved", None),
        "Yuri GRTZ02": ("rejected", "RUT is flagged in background_flags (antecedentes)"),
        "Xime GRTZ03": ("pending", None),  # regular: drained, waits for the monthly run
        "Xime GRTZ04": ("rejected", "an earlier pending application has the same RUT"),
        "Walter GRTZ05": ("pending", None),
    }
    with db.connect() as conn:
        member = conn.execute(
            "select m.premium, a.decided_by, a.kafka_partition from members m"
            " join member_applications a on a.id = m.application_id where m.plate = 'GRTZ01'"
        ).fetchone()
    assert member == (True, f"members_premium/{run.run_id}", t.MEMBERS_PREMIUM_PARTITION)

    # The monthly run for the month they were received in decides the regular ones.
    month = f"{fast_lane['regular'].received_at.astimezone(SCL):%Y-%m}"
    from airflow.utils.state import DagRunState

    run = monthly.test(run_conf={"month": month})
    assert run.state == DagRunState.SUCCESS
    after = statuses(list(fast_lane.values()))
    assert after["Xime GRTZ03"] == ("approved", None)
    assert after["Walter GRTZ05"] == ("approved", None)
    listed = report(month, "txt").read_text(encoding="utf-8")
    assert "Zoe Fast" in listed and "premium ★" in listed and "Walter Slow" in listed


def test_a_run_decides_every_pending_premium_application_and_a_rerun_or_resend_decides_nothing(
    premium, fast_lane
):
    more = [
        application(17710010 + i, f"Vale Burst{i}", f"GRTZ{10 + i}", now_utc(), premium=True)
        for i in range(3)
    ]
    produce(more)
    run_premium(premium)
    decided = statuses(list(fast_lane.values()) + more)
    assert all(decided[f"Vale GRTZ{10 + i}"] == ("approved", None) for i in range(3))

    # The simulator restarting re-sends its application with the same id: nothing new.
    produce([fast_lane["zoe"]])
    run = run_premium(premium)
    assert statuses(list(fast_lane.values()) + more) == decided
    returned = task_result("members_premium", run.run_id, "decide_premium")
    assert returned == {
        "approved": [],
        "rejected": {},
    }
    with db.connect() as conn:
        count = conn.execute(
            "select count(*) from member_applications where id = %s", (fast_lane["zoe"].id,)
        ).fetchone()
    assert count == (1,)


def drain_summary(dag_id: str, run_id: str, task_id: str) -> dict:
    return task_result(dag_id, run_id, task_id)


def test_an_application_postgresql_refuses_is_dead_lettered_and_later_ones_are_still_decided(
    premium, monthly
):
    """An application that decodes but that PostgreSQL refuses (a trigger raising 22021, as for
    a NUL byte in a name) does not stall the drains: it goes to deadletter, and a premium
    application received after it is decided by the same run."""
    from airflow.utils.state import DagRunState

    now = now_utc()
    refused_premium = application(17710060, "Refusada Rapida", "GRTZ60", now - timedelta(seconds=30), True)
    refused_regular = application(17710061, "Refusada Lenta", "GRTZ61", now - timedelta(seconds=20))
    later = application(17710062, "Lola Despues", "GRTZ62", now - timedelta(seconds=10), True)
    with db.connect() as conn:
        conn.execute(
            "create function refuse_test_application() returns trigger language plpgsql as $$ begin"
            " if new.first_name = 'Refusada' then"
            " raise exception 'refused for the test' using errcode = '22021'; end if;"
            " return new; end $$"
        )
        conn.execute(
            "create trigger refuse_test_application before insert on member_applications"
            " for each row execute function refuse_test_application()"
        )
    probe = TopicProbe([t.DEADLETTER.name])
    try:
        produce([refused_premium, refused_regular, later])
        run = run_premium(premium)
        # The monthly drain (its own group, p0 only) meets the refused regular one too.
        month = f"{now.astimezone(SCL):%Y-%m}"
        monthly_run = monthly.test(run_conf={"month": month})
        assert monthly_run.state == DagRunState.SUCCESS
    finally:
        with db.connect() as conn:
            conn.execute("drop trigger if exists refuse_test_application on member_applications")
            conn.execute("drop function if exists refuse_test_application()")
        decided = statuses([refused_premium, refused_regular, later])
        cleanup()

    assert decided == {
        "Refusada GRTZ60": ("not drained", None),
        "Refusada GRTZ61": ("not drained", None),
        "Lola GRTZ62": ("approved", None),
    }
    summary = drain_summary("members_premium", run.run_id, "drain_applications")
    assert summary["refused"] == 2 and summary["deadletters"] == {"members": {"undecodable": 0, "refused": 2}}
    monthly_summary = drain_summary("members_monthly", monthly_run.run_id, "drain_regular_applications")
    assert monthly_summary["refused"] == 1
    dead = [m for m in probe.records(t.DEADLETTER.name) if gk.header(m, t.DLQ_SOURCE_TOPIC) == "members"]
    by_value = {}
    for m in dead:
        by_value.setdefault(m.value(), []).append(m)
    assert len(by_value[refused_premium.to_bytes()]) == 1
    assert len(by_value[refused_regular.to_bytes()]) == 2, "once by each drain, each with its own offsets"
    assert later.to_bytes() not in by_value
    letter = by_value[refused_premium.to_bytes()][0]
    assert gk.header(letter, t.DLQ_SOURCE_PARTITION) == str(t.MEMBERS_PREMIUM_PARTITION)
    assert gk.header(letter, t.DLQ_ERROR).startswith("CharacterNotInRepertoire [22021]: refused for the test")
    assert gk.header(letter, "type") == "MemberApplication"


# --- the AssetWatcher's trigger, on the real broker ------------------------------------------------


def test_the_dag_is_scheduled_on_an_asset_watched_by_the_kafka_message_queue_trigger(premium):
    asset = watched_asset(premium)
    assert asset.name == "members_premium_applications"
    (watcher,) = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "airflow.providers.apache.kafka.triggers.await_message.AwaitMessageTrigger"
    assert kwargs["topics"] == ["members"]
    assert kwargs["kafka_config_id"] == "kafka_members_watch"
    assert kwargs["apply_function"] == "gremio.membership.premium_notice"
    assert kwargs["poll_interval"] == 0


def watched_asset(dag):
    (asset,) = dag.timetable.asset_condition.objects
    return asset


def _trigger(premium):
    """The trigger as the triggerer builds it: from its serialized classpath and kwargs."""
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = watched_asset(premium).watchers[0].trigger.serialize()
    return import_string(classpath)(**kwargs)


async def _next_event(trigger, timeout: float):
    events = trigger.run()
    try:
        return await asyncio.wait_for(anext(events), timeout)
    finally:
        await events.aclose()
        await trigger.cleanup()


def test_the_trigger_fires_for_a_premium_record_and_passes_over_a_regular_one(premium):
    from confluent_kafka import Consumer, TopicPartition

    probe = TopicProbe([t.MEMBERS.name])
    regular = application(17710021, "Rita Regular", "GRTZ21", now_utc())
    premium_app = application(17710022, "Pia Premium", "GRTZ22", now_utc(), premium=True)
    produce([regular, premium_app])
    where = {(m.partition(), m.offset()) for m in probe.records(t.MEMBERS.name)}
    premium_at = next(o for p, o in where if p == t.MEMBERS_PREMIUM_PARTITION)
    regular_at = next(o for p, o in where if p == t.MEMBERS_REGULAR_PARTITION)

    # The triggerer starts the trigger again after each event; so does this loop. The
    # watcher's group may first hand over premium records from earlier in the session.
    events = []
    deadline = time.monotonic() + 120
    while not any(e.payload["offset"] == premium_at for e in events if e.payload["partition"] == 1):
        assert time.monotonic() < deadline, f"no event for p1@{premium_at}; got {events}"
        events.append(asyncio.run(_next_event(_trigger(premium), timeout=60)))
    assert all(e.payload["partition"] == t.MEMBERS_PREMIUM_PARTITION for e in events)
    assert events[-1].payload == {"topic": "members", "partition": 1, "offset": premium_at}

    # The regular record is read and passed over: no event, and the watcher's group moves past it.
    with pytest.raises(TimeoutError):
        asyncio.run(_next_event(_trigger(premium), timeout=10))
    watcher = Consumer(get_settings().kafka_config(**{"group.id": "airflow-members-premium-watch"}))
    try:
        (committed,) = watcher.committed([TopicPartition(t.MEMBERS.name, 0)], timeout=30)
    finally:
        watcher.close()
    assert committed.offset > regular_at


def test_the_real_triggerer_turns_a_premium_record_into_an_asset_event_that_queues_the_dag(premium, tmp_path):
    """`airflow triggerer` against the test database and broker, as `make up` runs it."""
    import os
    import signal
    import subprocess

    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from gremio.stack import airflow as af
    from gremio.stack.system import free_port
    from tests.support import wait_for

    run_premium(premium)  # the DAG, its asset and the watcher's trigger are in Airflow's database
    with create_session() as session:
        asset_id = session.scalar(
            select(AssetModel.id).where(AssetModel.name == "members_premium_applications")
        )
        session.execute(AssetDagRunQueue.__table__.delete())

    def events() -> list[dict]:
        with create_session() as session:
            extras = session.scalars(select(AssetEvent.extra).where(AssetEvent.asset_id == asset_id)).all()
        return [e["payload"] for e in extras if e.get("from_trigger")]

    before = len(events())
    log = (tmp_path / "triggerer.log").open("wb")
    # Its log server on a free port: the default (8794) may be a running stack's.
    env = {**os.environ, "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
    triggerer = subprocess.Popen(
        [af.airflow_bin(), "triggerer"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        probe = TopicProbe([t.MEMBERS.name])
        produce([application(17710031, "Rita Regular", "GRTZ31", now_utc())])
        produce([application(17710032, "Pia Premium", "GRTZ32", now_utc(), premium=True)])
        (premium_at,) = [m.offset() for m in probe.records(t.MEMBERS.name) if m.partition() == 1]
        wait_for(
            lambda: {"topic": "members", "partition": 1, "offset": premium_at} in events(),
            timeout=180,
            interval=1,
            what=f"an asset event for members p1@{premium_at} (triggerer log: {log.name})",
        )
    finally:
        os.killpg(triggerer.pid, signal.SIGTERM)
        triggerer.wait(60)
        log.close()
    assert all(payload["partition"] == 1 for payload in events()[before:])
    with create_session() as session:
        queued = session.scalars(select(AssetDagRunQueue.target_dag_id)).all()
    assert "members_premium" in queued, "the asset event queued a members_premium run"


def test_the_documented_backfill_command_selects_whole_months(monthly, february, backfill_dry_run):
    run_month(monthly, 2025, 2)  # the DAG is in Airflow's database, as the dag-processor would put it
    # The form docs/MEMBERSHIP.md gives: a month's run has the 1st at 00:00 Santiago as its
    # logical date (03:00 UTC in summer, 04:00 in winter), so the 1st to the last day of the
    # months selects exactly them.
    assert backfill_dry_run("members_monthly", "2025-03-01", "2025-05-31") == [
        "2025-03-01 03:00:00+00:00",
        "2025-04-01 03:00:00+00:00",
        "2025-05-01 04:00:00+00:00",
    ]


# --- personal data stays out of the logs (issue 14) -------------------------------------------------


def test_no_applicant_name_rut_or_email_reaches_the_task_logs(premium, monthly, capfd, caplog):
    """Real runs of both member DAGs, one application approved, one rejected and one refused by
    PostgreSQL: whatever the tasks print or log (Airflow's task logs included) names applicants
    only by a masked RUT or the application id."""
    import logging

    from airflow.utils.state import DagRunState

    now = now_utc()
    people = [
        application(17710071, "Xiomara Quintanilla", "GRTZ71", now - timedelta(seconds=40), True),
        application(17710072, "Yolanda Quiroga", "GRTZ72", now - timedelta(seconds=30)),
        application(17710073, "Refusada Zuniga", "GRTZ73", now - timedelta(seconds=20), True),
    ]
    caplog.set_level(logging.DEBUG)
    logs_dir = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    before = {p: p.stat().st_size for p in logs_dir.rglob("*") if p.is_file()} if logs_dir.exists() else {}
    with db.connect() as conn:
        conn.execute(
            "create function refuse_test_application() returns trigger language plpgsql as $$ begin"
            " if new.first_name = 'Refusada' then raise exception 'refused: % %', new.rut, new.email"
            " using errcode = '22021'; end if; return new; end $$"
        )
        conn.execute(
            "create trigger refuse_test_application before insert on member_applications"
            " for each row execute function refuse_test_application()"
        )
    try:
        produce(people)
        run_premium(premium)
        month_run = monthly.test(run_conf={"month": f"{now.astimezone(SCL):%Y-%m}"})
        assert month_run.state == DagRunState.SUCCESS
    finally:
        with db.connect() as conn:
            conn.execute("drop trigger if exists refuse_test_application on member_applications")
            conn.execute("drop function if exists refuse_test_application()")
        decided = statuses(people)
        cleanup()
    assert decided["Xiomara GRTZ71"] == ("approved", None)
    assert decided["Yolanda GRTZ72"][0] == "approved"
    out, err = capfd.readouterr()
    task_logs = "".join(
        p.read_text(errors="replace")[before.get(p, 0) :] for p in logs_dir.rglob("*") if p.is_file()
    ) if logs_dir.exists() else ""  # fmt: skip
    text = "\n".join([out, err, caplog.text, task_logs])
    assert "application" in text  # the runs did log: the check below is not vacuous
    month = f"{now.astimezone(SCL):%Y-%m}"
    assert {report(month, ext).stat().st_mode & 0o777 for ext in ("csv", "txt")} == {0o640}
    assert report(month, "csv").parent.stat().st_mode & 0o777 == 0o750
    for person in people:
        for value in (person.first_name, person.last_name, person.rut, person.email):
            assert value not in text, f"{value!r} reached a log"


def test_a_late_regular_application_of_an_earlier_month_is_decided_by_the_next_run(load_dag, february):
    """Received in January, on the topic only after January's run had drained it: February's run
    decides it, and February's list carries it."""
    # A fresh copy: dag.test(run_conf=...) in an earlier test leaves its params on the module's.
    monthly = load_dag("members_monthly")
    late = application(17700040, "Pía Tarde", "GRTP40", at(1, 20, 9))
    produce([late])
    run = run_month(monthly, 2025, 2)
    assert statuses([late]) == {"Pía GRTP40": ("approved", None)}
    with db.connect() as conn:
        decided_by = conn.execute(
            "select decided_by from member_applications where id = %s", (late.id,)
        ).fetchone()
    assert decided_by == (f"members_monthly/{run.run_id}",)
    # On the list of the month that decided it, once, and not on the month it was received.
    assert report("2025-02", "csv").read_text(encoding="utf-8").count("GRTP40") == 1
    run_month(monthly, 2025, 1)
    assert "GRTP40" not in report("2025-01", "csv").read_text(encoding="utf-8")
    assert "GRTP40" not in report("2025-01", "txt").read_text(encoding="utf-8")


# --- the premium safety net ------------------------------------------------------------------------


def stored(app: MemberApplication) -> None:
    """As the drain leaves it: in the table, pending, with no asset event to start a run."""
    with db.connect() as conn:
        conn.execute(
            "insert into member_applications (id, first_name, last_name, rut, email, plate, premium, received_at)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                app.id,
                app.first_name,
                app.last_name,
                app.rut,
                app.email,
                app.plate,
                app.premium,
                app.received_at,
            ),
        )


def premium_pending_alerts(probe: TopicProbe) -> list[dict]:
    import json

    found = [json.loads(m.value()) for m in probe.records(t.ALERTS.name)]
    return [a for a in found if a["kind"] == "premium_pending"]


def test_a_premium_application_whose_event_run_failed_is_decided_by_a_sweep_run(premium):
    """The event-driven run failed all its retries: the application is in the table, pending."""
    app = application(17710041, "Rosa Barrida", "GRTZ41", now_utc() - timedelta(seconds=20), premium=True)
    stored(app)
    try:
        run_premium(premium)  # what the schedule's next tick starts
        assert statuses([app]) == {"Rosa GRTZ41": ("approved", None)}
    finally:
        cleanup()


def test_an_old_pending_premium_application_raises_one_alert_over_two_runs(premium):
    from airflow.utils.state import DagRunState

    old = application(17710042, "Tomás Espera", "GRTZ42", now_utc() - timedelta(seconds=120), premium=True)
    young = application(17710043, "Ursula Nueva", "GRTZ43", now_utc(), premium=True)
    stored(old)
    stored(young)
    probe = TopicProbe([t.ALERTS.name])

    def alerts_naming(app: MemberApplication) -> list[dict]:
        return [a for a in premium_pending_alerts(probe) if str(app.id) in a["detail"]]

    try:
        # The deciding step does nothing, twice (as if it had failed): both stay pending.
        for n in range(2):
            run = premium.test(mark_success_pattern="decide_premium")
            assert run.state == DagRunState.SUCCESS
            if n == 0:
                assert alerts_naming(young) == [], "pending for a few seconds: no alert yet"
        assert statuses([old, young]) == {
            "Tomás GRTZ42": ("pending", None),
            "Ursula GRTZ43": ("pending", None),
        }
        [alert] = alerts_naming(old)
        assert alert["id"] == str(
            membership.premium_pending_alert(old.id, old.rut, old.received_at, now_utc()).id
        )
        assert "RUT 17.7**.***-" in alert["detail"] and alert["plate"] is None
        assert (
            old.rut not in alert["detail"] and "Tomás" not in alert["detail"] and "@" not in alert["detail"]
        )
    finally:
        cleanup()
