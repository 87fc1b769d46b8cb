-- Checks before publishing (docs/SALES_DAILY.md): the day's totals (daily_sales_totals)
-- beside the sums of its masters' rows. Always one row; the totals' columns are NULL when
-- the day has no totals, which fails the checks. Parameter: day.
select 'the day''s totals' as master,
       t.sales_count,
       m.sales_count as masters_sales_count,
       t.units_sold,
       m.units_sold as masters_units_sold,
       t.clients,
       m.clients as masters_clients
from (
    select coalesce(sum(sales_count), 0)::bigint as sales_count,
           coalesce(sum(units_sold), 0)::bigint as units_sold,
           coalesce(sum(clients), 0)::bigint as clients
    from daily_master_stats
    where day = %(day)s::date
) m
left join daily_sales_totals t on t.day = %(day)s::date
