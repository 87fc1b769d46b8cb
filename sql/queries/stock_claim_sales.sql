-- Record the batch's sales as applied; the ids returned are the ones not seen before.
insert into replenishment_sales (sale_id)
select unnest(%(sale_ids)s::uuid[])
on conflict do nothing
returning sale_id
