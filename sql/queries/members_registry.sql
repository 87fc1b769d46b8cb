-- What the membership rules look at for these applicants: members holding their RUTs or
-- plates, their background flags, and all their applications still pending (any lane).
select 'member' as kind, rut, plate, null::timestamptz as received_at, null::uuid as id
from members
where rut = any(%(ruts)s::text[]) or plate = any(%(plates)s::text[])
union all
select 'flag', rut, null, null, null
from background_flags
where rut = any(%(ruts)s::text[])
union all
select 'pending', rut, null, received_at, id
from member_applications
where status = 'pending' and rut = any(%(ruts)s::text[])
