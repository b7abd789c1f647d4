"""Real Apache Kafka in KRaft mode, single node on 127.0.0.1, from Maven Central jars.

The jars are resolved once with ``mvn dependency:copy-dependencies`` on the pom shipped in this
package into a cache dir outside the source tree (``CT_KAFKA_LIBS_DIR`` or
``~/.cache/contest-telemetry/kafka-<version>``); no tarball or image is downloaded.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from contest_telemetry.broker.exceptions import BrokerStartError, BrokerUnavailableError
from contest_telemetry.broker.process import BrokerProcess, free_port

__all__ = ["ApacheKafkaBroker", "kafka_version", "resolve_kafka_libs"]


def _pom_text() -> str:
    return resources.files("contest_telemetry.broker").joinpath("kafka-pom.xml").read_text()


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", _pom_text())
    assert match, "kafka-pom.xml names no kafka.version"
    return match.group(1)


def _libs_dir() -> Path:
    override = os.environ.get("CT_KAFKA_LIBS_DIR")
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "contest-telemetry" / f"kafka-{kafka_version()}"


def resolve_kafka_libs(progress: bool = False) -> Path:
    """Return the dir holding the broker's jars, fetching them from Maven Central the first time."""
    libs = _libs_dir()
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("java") is None:
        raise BrokerUnavailableError("Apache Kafka needs Java >= 17 on PATH (java not found)")
    if shutil.which("mvn") is None:
        raise BrokerUnavailableError("Apache Kafka's jars are resolved with Maven (mvn not found)")
    libs.mkdir(parents=True, exist_ok=True)
    pom = libs / "pom.xml"
    pom.write_text(_pom_text())
    cmd = [
        "mvn",
        "-B",
        "-q" if not progress else "-ntp",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs / 'libs'}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=not progress, text=True, check=False)
    if result.returncode != 0:
        raise BrokerUnavailableError(
            f"mvn could not resolve Kafka {kafka_version()}: {(result.stdout or '')[-2000:]}"
        )
    marker.write_text(kafka_version())
    return libs


def _cluster_id() -> str:
    """A random KRaft cluster id (22 url-safe base64 characters, what ``kafka-storage random-uuid``
    prints). Passed as ``--cluster-id=<id>``: an id that starts with ``-`` (1 in 64) would
    otherwise be read as an option by the storage tool's argument parser."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class ApacheKafkaBroker(BrokerProcess):
    engine: str = "kafka"
    heap: str = "512m"
    controller_port: int = 0
    # Users of an extra SASL_PLAINTEXT (PLAIN) listener on ``sasl_port``, for testing clients that
    # authenticate; the PLAINTEXT listener stays (inter-broker traffic, readiness checks).
    sasl_users: dict[str, str] = field(default_factory=dict)
    sasl_port: int = 0

    def _classpath(self) -> str:
        return str(resolve_kafka_libs() / "libs" / "*")

    def _java_opts(self) -> list[str]:
        log_config = resources.files("contest_telemetry.broker").joinpath("log4j2.yaml")
        return [
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log_config}",
        ]

    @property
    def properties_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "server.properties"

    def prepare(self) -> None:
        assert self.data_dir is not None
        if not self.controller_port:
            self.controller_port = free_port()
        logs = self.data_dir / "kraft-logs"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(logs),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Tests start many short-lived consumer groups: no artificial rebalance delay.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if self.sasl_users:
            if not self.sasl_port:
                self.sasl_port = free_port()
            users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
            props["listeners"] += f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
            props["advertised.listeners"] += f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
            props["listener.security.protocol.map"] += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
            props["sasl.enabled.mechanisms"] = "PLAIN"
            props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            )
        self.properties_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        if (logs / "meta.properties").exists():
            return  # already formatted (a restart keeps its data)
        cmd = [
            "java",
            *self._java_opts(),
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={_cluster_id()}",
            "-c",
            str(self.properties_path),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerStartError("kafka storage format failed", (result.stdout + result.stderr)[-3000:])

    def command(self) -> list[str]:
        return [
            "java",
            *self._java_opts(),
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.properties_path),
        ]
