-- Late sales correct their days (docs/SALES_DAILY.md, "Late sales"). Safe to run twice.
--
-- sales.drained_at: when the drain stored the sale (the drain's INSERT leaves the column out,
-- so its default fills it). Sales stored before this migration get -infinity: nobody knows
-- when they came, and none of them is late. A duplicate the drain's ON CONFLICT DO NOTHING
-- drops keeps the first copy's time, so it is not a late sale.
alter table sales add column if not exists drained_at timestamptz not null default '-infinity';
alter table sales alter column drained_at set default now();
create index if not exists sales_drained_at on sales (drained_at);

-- daily_sales_totals, per day:
--   reported_at        the computed_at of the numbers last published (the files written);
--   first_reported_at  the same, for the day's first published report;
--   late_sales         the day's sales drained after its first report;
--   revised_at         when late_sales last changed (the revision the files announce).
-- A day whose sales were drained after reported_at is recomputed by the next sales_daily run.
-- Days already reported before this migration count as reported when they were computed.
do $$
begin
    if not exists (
        select 1 from information_schema.columns
        where table_schema = current_schema() and table_name = 'daily_sales_totals'
          and column_name = 'reported_at'
    ) then
        alter table daily_sales_totals
            add column reported_at timestamptz,
            add column first_reported_at timestamptz,
            add column revised_at timestamptz,
            add column late_sales integer not null default 0 check (late_sales >= 0);
        update daily_sales_totals set reported_at = computed_at, first_reported_at = computed_at;
    end if;
end
$$;

-- gremio_airflow already has SELECT, INSERT on sales and SELECT, INSERT, UPDATE on
-- daily_sales_totals (sql/060_roles.sql): table-wide grants that cover the new columns.
