"""The membership rules (gremio.membership): decisions, months, the watcher's filter, the report."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gremio import membership_report
from gremio.membership import (
    Registry,
    Rejection,
    decide,
    premium_notice,
    received_order,
    spanish_reason,
    summary,
)
from gremio.records import MemberApplication

SCL = ZoneInfo("America/Santiago")
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=SCL)


def app(
    rut: str, plate: str, minutes: int = 0, premium: bool = False, n: int | None = None
) -> MemberApplication:
    """An application received `minutes` after T0; `n` fixes its id (ties are broken by id).

    Built as the rules get it from the database (`model_construct`): the rules do not
    validate, so short made-up RUTs and plates keep the cases readable."""
    ident = uuid.UUID(int=n) if n is not None else uuid.uuid4()
    return MemberApplication.model_construct(
        id=ident, first_name="Ana", last_name=f"Pérez {rut}", rut=rut, email="ana@example.cl",
        plate=plate, premium=premium, received_at=T0 + timedelta(minutes=minutes),
    )  # fmt: skip


def outcome(decisions) -> list[tuple[str, Rejection | None]]:
    return [(d.application.rut, d.rejection) for d in decisions]


def test_a_clean_application_is_approved_and_becomes_a_member_for_the_next_ones():
    registry = Registry()
    (decision,) = decide([app("1-9", "BBCL12")], registry)
    assert decision.approved and decision.status == "approved"
    assert registry.members == {"1-9": "BBCL12"}


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        (Registry(members={"1-9": "ZZZZ99"}), Rejection.ALREADY_MEMBER),
        (Registry(members={"2-7": "BBCL12"}), Rejection.PLATE_TAKEN),
        (Registry(flagged={"1-9"}), Rejection.FLAGGED),
        (Registry(pending={"1-9": {(T0 - timedelta(days=3), uuid.uuid4())}}), Rejection.EARLIER_PENDING),
    ],
    ids=["already a member", "plate taken", "flagged", "earlier pending"],
)
def test_each_rule_rejects_with_its_reason(registry, expected):
    (decision,) = decide([app("1-9", "BBCL12")], registry)
    assert decision.rejection is expected
    assert decision.status == "rejected"
    assert "1-9" not in registry.members or expected is Rejection.ALREADY_MEMBER


def test_the_rules_are_checked_in_the_designs_order():
    everything = Registry(
        members={"1-9": "ZZZZ99", "2-7": "BBCL12"},
        flagged={"1-9", "3-5", "5-1"},
        pending={rut: {(T0 - timedelta(days=1), uuid.uuid4())} for rut in ("1-9", "3-5", "5-1", "6-K")},
    )
    batch = [
        app("1-9", "BBCL12", 0),
        app("3-5", "BBCL12", 1),
        app("5-1", "XXYY11", 2),
        app("6-K", "XXYY22", 3),
    ]
    assert outcome(decide(batch, everything)) == [
        ("1-9", Rejection.ALREADY_MEMBER),
        ("3-5", Rejection.PLATE_TAKEN),
        ("5-1", Rejection.FLAGGED),
        ("6-K", Rejection.EARLIER_PENDING),
    ]


def test_a_members_own_plate_is_not_another_members():
    (decision,) = decide([app("1-9", "BBCL12")], Registry(members={"1-9": "BBCL12"}))
    assert decision.rejection is Rejection.ALREADY_MEMBER


def test_a_later_pending_application_does_not_block_an_earlier_one():
    later = {(T0 + timedelta(days=3), uuid.uuid4())}
    (decision,) = decide([app("1-9", "BBCL12")], Registry(pending={"1-9": later}))
    assert decision.approved


def test_duplicates_in_one_batch_the_first_received_wins():
    first, second = app("1-9", "BBCL12", 5), app("1-9", "CCDF34", 9)
    registry = Registry(pending={"1-9": {received_order(first), received_order(second)}})
    decisions = decide([second, first], registry)  # given out of order
    assert [d.application for d in decisions] == [first, second]
    assert outcome(decisions) == [("1-9", None), ("1-9", Rejection.ALREADY_MEMBER)]
    assert registry.pending["1-9"] == set(), "decided applications are no longer pending"


def test_a_duplicate_after_a_rejection_is_decided_on_its_own():
    taken, fixed = app("1-9", "BBCL12", 1), app("1-9", "CCDF34", 2)
    registry = Registry(
        members={"2-7": "BBCL12"}, pending={"1-9": {received_order(taken), received_order(fixed)}}
    )
    assert outcome(decide([taken, fixed], registry)) == [("1-9", Rejection.PLATE_TAKEN), ("1-9", None)]


def test_two_applicants_for_one_plate_the_first_received_gets_it():
    decisions = decide([app("3-5", "BBCL12", 2), app("1-9", "BBCL12", 1)], Registry())
    assert outcome(decisions) == [("1-9", None), ("3-5", Rejection.PLATE_TAKEN)]


def test_ties_in_received_at_are_broken_by_id():
    a, b = app("1-9", "BBCL12", 0, n=2), app("3-5", "BBCL12", 0, n=1)
    assert outcome(decide([a, b], Registry())) == [("3-5", None), ("1-9", Rejection.PLATE_TAKEN)]


def test_deciding_is_deterministic():
    batch = [app(f"{i}-{i}", f"BBCL{10 + i % 3}", i % 4, n=i) for i in range(12)]
    first = outcome(decide(batch, Registry(flagged={"5-5"})))
    again = outcome(decide(list(reversed(batch)), Registry(flagged={"5-5"})))
    assert first == again


def test_summary_names_ids_only():
    a, b = app("1-9", "BBCL12", 0, n=1), app("1-9", "CCDF34", 1, n=2)
    assert summary(decide([a, b], Registry())) == {
        "approved": [str(uuid.UUID(int=1))],
        "rejected": {str(uuid.UUID(int=2)): "RUT is already a member"},
    }


def test_reasons_in_spanish_for_the_staff():
    assert spanish_reason(str(Rejection.FLAGGED)) == "antecedentes"
    assert spanish_reason("decided by hand: fake papers") == "decided by hand: fake papers"
    assert spanish_reason(None) == ""


# --- months -------------------------------------------------------------------------------------


# --- the watcher's apply_function ---------------------------------------------------------------


class Message:
    """The three things premium_notice reads of a confluent_kafka.Message."""

    def __init__(self, partition: int, offset: int = 7, error: object = None) -> None:
        self._partition, self._offset, self._error = partition, offset, error

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "members"

    def error(self) -> object:
        return self._error


def test_premium_notice_fires_for_partition_1_only():
    assert premium_notice(Message(1, 41)) == {"topic": "members", "partition": 1, "offset": 41}
    assert premium_notice(Message(0, 41)) is None
    assert premium_notice(Message(1, 41, error="broker down")) is None


# --- the report files ------------------------------------------------------------------------------


ROWS = [
    {
        "id": uuid.UUID(int=1),
        "status": "approved",
        "premium": True,
        "rut": "12345678-5",
        "name": "Juana Pérez",
        "plate": "BBCL12",
        "received_at": datetime(2026, 11, 3, 12, 30, 15, tzinfo=UTC),
        "reason": None,
    },
    {
        "id": uuid.UUID(int=2),
        "status": "rejected",
        "premium": False,
        "rut": "7654321-6",
        "name": "Luis Soto, hijo",
        "plate": "AB1234",
        "received_at": datetime(2026, 11, 30, 23, 0, tzinfo=UTC),
        "reason": "RUT is flagged in background_flags (antecedentes)",
    },
]


def test_csv_lists_decisions_in_santiago_time():
    assert membership_report.render_csv(date(2026, 11, 1), ROWS, "America/Santiago").decode() == (
        "month,status,premium,rut,name,plate,received_at,reason,application_id\n"
        "2026-11,approved,true,12345678-5,Juana Pérez,BBCL12,2026-11-03T09:30:15-03:00,,"
        "00000000-0000-0000-0000-000000000001\n"
        '2026-11,rejected,false,7654321-6,"Luis Soto, hijo",AB1234,2026-11-30T20:00:00-03:00,'
        "RUT is flagged in background_flags (antecedentes),00000000-0000-0000-0000-000000000002\n"
    )


def test_txt_is_for_people_and_says_when_a_section_is_empty():
    text = membership_report.render_txt(date(2026, 11, 1), ROWS[1:], "America/Santiago").decode()
    assert text.startswith("GREMIO DE SOPAIPILLEROS · Nuevos socios del mes\nNoviembre de 2026 ")
    assert "Nuevos socios: 0 (0 premium) · Rechazadas: 1 · Solicitudes decididas: 1" in text
    assert "Ningún socio nuevo este mes." in text
    assert "Luis Soto, hijo  7654321-6  AB1234   regular  30-11-2026 20:00  antecedentes" in text


def hostile(text: str, **changes) -> dict:
    return {**ROWS[1], "name": text, "reason": text, **changes}


@pytest.mark.parametrize(
    "text", ['=HYPERLINK("http://evil.example","x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
)
def test_members_csv_text_cells_that_could_start_a_formula_are_prefixed(text):
    import csv
    import io

    body = membership_report.render_csv(date(2026, 11, 1), [hostile(text)], "America/Santiago")
    (row,) = list(csv.reader(io.StringIO(body.decode(), newline="")))[1:]
    assert row[4] == "'" + text  # name
    assert row[7] == "'" + text  # reason
    assert row[:4] == ["2026-11", "rejected", "false", "7654321-6"]
    assert row[6] == "2026-11-30T20:00:00-03:00"
    assert body == membership_report.render_csv(date(2026, 11, 1), [hostile(text)], "America/Santiago")


def test_members_txt_shows_no_control_characters():
    text = membership_report.render_txt(
        date(2026, 11, 1), [hostile("Luis\x1b[31m\u202eSoto\r\n")], "America/Santiago"
    ).decode()
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
    assert "Luis\ufffd[31m\ufffdSoto\ufffd\ufffd" in text


# --- decide_pending's log: no personal data ---------------------------------------------------------


class FakeConn:
    """Just enough of a psycopg connection for decide_pending: the pending rows, nothing else."""

    def __init__(self, pending: list[MemberApplication]) -> None:
        self.pending = pending

    def cursor(self, row_factory=None):
        return self  # the pending rows below are already by name, as dict_row gives them

    def transaction(self):
        import contextlib

        return contextlib.nullcontext()

    def execute(self, sql: str, params=None):
        from unittest import mock

        from gremio.db import query

        result = mock.MagicMock()
        if sql == query("members_pending"):
            result.fetchall.return_value = [dict(a) for a in self.pending]
        elif sql == query("members_insert"):
            result.fetchall.return_value = [(i,) for i in params["ids"]]
        else:
            result.__iter__.return_value = iter(())
        return result


def test_decide_pending_logs_ids_lanes_outcomes_and_masked_ruts_only(caplog):
    import logging

    from gremio.membership import decide_pending

    first = app("12345678-5", "BBCL12", premium=True, n=1)
    second = app("12345678-5", "CDFG34", minutes=1, premium=True, n=2)
    with caplog.at_level(logging.INFO, logger="gremio.membership"):
        decisions = decide_pending(FakeConn([first, second]), premium=True, decided_by="test")
    assert [d.status for d in decisions] == ["approved", "rejected"]
    lines = [r.getMessage() for r in caplog.records if r.name == "gremio.membership"]
    assert lines == [
        f"application {first.id} (premium, RUT 12.3**.***-5): approved",
        f"application {second.id} (premium, RUT 12.3**.***-5): rejected: RUT is already a member",
    ]
    logged = "\n".join(lines)
    for personal in ("12345678", "Ana", "Pérez", "ana@example.cl", "BBCL12", "CDFG34"):
        assert personal not in logged
