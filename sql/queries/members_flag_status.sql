-- After flagging a RUT: is it already a member (its plate), and how many of its applications
-- are still pending (the next decision rejects them).
select
    (select plate from members where rut = %(rut)s) as member_plate,
    (select count(*) from member_applications where rut = %(rut)s and status = 'pending') as pending
