"""A KRaft Kafka node from Maven Central jars (DESIGN §7): a single node, or one of a cluster's.

Used by `gremio up` (under the process manager) and by the test suite (directly, on free
ports). `KAFKA_HOME` pointing at an existing Kafka install takes precedence over the jars.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from gremio.settings import REPO_ROOT, get_settings
from gremio.stack.system import StackError, ensure_command

POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J2_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j2.yaml"
# The deployment's broker (docker-compose.yaml mounts it): KafkaBroker in SASL mode renders it
# byte for byte, which tests/unit/test_kafka_access.py checks, so the ACL test's broker and the
# deployment's share their listener, SASL and ACL settings.
COMPOSE_PROPERTIES = REPO_ROOT / "deploy" / "kafka" / "server.properties"
ADMIN_PRINCIPAL = "admin"
SASL_MECHANISM = "SCRAM-SHA-512"
# The admin password is never written into the properties: Kafka reads it from the broker's
# environment through its EnvVarConfigProvider.
ADMIN_LOGIN_ENV = "KAFKA_ADMIN_PASSWORD"


def libs_dir(local_dir: Path) -> Path:
    """The broker's jar folder: KAFKA_HOME/libs (a setting), or the Maven-filled cache."""
    kafka_home = get_settings().kafka_home
    if kafka_home:
        libs = Path(kafka_home) / "libs"
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise StackError(f"KAFKA_HOME={kafka_home} has no libs/kafka_2.13-*.jar; unset it or fix it")
        return libs
    return local_dir / "kafka" / "libs"


def ensure_jars(local_dir: Path) -> Path:
    """Download the broker's jars once with Maven; return the jar folder."""
    libs = libs_dir(local_dir)
    ensure_command("java", "openjdk-17-jre-headless", version_check=["java", "-version"])
    if any(libs.glob("kafka_2.13-*.jar")):
        return libs
    ensure_command("mvn", "maven")
    tmp = libs.with_name("libs.partial")
    subprocess.run(
        [
            "mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
        ],
        check=True,
    )  # fmt: skip
    tmp.rename(libs)  # only a complete download counts as the cache
    return libs


@dataclass
class KafkaBroker:
    """One KRaft node acting as broker and controller on loopback."""

    data_dir: Path
    port: int
    controller_port: int
    libs: Path
    heap: str = "512m"
    # SASL mode (the deployment's): one SASL_PLAINTEXT client listener with SCRAM-SHA-512,
    # the StandardAuthorizer with ACLs, and `admin` as the only super user. `admin_password`
    # becomes admin's SCRAM credential at format time; the broker process must find the same
    # value in its environment (`env()`).
    sasl: bool = False
    admin_password: str | None = None
    # Where the client listener binds and what it advertises (the deployment: "" = all, kafka).
    listen_host: str = "127.0.0.1"
    advertised_host: str = "127.0.0.1"
    # Cluster mode (gremio/stack/kafka_cluster.py): this node's id and every voter's
    # (node id, controller port) on loopback, all formatted with the same `cluster_id`.
    # No voters: the single node (node.id=1, formatted --standalone, replication factor 1).
    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()
    cluster_id: str | None = None

    @property
    def replication(self) -> int:
        """Replicas of every topic (internal ones too): 1 alone, 3 (at most) in a cluster."""
        return min(3, len(self.voters)) or 1

    @property
    def min_isr(self) -> int:
        """min.insync.replicas: an acks=all write survives the loss of one replica (2 of 3)."""
        return max(1, self.replication - 1)

    @property
    def quorum_bootstrap(self) -> str:
        ports = [port for _, port in self.voters] or [self.controller_port]
        return ",".join(f"127.0.0.1:{port}" for port in ports)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "data"

    def server_properties(self) -> str:
        listener = "SASL_PLAINTEXT" if self.sasl else "PLAINTEXT"
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.bootstrap.servers={self.quorum_bootstrap}",
                f"listeners={listener}://{self.listen_host}:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners={listener}://{self.advertised_host}:{self.port}",
                "controller.listener.names=CONTROLLER",
                f"inter.broker.listener.name={listener}",
                *(self._sasl_properties() if self.sasl else _PLAINTEXT_MAP),
                f"log.dirs={self.log_dir}",
                "num.partitions=2",
                "auto.create.topics.enable=false",
                *self._replication_properties(),
                f"offsets.topic.replication.factor={self.replication}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={self.replication}",
                f"transaction.state.log.min.isr={self.min_isr}",
                f"share.coordinator.state.topic.replication.factor={self.replication}",
                f"share.coordinator.state.topic.min.isr={self.min_isr}",
                "group.initial.rebalance.delay.ms=0",
                "message.max.bytes=8388608",
                "replica.fetch.max.bytes=8388608",
                "log.retention.hours=168",
                "",
            ]
        )

    def _replication_properties(self) -> list[str]:
        """A cluster's topics: 3 replicas, acks=all needs 2 in sync, and no out-of-sync replica
        ever becomes leader (that would drop acknowledged records). Nothing for a single node,
        whose file stays as it was."""
        if not self.voters:
            return []
        return [
            f"default.replication.factor={self.replication}",
            f"min.insync.replicas={self.min_isr}",
            "unclean.leader.election.enable=false",
        ]

    @staticmethod
    def _sasl_properties() -> list[str]:
        """Listener security, SASL and ACLs: no anonymous principal on any listener."""
        password = f"${{env:{ADMIN_LOGIN_ENV}}}"
        return [
            # The controller listener stays on loopback; it authenticates with SASL/PLAIN, as
            # KRaft controllers cannot use SCRAM (its credentials live in the metadata they serve).
            "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            f"sasl.enabled.mechanisms={SASL_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule"
            f' required username="{ADMIN_PRINCIPAL}" password="{password}" user_{ADMIN_PRINCIPAL}="{password}";',
            f"listener.name.sasl_plaintext.{SASL_MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule"
            f' required username="{ADMIN_PRINCIPAL}" password="{password}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{ADMIN_PRINCIPAL}",
            "allow.everyone.if.no.acl.found=false",
            "config.providers=env",
            "config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider",
        ]

    def env(self) -> dict[str, str]:
        """What the broker process needs in its environment (SASL mode: the admin password)."""
        if not self.sasl:
            return {}
        if not self.admin_password:
            raise StackError("a SASL broker needs admin_password")
        return {ADMIN_LOGIN_ENV: self.admin_password}

    def java_command(self, main_class: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def prepare(self) -> None:
        """Write server.properties and format the storage once."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(self.server_properties())
        if (self.log_dir / "meta.properties").exists():
            return
        cluster_id = self.cluster_id or _cluster_id()
        scram = ["--add-scram", scram_credential(self.env()[ADMIN_LOGIN_ENV])] if self.sasl else []
        quorum = ["--standalone"]
        if self.voters:
            if not self.cluster_id:
                raise StackError("a cluster node needs the cluster's cluster_id")
            quorum = [f"--initial-controllers={self.initial_controllers()}"]
        subprocess.run(
            self.java_command(
                "kafka.tools.StorageTool", "format", *quorum, "--ignore-formatted",
                # `--cluster-id=`: an id starting with "-" would read as an option otherwise.
                f"--cluster-id={cluster_id}", "-c", str(self.properties_file), *scram,
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def command(self) -> list[str]:
        return self.java_command("kafka.Kafka", str(self.properties_file))

    def initial_controllers(self) -> str:
        """StorageTool's --initial-controllers: id@host:port:directory-id of every voter, the
        same on every node (each directory id derives from the cluster id and the node id)."""
        assert self.cluster_id
        return ",".join(
            f"{node}@127.0.0.1:{port}:{directory_id(self.cluster_id, node)}" for node, port in self.voters
        )


COMPOSE_HEADER = """\
# The docker compose broker's configuration: docker-compose.yaml mounts it, and
# deploy/kafka/start.sh formats the storage with admin's SCRAM credential, then starts the broker.
# Generated, never edited: it is KafkaBroker in SASL mode on the compose network, byte for byte,
# so the ACL test's broker (tests/integration/test_kafka_acl.py) runs with the same listener, SASL
# and ACL settings; tests/unit/test_kafka_access.py checks it. Change gremio/stack/kafka_broker.py,
# then: .venv/bin/python -m gremio.stack.kafka_broker > deploy/kafka/server.properties
# No secret in here: ${env:KAFKA_ADMIN_PASSWORD} is read from the broker's environment.
"""


def compose_server_properties() -> str:
    """What deploy/kafka/server.properties holds: the SASL broker as docker compose runs it."""
    broker = KafkaBroker(
        Path("/var/lib/kafka"), 19092, 9093, Path("/opt/kafka/libs"),
        sasl=True, listen_host="", advertised_host="kafka",  # "": every interface
    )  # fmt: skip
    return COMPOSE_HEADER + broker.server_properties()


_PLAINTEXT_MAP = ["listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"]


def scram_credential(password: str, name: str = ADMIN_PRINCIPAL) -> str:
    """StorageTool's --add-scram argument for a user's SCRAM-SHA-512 credential."""
    return f'{SASL_MECHANISM}=[name={name},password="{password}"]'


def directory_id(cluster_id: str, node_id: int) -> str:
    """A voter's metadata directory id: a UUID derived from the cluster and node, URL-safe base64."""
    import base64

    raw = uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{cluster_id}/{node_id}").bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


if __name__ == "__main__":
    print(compose_server_properties(), end="")
