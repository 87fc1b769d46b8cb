-- Fugitive reports with the nearest live cart; a redelivered report keeps its first row.
insert into fugitive_reports
    (id, lat, lon, description, plate, received_at, nearest_plate, nearest_distance_m)
select *
from unnest(
    %(ids)s::uuid[], %(lats)s::double precision[], %(lons)s::double precision[],
    %(descriptions)s::text[], %(plates)s::text[], %(received_at)s::timestamptz[],
    %(nearest_plates)s::text[], %(nearest_distances)s::double precision[]
)
on conflict (id) do nothing
