-- Record decisions; an application already decided keeps its first decision. listed_month is the
-- first day of the month whose list carries the decision.
update member_applications as a
set status = d.status, reason = d.reason, decided_at = %(decided_at)s, decided_by = %(decided_by)s,
    listed_month = %(listed_month)s
from unnest(%(ids)s::uuid[], %(statuses)s::text[], %(reasons)s::text[]) as d (id, status, reason)
where a.id = d.id and a.status = 'pending'
