-- The open orders of the batch's carts, and every order a sale of the batch already
-- triggered (a redelivery): the handler skips those sales, and unpublished ones go out again.
select id, plate, sale_id, stock_at_trigger, quantity, created_at, status, published_at
from replenishment_orders
where (status = 'open' and plate = any(%(plates)s::text[]))
   or sale_id = any(%(sale_ids)s::uuid[])
