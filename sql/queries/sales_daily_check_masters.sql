-- Checks before publishing (docs/SALES_DAILY.md): each master's stored day beside the raw
-- sums over `sales` for that master and day, one row per master found in either. A master
-- is named by its cart (never its name or RUT). Read by the checks in dags/sales_daily.py.
-- Parameters: day (date), day_start, day_end (the guild's day bounds, gremio.guild_time).
with masters as (
    select rut, plate
    from members
    where approved_at < %(day_end)s::timestamptz
),
raw as (
    select coalesce(m.rut, 'unregistered') as rut,
           min(m.plate) as plate,
           count(*)::bigint as sales_count,
           sum(s.quantity)::bigint as units_sold
    from sales s
    left join masters m on m.plate = s.plate
    where s.sold_at >= %(day_start)s::timestamptz and s.sold_at < %(day_end)s::timestamptz
    group by 1
),
stored as (
    select rut, name, plate, sales_count, units_sold
    from daily_master_stats
    where day = %(day)s::date
)
select case when coalesce(st.rut, r.rut) = 'unregistered' then 'unregistered'
            else 'cart ' || coalesce(st.plate, r.plate) end as master,
       coalesce(btrim(st.name) <> '', false) as has_name,
       st.sales_count,
       coalesce(r.sales_count, 0) as sales_count_in_sales,
       st.units_sold,
       coalesce(r.units_sold, 0) as units_sold_in_sales
from stored st
full join raw r on r.rut = st.rut
