-- A month's decided applications for reports/members/YYYY-MM: those its decisions list
-- (listed_month, sql/085): the regular ones the month's run decided, late ones of earlier months
-- included, and the fast-track's premium decisions made in it. A decision recorded before
-- listed_month existed is listed by the old rule: a regular one in the month it was received.
-- Approved first, then rejected; each in received order. Parameters: month (its first day),
-- month_start, month_end (gremio.guild_time.month_bounds).
select
    id, status, premium, rut, first_name || ' ' || last_name as name, plate, received_at, reason
from member_applications
where status <> 'pending'
    and (
        listed_month = %(month)s::date
        or listed_month is null and (
            (not premium and received_at >= %(month_start)s and received_at < %(month_end)s)
            or (premium and decided_at >= %(month_start)s and decided_at < %(month_end)s)
        )
    )
order by status, received_at, id
