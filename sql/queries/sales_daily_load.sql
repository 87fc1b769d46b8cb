-- The stored day, as the reports show it. Parameter: day.
select day, rut, name, plate, sales_count, units_sold, clients, avg_units_per_client,
       frequent_clients_detail
from daily_master_stats
where day = %(day)s
