-- The stored day's revision: when it was first reported, when late sales last changed its
-- numbers and how many arrived late (none if the day was never computed). Parameter: day.
select first_reported_at, revised_at, late_sales
from daily_sales_totals
where day = %(day)s
