-- Least privilege (docs/OPERATIONS.md, "Database roles"): one role per writer, each granted
-- only the tables and columns its queries touch. Safe to run twice.
--
-- The roles are NOLOGIN here; `gremio db-roles` gives them LOGIN and their passwords. Roles
-- are cluster-wide, so they are created only if missing. The owner (who runs the migrations
-- and the operators' commands: flag, applications, members, deadletter replay, watch) needs
-- CREATEROLE for this, or must be a superuser (the compose image's POSTGRES_USER is one).
--
-- Nothing else is granted: no ALTER DEFAULT PRIVILEGES to these roles, so a table a later
-- migration creates is the owner's alone until that migration grants it.

do $$
declare
    name text;
begin
    foreach name in array array['gremio_stock', 'gremio_locations', 'gremio_airflow'] loop
        if not exists (select 1 from pg_roles where rolname = name) then
            execute format(
                'create role %I nologin nosuperuser nocreatedb nocreaterole noinherit noreplication nobypassrls',
                name
            );
        end if;
    end loop;
end
$$;

-- The database and its schema: only the owner and these roles may connect, nobody else may
-- create anything in `public`, and only the drain's role makes temporary (staging) tables.
do $$
begin
    execute format('revoke connect, temporary on database %I from public', current_database());
    execute format(
        'grant connect on database %I to gremio_stock, gremio_locations, gremio_airflow', current_database()
    );
    execute format('grant temporary on database %I to gremio_airflow', current_database());
end
$$;
revoke create on schema public from public;
revoke usage on schema public from public;
grant usage on schema public to gremio_stock, gremio_locations, gremio_airflow;

-- Functions are executable by PUBLIC unless told otherwise: not ours.
revoke execute on function client_key(text) from public;
alter default privileges revoke execute on functions from public;

-- consumers/stock (store.py, sql/queries/stock_*.sql): the replenishment tables only.
grant select, insert, update on cart_stock to gremio_stock;
grant select, insert, delete on replenishment_sales to gremio_stock;
grant select, insert on replenishment_orders to gremio_stock;
grant update (status, delivered_at, delivered_by_sale_id, published_at) on replenishment_orders to gremio_stock;

-- consumers/locations (store.py, sql/queries/locations_*.sql): its alerts and reports, and the
-- members' plates and names for the live view (not their RUTs or emails).
grant select, insert on alerts, fugitive_reports to gremio_locations;
grant select (plate, first_name, last_name) on members to gremio_locations;

-- Airflow's DAGs (plugins/kafka_drain.py, gremio/sales_stats.py, gremio/membership.py,
-- sql/queries/sales_daily_*, members_*): the drains load `sales` and `member_applications`
-- (the staging table is LIKE the target, which needs SELECT); the decisions update
-- applications and add members; the daily stats read sales and members and keep their
-- results. Flags are read here and written only by the operators (`gremio flag`).
grant select, insert on sales to gremio_airflow;
grant select, insert on member_applications to gremio_airflow;
grant update (status, reason, decided_at, decided_by) on member_applications to gremio_airflow;
grant insert on members to gremio_airflow;
grant select (rut, first_name, last_name, plate, approved_at, application_id) on members to gremio_airflow;
grant select on background_flags to gremio_airflow;
grant select, insert, update, delete on daily_master_stats to gremio_airflow;
grant select, insert, update on daily_sales_totals to gremio_airflow;
grant execute on function client_key(text) to gremio_airflow;
