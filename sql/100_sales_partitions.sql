-- `sales` partitioned by the guild's day (docs/SALES_DAILY.md, "Partitions"). Safe to run twice.
--
-- A day is the guild's (GUILD_TIMEZONE: 23, 24 or 25 hours), so a day's stats, checks and
-- late-sales counts read only the partitions of their window. Each day is one partition,
-- `sales_YYYYMMDD`, FROM its first instant TO the next day's; `sales_default` takes what has
-- no day partition (a day outside what sales_add_partitions makes, or a row written by hand
-- before the drain made its day): it is normally empty, and a day made later takes its rows.
--
-- Uniqueness: a partitioned table's unique keys include the partition key, so the primary
-- key is (id, sold_at). A record the drain reads twice (a redelivery, a re-read after a
-- crash) is the same bytes, so the same (id, sold_at), and ON CONFLICT drops it. The one way
-- one id gets two sold_at is a retried request without `sold_at` (docs/API.md,
-- "Idempotency": same id, and the server fills sold_at = received_at anew each time); those
-- sales (sold_at = received_at) also record their id in `sales_unstamped`, keyed by id alone,
-- and the drain stores only the first of them (gremio/sales_partitions.py).
--
-- The migration converts an existing `sales` with its rows: the old table is renamed, the
-- partitioned one made with the same columns, defaults, checks, indexes (the same names, so
-- sql/001 and sql/080 stay no-ops when run again) and grants; the rows move to their days'
-- partitions, and the old table is dropped. The days are the guild's: `gremio.db.migrate`
-- passes GUILD_TIMEZONE as the setting gremio.guild_timezone (America/Santiago without it).

-- Creates the partitions of `days` that do not exist yet, for days of `timezone`; returns how
-- many it created. The drain (gremio_airflow) calls it before writing a chunk, and the stats
-- before reading a window; it runs as the owner (SECURITY DEFINER) and makes nothing but day
-- partitions of `sales`: at most 400 days a call, from ten years back to a week ahead (a day
-- outside that keeps its rows in sales_default). A day whose bounds overlap a partition made
-- in another time zone is skipped the same way. Rows of a new day already in sales_default
-- move into its partition.
create or replace function sales_add_partitions(days date[], timezone text) returns integer
    language plpgsql volatile security definer
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    day date;
    name text;
    low timestamptz;
    high timestamptz;
    columns text;
    made integer := 0;
    locked boolean := false;
begin
    if cardinality(days) > 400 then
        raise exception 'sales_add_partitions: % days asked for, at most 400 a call', cardinality(days)
            using errcode = '22023';
    end if;
    if not exists (select 1 from pg_timezone_names where pg_timezone_names.name = timezone) then
        raise exception 'sales_add_partitions: unknown time zone %', timezone using errcode = '22023';
    end if;
    for day in select distinct d from unnest(days) as d where d is not null order by 1 loop
        continue when day < current_date - 3660 or day > current_date + 7;
        name := 'sales_' || to_char(day, 'YYYYMMDD');
        continue when to_regclass(format('public.%I', name)) is not null;
        if not locked then
            -- One maker at a time (the drain's two connections, the stats): re-check under it.
            perform pg_advisory_xact_lock(hashtext('gremio sales_add_partitions'));
            locked := true;
            continue when to_regclass(format('public.%I', name)) is not null;
        end if;
        low := day::timestamp at time zone timezone;
        high := (day + 1)::timestamp at time zone timezone;
        select string_agg(quote_ident(attname), ', ' order by attnum) into columns
        from pg_attribute where attrelid = 'public.sales'::regclass and attnum > 0 and not attisdropped;
        begin
            -- Made apart and attached (SHARE UPDATE EXCLUSIVE on `sales`, so readers and
            -- writers of other days carry on), with the day's rows from the default partition.
            execute format('create table public.%I (like public.sales including all)', name);
            execute format(
                'alter table public.%I add constraint %I check (sold_at >= %L and sold_at < %L)',
                name, name || '_bounds', low, high
            );
            execute format(
                'with moved as (delete from public.sales_default where sold_at >= %L and sold_at < %L returning %s)'
                ' insert into public.%I (%s) select %s from moved',
                low, high, columns, name, columns, columns
            );
            execute format(
                'alter table public.sales attach partition public.%I for values from (%L) to (%L)', name, low, high
            );
            execute format('alter table public.%I drop constraint %I', name, name || '_bounds');
            made := made + 1;
        exception when invalid_object_definition then
            -- Overlaps a partition of another time zone's days: this day stays in sales_default.
            raise warning 'sales_add_partitions: % overlaps an existing partition; its rows stay in sales_default', day;
        end;
    end loop;
    return made;
end
$$;
revoke execute on function sales_add_partitions(date[], text) from public;

-- The ids of the sales whose sold_at the API filled in (sold_at = received_at): the drain
-- stores a sale of these only if its id is new here (sql header above).
create table if not exists sales_unstamped (
    id      uuid primary key,
    sold_at timestamptz not null
);

do $$
declare
    zone text := coalesce(nullif(current_setting('gremio.guild_timezone', true), ''), 'America/Santiago');
    old record;
begin
    if (select relkind from pg_class where oid = 'public.sales'::regclass) = 'p' then
        return;  -- already partitioned
    end if;
    alter table public.sales rename to sales_unpartitioned;
    -- Free the names of its indexes and primary key for the partitioned table's.
    for old in
        select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid
        where i.indrelid = 'public.sales_unpartitioned'::regclass
    loop
        execute format('alter index public.%I rename to %I', old.relname, 'unpartitioned_' || old.relname);
    end loop;
    create table public.sales (
        like public.sales_unpartitioned including defaults including constraints including comments
            including storage including compression including generated including statistics
    ) partition by range (sold_at);
    alter table public.sales add constraint sales_pkey primary key (id, sold_at);
    create table public.sales_default partition of public.sales default;
    perform sales_add_partitions(
        array(select distinct (sold_at at time zone zone)::date from public.sales_unpartitioned), zone
    );
    insert into public.sales select * from public.sales_unpartitioned;
    insert into sales_unstamped (id, sold_at)
    select distinct on (id) id, sold_at from public.sales_unpartitioned where sold_at = received_at
    order by id, sold_at
    on conflict do nothing;
    drop table public.sales_unpartitioned;
end
$$;

-- The indexes of sql/001 and sql/080, on every partition (partitioned indexes, same names).
create index if not exists sales_sold_at on sales (sold_at);
create index if not exists sales_plate_sold_at on sales (plate, sold_at);
create index if not exists sales_drained_at on sales (drained_at);

-- Grants (sql/060_roles.sql): the drain loads and the stats read `sales` (partitions are
-- reached through it), make their days' partitions, and keep the unstamped ids.
grant select, insert on sales to gremio_airflow;
grant select, insert on sales_unstamped to gremio_airflow;
grant execute on function sales_add_partitions(date[], text) to gremio_airflow;
