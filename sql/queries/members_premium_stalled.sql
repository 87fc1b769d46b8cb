-- Premium applications pending since before `older_than` and not yet alerted, in received
-- order, locked until the alert is recorded (members_premium's sweep).
select id, rut, received_at
from member_applications
where status = 'pending'
    and premium
    and received_at < %(older_than)s
    and pending_alerted_at is null
order by received_at, id
for update skip locked
