"""Kafka: Apache Kafka 4.1 in KRaft mode, one process that is both broker and controller, on loopback.

Launched with ``java -cp .jvm/kafka/*`` (jars from Maven Central, pinned by ``fjord/jvm/kafka/pom.xml``);
the storage is formatted once (``kafka.tools.StorageTool format``), and its log segments stay under
``data/`` across restarts. Clients reach it at ``127.0.0.1:<port>`` (``kafka.bootstrap_servers`` when
unset resolves to it); the docker-compose Kafka is the same software, configured the same way.

Both listeners take SASL/PLAIN: the one login, ``fjord``, has a password generated per home (kept
mode 600 in ``credentials.json``; the broker reads it from its mode-600 ``server.properties``), so
another user of the machine can neither read the inference log nor write records into it.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, ClassVar

from fjord.jvm import classpath, java_command
from fjord.private import write_private
from fjord.services.base import Process, Service
from fjord.services.process import port_open, run_once

# Sized for a 2-core, few-GB laptop: the broker is mostly page cache, not heap.
HEAP = ["-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError"]
NODE_ID = 1
USERNAME = "fjord"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


def jaas_login(username: str, password: str, *, users: bool = False) -> str:
    """A ``sasl.jaas.config`` for SASL/PLAIN: a client's login, and with ``users`` the broker's table."""
    table = f' user_{username}="{password}"' if users else ""
    return f'{PLAIN_LOGIN} required username="{username}" password="{password}"{table};'


def _properties(values: dict[str, object]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


class KafkaService(Service):
    """A single-node Kafka cluster (replication factor 1, every internal topic included)."""

    name = "kafka"
    ports: ClassVar[dict[str, int]] = {"broker": 9092, "controller": 9093}
    secret_names = ("password",)

    def client_options(self) -> dict[str, Any]:
        """kafka-python's options that log in to this broker."""
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": USERNAME,
            "sasl_plain_password": self.credentials()["password"],
        }

    def address_for(self, ports: dict[str, int]) -> str:
        return f"127.0.0.1:{ports['broker']}"

    def server_properties(self, ports: dict[str, int]) -> dict[str, object]:
        """The broker's ``server.properties`` (docker-compose.yml's Kafka sets the same keys)."""
        broker, controller = ports["broker"], ports["controller"]
        return {
            "process.roles": "broker,controller",
            "node.id": NODE_ID,
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{controller}",
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{broker}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            **self.login_properties(),
            "log.dirs": self.data / "logs",
            "metadata.log.dir": self.data / "metadata",
            "num.partitions": 1,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            # One consumer joining an empty group need not wait 3 s for others.
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "true",
            "num.network.threads": 2,
            "num.io.threads": 4,
        }

    def login_properties(self) -> dict[str, str]:
        """The listeners' logins: the broker's user table, and its own login as a client of both."""
        login = jaas_login(USERNAME, self.credentials()["password"], users=True)
        return {
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": login,
            "listener.name.controller.plain.sasl.jaas.config": login,
        }

    def _log4j(self) -> str:
        return _properties(
            {
                "status": "warn",
                "appender.out.type": "Console",
                "appender.out.name": "out",
                "appender.out.layout.type": "PatternLayout",
                "appender.out.layout.pattern": "[%d] %p %m (%c)%n",
                "rootLogger.level": "info",
                "rootLogger.appenderRef.out.ref": "out",
                "logger.request.name": "kafka.request.logger",
                "logger.request.level": "warn",
            }
        )

    def prepare(self, ports: dict[str, int]) -> None:
        write_private(self.dir / "server.properties", _properties(self.server_properties(ports)))
        (self.dir / "log4j2.properties").write_text(self._log4j())
        if (self.data / "metadata" / "meta.properties").exists():
            return
        self.format_storage(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))

    def format_storage(self, cluster_id: str) -> None:
        """Format the KRaft storage for ``cluster_id`` (``server.properties`` written first)."""
        # --cluster-id=ID, not -t ID: one id in 64 starts with "-", which the tool's parser takes for
        # an option ("expected one argument"): a fresh Kafka failed to start now and then.
        cmd = [*self._java(), "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}"]
        cmd += ["-c", str(self.dir / "server.properties")]
        run_once(cmd, "formatting Kafka's storage")

    def _java(self) -> list[str]:
        log4j = f"-Dlog4j2.configurationFile={(self.dir / 'log4j2.properties').as_uri()}"
        return [java_command(), *HEAP, log4j, "-Djava.awt.headless=true", "-cp", classpath("kafka")]

    def processes(self, ports: dict[str, int]) -> list[Process]:
        return [Process("kafka", [*self._java(), "kafka.Kafka", str(self.dir / "server.properties")])]

    def ready(self, label: str, ports: dict[str, int]) -> bool:
        if not port_open(ports["broker"]):
            return False  # a client's bootstrap against a closed port takes seconds to give up
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.address_for(ports), request_timeout_ms=3000, **self.client_options()
            )
        except (KafkaError, OSError, ValueError):
            return False
        try:
            return bool(admin.describe_cluster().get("brokers"))
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()
