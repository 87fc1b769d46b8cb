-- Flag a RUT (antecedentes); flagging again replaces the reason and the time.
insert into background_flags (rut, reason)
values (%(rut)s, %(reason)s)
on conflict (rut) do update set reason = excluded.reason, flagged_at = now()
