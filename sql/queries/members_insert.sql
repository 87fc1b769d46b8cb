-- Approved applications become members; returns the ones added (a clash adds nothing).
insert into members (rut, first_name, last_name, email, plate, premium, application_id, approved_at)
select rut, first_name, last_name, email, plate, premium, id, decided_at
from member_applications
where id = any(%(ids)s::uuid[]) and status = 'approved'
order by received_at, id
on conflict do nothing
returning application_id
