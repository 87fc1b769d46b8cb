-- Close open orders as delivered (orders opened before this batch).
update replenishment_orders as o
set status = 'delivered', delivered_at = d.delivered_at, delivered_by_sale_id = d.sale_id
from unnest(%(ids)s::uuid[], %(delivered_at)s::timestamptz[], %(sale_ids)s::uuid[])
    as d (id, delivered_at, sale_id)
where o.id = d.id and o.status = 'open'
