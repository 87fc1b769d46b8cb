"""sales_daily's deadline rules (plugins/deadlines.py): when a day's report is due, and its alert.

Airflow's own handling of the deadline (the scheduler, the triggerer) is tested for real in
tests/dags/test_sales_report_late.py.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, date, datetime, time, timedelta

import pytest
from deadlines import (
    GuildReportDeadline,
    due_at,
    report_deadline_for,
    report_late_alert,
    run_day,
    written_by,
)

from gremio.settings import Settings

SCL = "America/Santiago"


@pytest.mark.parametrize(
    ("day", "due_utc"),
    [
        (date(2026, 12, 2), datetime(2026, 12, 3, 9, 0, tzinfo=UTC)),  # summer, UTC-3
        (date(2026, 4, 3), datetime(2026, 4, 4, 9, 0, tzinfo=UTC)),
        # Clocks go back at the end of 2026-04-04: the next morning's 06:00 is UTC-4.
        (date(2026, 4, 4), datetime(2026, 4, 5, 10, 0, tzinfo=UTC)),
        (date(2026, 9, 4), datetime(2026, 9, 5, 10, 0, tzinfo=UTC)),
        # Clocks jump forward at the end of 2026-09-05: the 23-hour night, 06:00 is UTC-3 again.
        (date(2026, 9, 5), datetime(2026, 9, 6, 9, 0, tzinfo=UTC)),
    ],
)
def test_a_day_is_due_at_six_the_next_morning_in_santiago_whatever_the_clocks_do(day, due_utc):
    assert due_at(day, time(6, 0), SCL) == due_utc


def test_a_run_made_before_the_hour_is_due_at_the_hour_and_one_made_later_gets_its_grace():
    day, grace = date(2026, 12, 2), timedelta(minutes=60)
    due = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    scheduled = datetime(2026, 12, 3, 3, 15, tzinfo=UTC)  # 00:15 in Santiago, as every night
    assert report_deadline_for(day, scheduled, time(6, 0), SCL, grace) == due
    # A fresh `make up` at 14:00 catching up on the 2nd, or a scheduler that was down at 00:15.
    caught_up = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
    assert report_deadline_for(day, caught_up, time(6, 0), SCL, grace) == caught_up + grace
    # Late enough that the grace would end after the hour: the hour still counts.
    late_start = due - timedelta(minutes=30)
    assert report_deadline_for(day, late_start, time(6, 0), SCL, grace) == late_start + grace


def test_the_reference_survives_airflows_serialization_with_its_class_path():
    from airflow.serialization.decoders import decode_deadline_reference
    from airflow.serialization.encoders import encode_deadline_reference

    ref = GuildReportDeadline(at="06:30:00", timezone=SCL, grace_seconds=900.0)
    encoded = encode_deadline_reference(ref)
    assert encoded == {
        "reference_type": "GuildReportDeadline",
        "at": "06:30:00",
        "timezone": SCL,
        "grace_seconds": 900.0,
        "__class_path": "deadlines.GuildReportDeadline",
    }
    assert GuildReportDeadline.deserialize_reference(encoded) == ref
    # As the scheduler reads it: the plugin (GremioDeadlinesPlugin) has registered the class.
    assert decode_deadline_reference(encoded).inner_ref == ref


def test_a_runs_day_is_its_config_day_or_its_data_interval_start_in_santiago():
    start = datetime(2026, 12, 2, 3, 15, tzinfo=UTC)  # 00:15 on the 2nd in Santiago
    assert run_day(start, {}, SCL) == date(2026, 12, 2)
    assert run_day("2026-12-02T03:15:00+00:00", None, SCL) == date(2026, 12, 2)
    assert run_day(start, {"day": "2026-11-28"}, SCL) == date(2026, 11, 28)
    assert run_day(None, {}, SCL) is None


def test_a_days_alert_is_always_the_same_record_with_no_cart():
    deadline = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    first = report_late_alert(date(2026, 12, 2), deadline, SCL, datetime(2026, 12, 3, 9, 0, 2, tzinfo=UTC))
    again = report_late_alert(date(2026, 12, 2), deadline, SCL, datetime(2026, 12, 3, 9, 5, tzinfo=UTC))
    other = report_late_alert(date(2026, 12, 3), deadline, SCL, datetime(2026, 12, 3, 9, 5, tzinfo=UTC))
    assert first.id == again.id != other.id and isinstance(first.id, uuid.UUID)
    assert first.kind == "report_late" and (first.plate, first.lat, first.lon) == (None, None, None)
    assert (
        first.detail
        == again.detail
        == ("the sales report for 2026-12-02 was not written by 2026-12-03 06:00 (America/Santiago)")
    )


def test_a_report_counts_as_written_only_if_all_its_files_were_there_by_the_deadline(tmp_path):
    settings = Settings.model_construct(reports_dir=tmp_path)
    day, deadline = date(2026, 12, 2), datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    folder = tmp_path / "daily"
    folder.mkdir()
    assert not written_by(day, deadline, settings)
    for ext in ("csv", "json", "txt"):
        (folder / f"{day}.{ext}").write_text("x")
        os.utime(folder / f"{day}.{ext}", (deadline.timestamp() - 60,) * 2)
    assert written_by(day, deadline, settings)
    os.utime(folder / f"{day}.json", (deadline.timestamp() + 60,) * 2)  # written after 06:00
    assert not written_by(day, deadline, settings)
