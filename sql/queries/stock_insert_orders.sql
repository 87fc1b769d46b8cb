-- New orders in their state at the end of the batch (some are already delivered).
-- The ids derive from the triggering sale, so a replay inserts nothing.
insert into replenishment_orders
    (id, plate, sale_id, stock_at_trigger, quantity, status, created_at, delivered_at,
     delivered_by_sale_id)
select *
from unnest(
    %(ids)s::uuid[], %(plates)s::text[], %(sale_ids)s::uuid[], %(stocks)s::integer[],
    %(quantities)s::integer[], %(statuses)s::text[], %(created_at)s::timestamptz[],
    %(delivered_at)s::timestamptz[], %(delivered_by)s::uuid[]
)
on conflict do nothing
returning id
