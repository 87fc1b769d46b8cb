-- The newest alerts since a time, for the board and /v1/live.
select id, kind, plate, lat, lon, detail, created_at
from alerts
where created_at >= %(since)s
order by created_at desc, id
limit %(limit)s
