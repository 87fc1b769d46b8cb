-- One lane's pending applications (optionally those received in [from, until)), in received
-- order, locked until the decision is recorded.
select id, first_name, last_name, rut, email, plate, premium, received_at
from member_applications
where status = 'pending'
    and premium = %(premium)s
    and received_at >= coalesce(%(received_from)s::timestamptz, '-infinity')
    and received_at < coalesce(%(received_until)s::timestamptz, 'infinity')
order by received_at, id
for update
