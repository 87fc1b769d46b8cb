-- The approved members among some plates, with their masters' names: the plates about to raise
-- `unregistered_cart`, looked up after their positions arrived (docs/LOCATIONS.md).
select plate, first_name || ' ' || last_name as name
from members
where plate = any(%(plates)s::text[])
