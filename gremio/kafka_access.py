"""Who may do what on Kafka: the one declaration of the principals and their ACLs.

The deployment's broker authenticates every client with SASL/SCRAM-SHA-512 and authorizes
it with KRaft's StandardAuthorizer (gremio/stack/kafka_broker.py, SASL mode); nothing is
allowed that is not granted here (`allow.everyone.if.no.acl.found=false`). `admin` is the
broker's only super user: the broker itself, `gremio topics`, this module, the operators'
commands (`gremio deadletter`, `gremio token revoke`, which writes `cart_revocations`).

`gremio kafka-access`, connected as admin, makes the broker match this declaration: it
sets each service principal's SCRAM password from the settings (KAFKA_<NAME>_PASSWORD),
creates the missing ACLs and deletes those of these principals that are no longer declared.
Running it again changes nothing (a changed password is set anew: that is how to rotate one).

Rights the clients need besides the obvious ones:

* READ and WRITE on a topic imply DESCRIBE (metadata, partition counts, offsets by time).
* An idempotent producer's InitProducerId needs IDEMPOTENT_WRITE on the cluster only on old
  brokers: since Kafka 3.0 (KIP-679) WRITE on any topic implies it, so none is granted
  (tests/integration/test_kafka_acl.py produces idempotently with each principal).
* A consumer group needs READ on the group (join, commit, fetch committed offsets); the
  services' group ids are settings (STOCK_GROUP_ID, LIVE_GROUP_ID). Airflow's drains each
  use their own group, all named `airflow-...` (dags/, the Kafka connections' group.id), so
  airflow gets the groups by that prefix.
* The API reads `cart_revocations` by assignment (every worker reads it from the beginning),
  without joining a group; its consumers' group ids (one per process, `gremio-api-revocations-...`)
  get DESCRIBE only, for librdkafka's coordinator lookup: no join, no commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from gremio import topics as t
from gremio.settings import Settings, get_settings
from gremio.stack.kafka_broker import ADMIN_PRINCIPAL

READ, WRITE, DESCRIBE = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
# Kafka's minimum (and its CLI's default) for SCRAM-SHA-512.
SCRAM_ITERATIONS = 4096
AIRFLOW_GROUP_PREFIX = "airflow-"
# The API's revocation readers assign partitions, never join a group, yet librdkafka looks up
# the coordinator of the unique group.id each one must have (ingest_api/revocations.py).
API_REVOCATIONS_GROUP_PREFIX = "gremio-api-revocations-"


@dataclass(frozen=True)
class Grant:
    """One allowed operation on one resource (a topic, a group), from any host."""

    operation: AclOperation
    resource: ResourceType
    name: str
    pattern: ResourcePatternType = ResourcePatternType.LITERAL

    def binding(self, principal: str) -> AclBinding:
        return AclBinding(
            self.resource,
            self.name,
            self.pattern,
            f"User:{principal}",
            "*",
            self.operation,
            AclPermissionType.ALLOW,
        )


@dataclass(frozen=True)
class Principal:
    name: str
    password_setting: str  # the Settings field holding its SCRAM password
    grants: tuple[Grant, ...]

    def bindings(self) -> list[AclBinding]:
        return [grant.binding(self.name) for grant in self.grants]


def topics(operation: AclOperation, *declared: t.Topic) -> list[Grant]:
    return [Grant(operation, ResourceType.TOPIC, topic.name) for topic in declared]


def group(name: str, prefixed: bool = False) -> Grant:
    pattern = ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL
    return Grant(READ, ResourceType.GROUP, name, pattern)


def principals(settings: Settings | None = None) -> tuple[Principal, ...]:
    """The service principals and what each may do (admin is a super user: not listed)."""
    settings = settings or get_settings()
    return (
        # Validates and produces; reads only the revoked tokens (DESIGN §1, §4).
        Principal(
            "api",
            "kafka_api_password",
            (
                *topics(WRITE, t.MEMBERS, t.SALES, t.LOCATIONS, t.DEADLETTER),
                *topics(READ, t.CART_REVOCATIONS),
                Grant(
                    AclOperation.DESCRIBE,
                    ResourceType.GROUP,
                    API_REVOCATIONS_GROUP_PREFIX,
                    ResourcePatternType.PREFIXED,
                ),
            ),
        ),
        # Sales in, refill orders out (consumers/stock).
        Principal(
            "stock",
            "kafka_stock_password",
            (
                *topics(READ, t.SALES),
                *topics(WRITE, t.REPLENISHMENTS, t.DEADLETTER),
                group(settings.stock_group_id),
            ),
        ),
        # Positions, fugitive reports and sales in, alerts out; members come from PostgreSQL
        # (consumers/locations).
        Principal(
            "locations",
            "kafka_locations_password",
            (
                *topics(READ, t.LOCATIONS, t.SALES),
                *topics(WRITE, t.ALERTS, t.DEADLETTER),
                group(settings.live_group_id),
            ),
        ),
        # The drains (sales_daily, members_monthly, members_premium) and the premium watcher
        # read; poison goes to deadletter (plugins/kafka_drain.py); members_premium's sweep
        # raises `premium_pending` alerts and sales_daily's deadline `report_late` ones
        # (plugins/deadlines.py, run by the triggerer).
        Principal(
            "airflow",
            "kafka_airflow_password",
            (
                *topics(READ, t.SALES, t.MEMBERS),
                *topics(WRITE, t.ALERTS, t.DEADLETTER),
                group(AIRFLOW_GROUP_PREFIX, prefixed=True),
            ),
        ),
        # The monitor (gremio/monitor.py) reads no record: every topic's offsets, each group's
        # committed offsets (DESCRIBE), and the record timestamps behind them through offsets
        # by time (DESCRIBE too); it writes Alertmanager's notifications to alerts.
        Principal(
            "monitor",
            "kafka_monitor_password",
            (
                *topics(DESCRIBE, *t.TOPICS),
                *topics(WRITE, t.ALERTS),
                *(
                    Grant(DESCRIBE, ResourceType.GROUP, name)
                    for name in (settings.stock_group_id, settings.live_group_id)
                ),
                Grant(DESCRIBE, ResourceType.GROUP, AIRFLOW_GROUP_PREFIX, ResourcePatternType.PREFIXED),
            ),
        ),
    )


def describe(declared: Iterable[Principal]) -> list[str]:
    """The declaration as lines, for `gremio kafka-access --show` and the docs."""
    lines = [f"User:{ADMIN_PRINCIPAL}: super user"]
    for principal in declared:
        for grant in principal.grants:
            name = grant.name + ("*" if grant.pattern == ResourcePatternType.PREFIXED else "")
            lines.append(
                f"User:{principal.name}: {grant.operation.name} {grant.resource.name.lower()} {name}"
            )
    return lines


def admin_client(settings: Settings) -> AdminClient:
    """An admin client logged in as `admin`: the process's own login when it is admin's
    (KAFKA_SASL_USERNAME=admin), else admin with KAFKA_ADMIN_PASSWORD."""
    config = settings.kafka_config()
    if settings.kafka_security_protocol != "PLAINTEXT" and settings.kafka_sasl_username != ADMIN_PRINCIPAL:
        config.update(
            {"sasl.username": ADMIN_PRINCIPAL, "sasl.password": settings.secret("kafka_admin_password")}
        )
    return AdminClient(config)


def apply(settings: Settings | None = None, timeout: float = 30.0) -> dict[str, int]:
    """Make the broker's SCRAM users and ACLs match the declaration, as admin.

    Returns counts: users set, ACLs created, stale ACLs deleted."""
    settings = settings or get_settings()
    declared = principals(settings)
    passwords = {p.name: settings.secret(p.password_setting) for p in declared}  # all, before any change
    client = admin_client(settings)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [
        UserScramCredentialUpsertion(name, info, password.encode()) for name, password in passwords.items()
    ]
    for future in client.alter_user_scram_credentials(upserts, request_timeout=timeout).values():
        future.result()

    wanted = [binding for p in declared for binding in p.bindings()]
    existing: list[AclBinding] = []
    for p in declared:
        existing += client.describe_acls(_principal_filter(p.name), request_timeout=timeout).result()
    have = {_key(b) for b in existing}
    missing = [b for b in wanted if _key(b) not in have]
    if missing:
        for future in client.create_acls(missing, request_timeout=timeout).values():
            future.result()
    keep = {_key(b) for b in wanted}
    stale = [b for b in existing if _key(b) not in keep]
    if stale:
        filters = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in stale
        ]
        for future in client.delete_acls(filters, request_timeout=timeout).values():
            future.result()
    return {"users": len(upserts), "created": len(missing), "deleted": len(stale)}


def _principal_filter(name: str) -> AclBindingFilter:
    return AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        f"User:{name}",
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )


def _key(b: AclBinding) -> tuple:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)
