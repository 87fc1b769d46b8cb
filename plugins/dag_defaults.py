"""What gremio's scheduled report DAGs (sales_daily, members_monthly) share: owner and retries.

A failed drain or report is retried with a growing delay, so a PostgreSQL or broker restart
(tests/reliability) is ridden out without anyone clearing the task by hand.
"""

from datetime import timedelta

REPORT_DEFAULT_ARGS = {
    "owner": "gremio",
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=15),
}
