-- `gremio members`: every member, oldest first.
select approved_at, rut, first_name || ' ' || last_name as name, plate, premium, email
from members
order by approved_at, rut collate "C"
