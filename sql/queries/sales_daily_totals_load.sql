-- The stored day's totals (none if the day was never computed).
select sales_count, units_sold, clients
from daily_sales_totals
where day = %(day)s
