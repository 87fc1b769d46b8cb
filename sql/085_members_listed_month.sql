-- Which month's list of new members carries a decision (docs/MEMBERSHIP.md, "Late applications"):
-- the month of the run that decided it. A regular application that reached the topic after its
-- own month's run had drained it is decided by a later month's run and listed in that month's
-- list, once, not in the month it was received. Decisions recorded before this column existed
-- keep the rule they were listed by (see sql/queries/members_report.sql). Safe to run twice.
alter table member_applications add column if not exists listed_month date
    check (listed_month = date_trunc('month', listed_month)::date);
grant update (listed_month) on member_applications to gremio_airflow;
