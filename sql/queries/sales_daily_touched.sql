-- Late sales (docs/SALES_DAILY.md): the past days, from `oldest` up to the day before `day`,
-- that were computed and have sales the drain stored after the day was last reported (or
-- that were computed and never reported: their checks failed). A day is the guild's
-- (`timezone`); the sales are read between the look-back's bounds, through the drained_at
-- index when few sales came in since the oldest report.
-- Parameters: oldest, day (dates), timezone, window_start, window_end (the look-back's bounds).
with days as (
    select day, reported_at
    from daily_sales_totals
    where day >= %(oldest)s::date and day < %(day)s::date
),
drained as (
    select (s.sold_at at time zone %(timezone)s)::date as day, max(s.drained_at) as last_drained
    from sales s
    where s.sold_at >= %(window_start)s::timestamptz and s.sold_at < %(window_end)s::timestamptz
      and s.drained_at > (select coalesce(min(reported_at), '-infinity') from days)
    group by 1
)
select d.day
from days d
left join drained s on s.day = d.day
where d.reported_at is null or s.last_drained > d.reported_at
order by d.day
