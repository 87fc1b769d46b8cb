-- members_premium's safety net (docs/MEMBERSHIP.md): a premium application still pending after
-- PREMIUM_PENDING_ALERT_SECONDS raises one `premium_pending` alert on the Kafka topic `alerts`,
-- and this column remembers when, so a later sweep does not raise it again. Safe to run twice.
alter table member_applications add column if not exists pending_alerted_at timestamptz;
create index if not exists member_applications_pending_premium
    on member_applications (received_at) where status = 'pending' and premium;
grant update (pending_alerted_at) on member_applications to gremio_airflow;
