-- Remember that these applications' `premium_pending` alert is on the topic.
update member_applications
set pending_alerted_at = %(alerted_at)s
where id = any(%(ids)s::uuid[])
