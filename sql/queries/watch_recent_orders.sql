-- The newest replenishment orders, for `gremio watch`.
select plate, status, stock_at_trigger, quantity, created_at, delivered_at
from replenishment_orders
order by created_at desc
limit %(limit)s
