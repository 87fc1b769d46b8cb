-- The broker acknowledged these orders' `replenishments` records.
update replenishment_orders set published_at = now()
where id = any(%(ids)s::uuid[]) and published_at is null
