-- Airflow's and the monitor's (ops) alerts of the last day, for `gremio watch`: they have no cart, and the live
-- map's list keeps only its last REPORT_WINDOW_SECONDS.
select kind, detail, created_at
from alerts
where kind in ('premium_pending', 'report_late', 'ops') and created_at >= %(since)s
order by created_at desc, id
limit %(limit)s
