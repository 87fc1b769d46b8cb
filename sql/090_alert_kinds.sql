-- Alerts raised by Airflow (docs/OPERATIONS.md, "Alerts"): members_premium's `premium_pending`
-- and sales_daily's deadline alert `report_late` go into the `alerts` table too, so the live
-- map's alerts panel and `gremio watch` show them next to the location service's. The kind
-- check widens to them, and the DAGs' role may add alerts (sql/queries/alerts_insert.sql):
-- insert only, no reading them back. Safe to run twice.
alter table alerts drop constraint if exists alerts_kind_check;
alter table alerts add constraint alerts_kind_check
    check (kind in ('jump', 'out_of_area', 'unregistered_cart', 'fugitive_report', 'premium_pending', 'report_late'));
grant insert on alerts to gremio_airflow;
