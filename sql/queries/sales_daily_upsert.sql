-- One master's day into daily_master_stats; a re-run of the day replaces it.
insert into daily_master_stats (
    day, rut, name, plate, sales_count, units_sold, clients, avg_units_per_client,
    frequent_clients, frequent_clients_detail, computed_at
) values (
    %(day)s, %(rut)s, %(name)s, %(plate)s, %(sales_count)s, %(units_sold)s, %(clients)s,
    %(avg_units_per_client)s, %(frequent_clients)s, %(frequent_clients_detail)s, now()
)
on conflict (day, rut) do update set
    name = excluded.name,
    plate = excluded.plate,
    sales_count = excluded.sales_count,
    units_sold = excluded.units_sold,
    clients = excluded.clients,
    avg_units_per_client = excluded.avg_units_per_client,
    frequent_clients = excluded.frequent_clients,
    frequent_clients_detail = excluded.frequent_clients_detail,
    computed_at = excluded.computed_at
