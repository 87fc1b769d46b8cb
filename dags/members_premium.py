"""
# members_premium: premium applications decided within a minute

**Event-driven.** The DAG is scheduled on the asset `members_premium_applications`, which an
AssetWatcher keeps: in the triggerer, the Kafka provider's message-queue trigger reads the
topic `members` (consumer group `airflow-members-premium-watch`, connection
`kafka_members_watch`) and turns each record on **partition 1** (premium) into an asset event
(`gremio.membership.premium_notice`); records on partition 0 (regular) are passed over. Each
asset event queues a run. Two steps:

1. **drain_applications** takes the applications on `members` up to where the topic stood
   when the task started into `member_applications` (its own group, `airflow-members-premium`;
   idempotent by id; offsets committed after the database commit). Both partitions: the
   regular applications are only stored, not decided, so that the rule "an earlier pending
   application has the same RUT" sees them.
2. **decide_premium** decides **every** pending premium application, in the order received,
   by the same rules as the monthly review; regular applications wait for `members_monthly`. Events that arrive together fold into one run,
   and a run decides whatever is pending, so none is lost. Approved applications become
   `members` at once; they appear in the month's list (`members_monthly`) with a ★.

**And every few minutes** (`MEMBERS_PREMIUM_SWEEP_MINUTES`, default 5): the schedule is
asset-or-time, so a run also starts on the clock. That is the safety net for a run that
failed all its retries (PostgreSQL down for a minute, say) and for an event lost between the
trigger's offset commit and Airflow storing it: the next sweep drains and decides whatever is
still pending. A third step,

3. **alert_stalled** (runs even when the others failed), raises one `premium_pending` record
   on the Kafka topic `alerts` for each premium application still pending
   `PREMIUM_PENDING_ALERT_SECONDS` (60 s) after it was received: the application id and a
   masked RUT, nothing else. Each application is alerted once (`pending_alerted_at`), with
   an alert id derived from the application id.

A run with nothing pending (a re-sent application, or an event whose record an earlier run
already decided) decides nothing. Triggering the DAG by hand does the same sweep.
Details, and why event-driven: docs/MEMBERSHIP.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from airflow.providers.apache.kafka.triggers.msg_queue import KafkaMessageQueueTrigger
from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, dag, task
from kafka_drain import KafkaDrainOperator

from gremio.settings import get_settings

SETTINGS = get_settings()
TIMEZONE = SETTINGS.guild_timezone

PREMIUM_APPLICATIONS = Asset(
    name="members_premium_applications",
    uri=f"kafka://{SETTINGS.bootstrap_servers.split(',')[0]}/members",
    watchers=[
        AssetWatcher(
            name="members_premium_watcher",
            trigger=KafkaMessageQueueTrigger(
                topics=["members"],
                kafka_config_id="kafka_members_watch",
                apply_function="gremio.membership.premium_notice",
                poll_timeout=1,
                # The provider sleeps this long after every record it passes over (here, each
                # regular application): none, so a burst of them cannot hold a premium one back.
                poll_interval=0,
            ),
        )
    ],
)


@dag(
    dag_id="members_premium",
    # On each premium application's asset event, and on the clock: the sweep that decides
    # whatever a failed or lost run left pending.
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(
            f"*/{SETTINGS.members_premium_sweep_minutes} * * * *", timezone=TIMEZONE
        ),
        assets=[PREMIUM_APPLICATIONS],
    ),
    start_date=datetime(2026, 11, 1, tzinfo=ZoneInfo(TIMEZONE)),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "gremio",
        "retries": 3,
        "retry_delay": timedelta(seconds=10),
    },
    tags=["gremio", "members", "premium"],
    doc_md=__doc__,
)
def members_premium():
    drain = KafkaDrainOperator(
        task_id="drain_applications",
        topic="members",
        table="member_applications",
        record="gremio.records.MemberApplication",
        group_id="airflow-members-premium",
        message_columns={"kafka_partition": "partition", "kafka_offset": "offset"},
        max_active_tis_per_dag=1,
    )

    @task
    def decide_premium(dag_run=None) -> dict:
        """Decide every pending premium application; returns the ids approved and rejected."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from gremio import membership

        with PostgresHook(postgres_conn_id="gremio_db").get_conn() as conn:
            decisions = membership.decide_pending(
                conn, premium=True, decided_by=f"members_premium/{dag_run.run_id}"
            )
        return membership.summary(decisions)

    @task(trigger_rule="all_done")
    def alert_stalled() -> list[str]:
        """One `premium_pending` alert for each premium application pending too long; their ids."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook
        from kafka_drain import _producer

        from gremio import membership
        from gremio.settings import get_settings

        older_than = timedelta(seconds=get_settings().premium_pending_alert_seconds)
        prod = _producer("kafka_default")
        with PostgresHook(postgres_conn_id="gremio_db").get_conn() as conn:
            alerts = membership.alert_stalled_premium(conn, prod, older_than)
        return [str(a.id) for a in alerts]

    drain >> decide_premium() >> alert_stalled()


members_premium()
