-- One decider at a time, whichever lane: a transaction-scoped advisory lock.
select pg_advisory_xact_lock(%(lock)s)
