-- Before the day's upsert: masters who no longer have a row that day (a re-run after a fix).
delete from daily_master_stats
where day = %(day)s and not (rut = any(%(ruts)s))
