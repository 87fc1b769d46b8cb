-- A month's decided applications for reports/members/YYYY-MM: the regular ones received in
-- it (the month's review decided them) and the fast-track's premium decisions made in it.
-- Approved first, then rejected; each in received order.
select
    id, status, premium, rut, first_name || ' ' || last_name as name, plate, received_at, reason
from member_applications
where status <> 'pending'
    and (
        (not premium and received_at >= %(month_start)s and received_at < %(month_end)s)
        or (premium and decided_at >= %(month_start)s and decided_at < %(month_end)s)
    )
order by status, received_at, id
