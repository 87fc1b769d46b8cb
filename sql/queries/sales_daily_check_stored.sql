-- Checks before publishing (docs/SALES_DAILY.md): the day's stored numbers per master, named
-- by cart (never by name or RUT), for the "nothing negative" column checks. Parameter: day.
select case when rut = 'unregistered' then 'unregistered' else 'cart ' || plate end as master,
       sales_count, units_sold, clients, avg_units_per_client
from daily_master_stats
where day = %(day)s::date
