-- Each cart's newest sale of the batch becomes its known stock.
update cart_stock as c
set stock_remaining = n.stock_remaining, sale_id = n.sale_id, sold_at = n.sold_at, updated_at = now()
from unnest(%(plates)s::text[], %(stocks)s::integer[], %(sale_ids)s::uuid[], %(sold_at)s::timestamptz[])
    as n (plate, stock_remaining, sale_id, sold_at)
where c.plate = n.plate
