-- Live locations (consumers/locations, docs/LOCATIONS.md). Safe to run twice.

-- Duplicate suppression survives restarts: on start and on every partition assignment the
-- service reads the last ALERT_SUPPRESS_SECONDS of alerts per (kind, plate) from here.
create index if not exists alerts_kind_plate_created on alerts (kind, plate, created_at);
