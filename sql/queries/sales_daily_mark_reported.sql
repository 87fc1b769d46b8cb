-- After a day's files were written: the numbers they show (computed_at) are the day's report.
-- Parameter: day.
update daily_sales_totals
set reported_at = computed_at,
    first_reported_at = coalesce(first_reported_at, computed_at)
where day = %(day)s
