"""A single-node KRaft Kafka broker from Maven Central jars (DESIGN §7).

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
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.log_dir}",
                "num.partitions=2",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "message.max.bytes=8388608",
                "replica.fetch.max.bytes=8388608",
                "log.retention.hours=168",
                "",
            ]
        )

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
        cluster_id = _cluster_id()
        subprocess.run(
            self.java_command(
                "kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted",
                # `--cluster-id=`: an id starting with "-" would read as an option otherwise.
                f"--cluster-id={cluster_id}", "-c", str(self.properties_file),
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def command(self) -> list[str]:
        return self.java_command("kafka.Kafka", str(self.properties_file))


def _cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
