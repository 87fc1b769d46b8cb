-- The guild's whole day into daily_sales_totals; a re-run of the day replaces it.
insert into daily_sales_totals (day, sales_count, units_sold, clients, computed_at)
values (%(day)s, %(sales_count)s, %(units_sold)s, %(clients)s, now())
on conflict (day) do update set
    sales_count = excluded.sales_count,
    units_sold = excluded.units_sold,
    clients = excluded.clients,
    computed_at = excluded.computed_at
