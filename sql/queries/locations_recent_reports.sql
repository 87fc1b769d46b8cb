-- Fugitive reports since a time, with the nearest cart found when each was processed.
select id, lat, lon, description, plate, received_at, nearest_plate, nearest_distance_m
from fugitive_reports
where received_at >= %(since)s
order by received_at desc, id
limit %(limit)s
