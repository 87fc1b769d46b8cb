"""A run triggered with no logical date (`airflow dags trigger`, the REST API) has no data
interval in Airflow 3: the report DAGs give it the interval Airflow itself infers for a manual
run made at its run_after, the last complete day or month (gremio/guild_time.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from airflow.timetables.interval import CronDataIntervalTimetable
from deadlines import run_day
from hypothesis import assume, given
from hypothesis import strategies as st

from gremio import guild_time

SCL = "America/Santiago"
# The schedules of sales_daily and members_monthly, as Airflow's scheduler reads them.
DAILY = CronDataIntervalTimetable("15 0 * * *", timezone=SCL)
MONTHLY = CronDataIntervalTimetable("0 0 1 * *", timezone=SCL)
WHEN = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC))


@pytest.mark.parametrize(
    ("run_after", "day"),
    [
        (datetime(2026, 12, 3, 18, 25, tzinfo=UTC), date(2026, 12, 2)),  # 15:25 in Santiago: yesterday
        (datetime(2026, 12, 3, 3, 16, tzinfo=UTC), date(2026, 12, 2)),  # 00:16: the day just ended
        (datetime(2026, 12, 3, 3, 14, tzinfo=UTC), date(2026, 12, 1)),  # 00:14: its run is not due yet
        # 01:00 on the first day of summer time: 00:15 never happened (00:00 became 01:00), and
        # the day before has ended. Airflow's inference says 09-08 here, a day not yet over
        # (its cron lands on 01:15, after run_after): the property below leaves that out.
        (datetime(2024, 9, 8, 4, 0, tzinfo=UTC), date(2024, 9, 7)),
        (datetime(2024, 9, 8, 5, 0, tzinfo=UTC), date(2024, 9, 7)),  # 02:00, the same day
    ],
)
def test_a_daily_run_with_no_logical_date_reports_the_last_complete_day(run_after, day) -> None:
    assert guild_time.report_day(None, SCL, run_after=run_after) == day
    assert run_day(None, {}, SCL, run_after.isoformat()) == day  # its deadline's day too


@given(WHEN)
def test_the_day_is_the_one_airflow_infers_for_a_manual_run(run_after) -> None:
    inferred = DAILY.infer_manual_data_interval(run_after=run_after).start
    # A whole interval before run_after (23 h on the spring day): not so around the DST gap
    # (above), where Airflow's cron lands its start on the gap's day itself.
    assume(inferred + timedelta(hours=23) <= run_after)
    assert guild_time.report_day(None, SCL, run_after=run_after) == guild_time.report_day(inferred, SCL)


@given(WHEN)
def test_the_month_is_the_one_airflow_infers_for_a_manual_run(run_after) -> None:
    inferred = MONTHLY.infer_manual_data_interval(run_after=run_after).start
    assume(inferred <= run_after)
    assert guild_time.report_month(None, SCL, run_after=run_after) == guild_time.report_month(inferred, SCL)


def test_a_run_with_an_interval_or_a_day_keeps_it() -> None:
    own = datetime(2025, 3, 10, 3, 15, tzinfo=UTC)
    later = datetime(2026, 1, 1, tzinfo=UTC)
    assert guild_time.report_day(own, SCL, run_after=later) == date(2025, 3, 10)
    assert guild_time.report_day(None, SCL, "2025-03-09", later) == date(2025, 3, 9)
    assert guild_time.report_month(None, SCL, "2025-02", later) == date(2025, 2, 1)
    assert run_day(None, {}, SCL) is None  # nothing to go by: no deadline
    with pytest.raises(ValueError, match="run_after"):
        guild_time.report_day(None, SCL)
