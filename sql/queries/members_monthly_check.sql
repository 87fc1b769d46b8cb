-- Checks before publishing (docs/MEMBERSHIP.md): the month's decided applications beside how
-- many times the month's list (members_report, put in place of the marker below by
-- dags/members_monthly.py) has each. An application is named by its id only. The decided
-- applications of the month are those whose decision it lists (listed_month, sql/085): the
-- regular ones its run decided and the premium ones decided in it. Parameters: month (its
-- first day), month_start, month_end (gremio.guild_time.month_bounds).
with listed as (
    select id, count(*) as times
    from (
        /* members_report */
    ) as report
    group by id
),
decided as (
    select id, status, reason
    from member_applications
    where status <> 'pending'
        and (
            listed_month = %(month)s::date
            or listed_month is null and (
                (not premium and received_at >= %(month_start)s::timestamptz and received_at < %(month_end)s::timestamptz)
                or (premium and decided_at >= %(month_start)s::timestamptz and decided_at < %(month_end)s::timestamptz)
            )
        )
)
select 'application ' || coalesce(d.id, l.id) as application,
       d.status,
       coalesce(l.times, 0) as times_listed,
       d.id is not null as decided_in_month,
       d.status is distinct from 'rejected' or coalesce(btrim(d.reason) <> '', false) as has_reason
from decided d
full join listed l on l.id = d.id
