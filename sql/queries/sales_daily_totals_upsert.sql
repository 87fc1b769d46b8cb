-- The guild's whole day into daily_sales_totals; a re-run of the day replaces its numbers.
-- late_sales: the day's sales drained after the day's first published report (none before
-- there is one). revised_at moves only when that count changes, so a re-run without new
-- sales keeps the day's revision note, and its files, as they were.
-- Parameters: day, day_start, day_end (the guild's day bounds), sales_count, units_sold, clients.
with late as (
    select count(s.id)::integer as sales
    from daily_sales_totals t
    join sales s
      on s.sold_at >= %(day_start)s::timestamptz and s.sold_at < %(day_end)s::timestamptz
     and s.drained_at > t.first_reported_at
    where t.day = %(day)s::date
)
insert into daily_sales_totals as t (day, sales_count, units_sold, clients, computed_at, late_sales)
select %(day)s::date, %(sales_count)s, %(units_sold)s, %(clients)s, now(), late.sales
from late
on conflict (day) do update set
    sales_count = excluded.sales_count,
    units_sold = excluded.units_sold,
    clients = excluded.clients,
    computed_at = excluded.computed_at,
    late_sales = excluded.late_sales,
    revised_at = case when excluded.late_sales <> t.late_sales then excluded.computed_at else t.revised_at end
