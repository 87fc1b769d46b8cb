-- Create-or-lock each cart's stock row for this batch and return what it held before.
-- The no-op update takes the row lock, so two instances never decide for one cart at once.
insert into cart_stock as c (plate)
select plate from unnest(%(plates)s::text[]) as plate order by plate
on conflict (plate) do update set plate = c.plate
returning c.plate, c.sold_at
