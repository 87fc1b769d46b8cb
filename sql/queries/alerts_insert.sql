-- Alerts raised by Airflow (premium_pending, report_late) into the `alerts` table, where the
-- live map and `gremio watch` read them; by their deterministic id (the primary key, the
-- table's only unique constraint), so a repeat adds nothing. No conflict target: with one,
-- PostgreSQL would want SELECT on it.
-- No RETURNING: gremio_airflow may insert alerts, not read them (sql/090_alert_kinds.sql).
insert into alerts (id, kind, plate, lat, lon, detail, created_at)
select *
from unnest(
    %(ids)s::uuid[], %(kinds)s::text[], %(plates)s::text[], %(lats)s::double precision[],
    %(lons)s::double precision[], %(details)s::text[], %(created_at)s::timestamptz[]
)
on conflict do nothing
