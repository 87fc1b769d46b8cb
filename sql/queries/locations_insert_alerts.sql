-- Alerts by their deterministic id; returns only the ones not already recorded.
insert into alerts (id, kind, plate, lat, lon, detail, created_at)
select *
from unnest(
    %(ids)s::uuid[], %(kinds)s::text[], %(plates)s::text[], %(lats)s::double precision[],
    %(lons)s::double precision[], %(details)s::text[], %(created_at)s::timestamptz[]
)
on conflict (id) do nothing
returning id
