-- Forget applied sales older than the retention; redeliveries and retries come much sooner.
delete from replenishment_sales where applied_at < now() - make_interval(secs => %(seconds)s)
