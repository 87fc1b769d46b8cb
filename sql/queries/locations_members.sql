-- Approved members' plates and their masters' names, for the live view.
select plate, first_name || ' ' || last_name as name
from members
