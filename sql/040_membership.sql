-- Membership (DESIGN §5): what members_monthly, members_premium and `gremio` need beyond 001.
-- Safe to run twice.

-- Every decision says who made it and when, and every rejection says why.
do $$
begin
    if not exists (
        select 1 from pg_constraint
        where conrelid = 'member_applications'::regclass and conname = 'member_applications_decided'
    ) then
        alter table member_applications add constraint member_applications_decided check (
            (status = 'pending' and decided_at is null)
            or (status = 'approved' and decided_at is not null)
            or (status = 'rejected' and decided_at is not null and reason is not null)
        );
    end if;
end
$$;

-- The monthly report reads a month's regular applications by received_at and the
-- fast-track's decisions by decided_at; `gremio applications` lists by received_at.
create index if not exists member_applications_received_at on member_applications (received_at);
create index if not exists member_applications_decided_at
    on member_applications (decided_at) where decided_at is not null;
