-- `gremio applications`: the newest `limit` (all when null) matching applications, oldest first.
select received_at, premium, rut, name, plate, status, reason, decided_at
from (
    select
        received_at, id, premium, rut, first_name || ' ' || last_name as name, plate, status, reason,
        decided_at
    from member_applications
    where (%(status)s::text is null or status = %(status)s::text)
        and received_at >= coalesce(%(month_start)s::timestamptz, '-infinity')
        and received_at < coalesce(%(month_end)s::timestamptz, 'infinity')
    order by received_at desc, id desc
    limit %(limit)s::bigint
) as newest
order by received_at, id
