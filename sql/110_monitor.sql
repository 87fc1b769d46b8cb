-- Operations alerts (docs/OPERATIONS.md, "Monitoring"): Alertmanager posts to gremio's monitor,
-- which records each notification as an `ops` alert in the `alerts` table (the live map's
-- alerts panel and `gremio watch` read it) and on the `alerts` topic. The monitor gets its
-- own role, gremio_monitor, allowed to add alerts and nothing else: no reading them back, no
-- other table (its lag and replication figures come from the broker). Safe to run twice.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'gremio_monitor') then
        create role gremio_monitor nologin nosuperuser nocreatedb nocreaterole noinherit noreplication nobypassrls;
    end if;
    execute format('grant connect on database %I to gremio_monitor', current_database());
end
$$;
grant usage on schema public to gremio_monitor;
grant insert on alerts to gremio_monitor;

alter table alerts drop constraint if exists alerts_kind_check;
alter table alerts add constraint alerts_kind_check
    check (kind in (
        'jump', 'out_of_area', 'unregistered_cart', 'fugitive_report', 'premium_pending', 'report_late', 'ops'
    ));
