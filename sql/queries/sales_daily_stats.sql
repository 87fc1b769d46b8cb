-- Each master's day in numbers (DESIGN §5, daily sales). One row per member approved
-- before the day ended, plus `unregistered` when plates without an approved member sold
-- that day. Frequent clients come from the window that ends with the day. Every row also
-- carries the whole day's totals (a client who bought from two masters counts once).
-- The sales are read once: one aggregation per (cart, client as written) over the window,
-- and everything else is computed from that much smaller set.
-- Parameters: day_start, day_end, window_start (timestamptz bounds in the guild's time
-- zone), min_purchases, max_frequent.
with masters as (
    select rut, first_name || ' ' || last_name as name, plate
    from members
    where approved_at < %(day_end)s
),
-- What each cart sold to each client as written, in the window and on the day: the one
-- pass over the sales. Client names are folded (client_key, which is costly: ICU) and
-- carts matched to masters afterwards, once per distinct name rather than per sale.
sold as (
    select s.plate,
           s.client,
           count(*) filter (where s.sold_at >= %(day_start)s) as day_sales,
           coalesce(sum(s.quantity) filter (where s.sold_at >= %(day_start)s), 0) as day_units,
           count(*) as purchases,
           sum(s.quantity) as units
    from sales s
    where s.sold_at >= %(window_start)s and s.sold_at < %(day_end)s
    group by s.plate, s.client
),
bought as (
    select coalesce(m.rut, 'unregistered') as rut, s.plate, client_key(s.client) as client,
           s.day_sales, s.day_units, s.purchases, s.units
    from sold s
    left join masters m on m.plate = s.plate
),
per_client as (
    select rut, client,
           sum(day_sales)::bigint as day_sales,
           sum(day_units)::bigint as day_units,
           sum(purchases)::bigint as purchases,
           sum(units)::bigint as units
    from bought
    group by rut, client
),
day_sales as (
    select rut,
           sum(day_sales)::bigint as sales_count,
           sum(day_units)::bigint as units_sold,
           count(*) filter (where day_sales > 0) as clients
    from per_client
    group by rut
    having sum(day_sales) > 0
),
-- Ties broken by client in code-point order (collate "C"), as Python compares strings: the
-- database's default collation (en_US.utf8 in the compose image, C locally) must not matter.
ranked as (
    select rut, client, purchases, units,
           row_number() over (partition by rut order by purchases desc, units desc, client collate "C") as rank
    from per_client
    where purchases >= %(min_purchases)s
),
frequent as (
    select rut,
           json_agg(json_build_object('client', client, 'purchases', purchases, 'units', units)
                    order by rank) as clients
    from ranked
    where rank <= %(max_frequent)s
    group by rut
),
totals as (
    select coalesce(sum(day_sales), 0)::bigint as sales_count,
           coalesce(sum(day_units), 0)::bigint as units_sold,
           count(distinct client) filter (where day_sales > 0) as clients
    from per_client
),
people as (
    select rut, name, plate from masters
    union all
    select 'unregistered', 'unregistered', string_agg(distinct plate collate "C", ';' order by plate collate "C")
    from bought
    where rut = 'unregistered' and day_sales > 0
    having count(*) > 0
)
select p.rut,
       p.name,
       p.plate,
       coalesce(d.sales_count, 0) as sales_count,
       coalesce(d.units_sold, 0) as units_sold,
       coalesce(d.clients, 0) as clients,
       coalesce(f.clients, '[]'::json) as frequent_clients,
       t.sales_count as day_sales_count,
       t.units_sold as day_units_sold,
       t.clients as day_clients
from people p
cross join totals t
left join day_sales d on d.rut = p.rut
left join frequent f on f.rut = p.rut
