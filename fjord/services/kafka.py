"""Kafka: Apache Kafka 4.1 in KRaft mode, on loopback: one process that is both broker and controller,
or (the cluster profile) three such nodes, a three-voter quorum, topics replicated three times with
``min.insync.replicas=2``.

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
from pathlib import Path
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
    """A Kafka cluster of ``brokers`` nodes, each broker and controller; replication factor
    ``min(brokers, 3)``, every internal topic included."""

    name = "kafka"
    ports: ClassVar[dict[str, int]] = {"broker": 9092, "controller": 9093}
    secret_names = ("password",)

    def __init__(self, home: Path, *, preferred_ports: bool = True, brokers: int = 1) -> None:
        super().__init__(home, preferred_ports=preferred_ports)
        self.brokers = brokers

    def role_ports(self) -> dict[str, int]:
        """Node 1's ports keep their names; node i > 1 takes the well-known ports + 10 (i - 1)."""
        return {
            **self.ports,
            **{f"{role}{i}": port + 10 * (i - 1) for i in range(2, self.brokers + 1)
               for role, port in self.ports.items()},
        }  # fmt: skip

    def _nodes(self, ports: dict[str, int]) -> list[tuple[int, int, int]]:
        """(node id, broker port, controller port) of each node."""
        found = []
        for i in range(1, self.brokers + 1):
            suffix = "" if i == 1 else str(i)
            found.append((i, ports[f"broker{suffix}"], ports[f"controller{suffix}"]))
        return found

    def _label(self, node: int) -> str:
        return "kafka" if self.brokers == 1 else f"kafka{node}"

    def _node_dir(self, node: int) -> Path:
        """Node 1 of a single-node cluster keeps the layout it always had (``data/logs``...)."""
        return self.data if self.brokers == 1 else self.data / f"node{node}"

    def _properties_file(self, node: int) -> Path:
        return self.dir / ("server.properties" if self.brokers == 1 else f"server-{node}.properties")

    def client_options(self) -> dict[str, Any]:
        """kafka-python's options that log in to this broker."""
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": USERNAME,
            "sasl_plain_password": self.credentials()["password"],
        }

    def address_for(self, ports: dict[str, int]) -> str:
        return ",".join(f"127.0.0.1:{broker}" for _, broker, _ in self._nodes(ports))

    def server_properties(self, ports: dict[str, int], node: int = NODE_ID) -> dict[str, object]:
        """Node ``node``'s ``server.properties`` (docker-compose.yml's Kafka sets the same keys)."""
        nodes = self._nodes(ports)
        _, broker, controller = nodes[node - 1]
        replicas = min(self.brokers, 3)
        in_sync = 2 if replicas >= 3 else 1
        return {
            "process.roles": "broker,controller",
            "node.id": node,
            "controller.quorum.voters": ",".join(f"{i}@127.0.0.1:{c}" for i, _, c in nodes),
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{broker}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            **self.login_properties(),
            "log.dirs": self._node_dir(node) / "logs",
            "metadata.log.dir": self._node_dir(node) / "metadata",
            "num.partitions": 1,
            "default.replication.factor": replicas,
            "min.insync.replicas": in_sync,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": in_sync,
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
        for node in range(1, self.brokers + 1):
            write_private(self._properties_file(node), _properties(self.server_properties(ports, node)))
        (self.dir / "log4j2.properties").write_text(self._log4j())
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        for node in range(1, self.brokers + 1):
            if not (self._node_dir(node) / "metadata" / "meta.properties").exists():
                self.format_storage(cluster_id, node)

    def format_storage(self, cluster_id: str, node: int = NODE_ID) -> None:
        """Format node ``node``'s KRaft storage for ``cluster_id`` (its properties written first)."""
        # --cluster-id=ID, not -t ID: one id in 64 starts with "-", which the tool's parser takes for
        # an option ("expected one argument"): a fresh Kafka failed to start now and then.
        cmd = [*self._java(), "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}"]
        cmd += ["-c", str(self._properties_file(node))]
        run_once(cmd, "formatting Kafka's storage")

    def _java(self) -> list[str]:
        log4j = f"-Dlog4j2.configurationFile={(self.dir / 'log4j2.properties').as_uri()}"
        return [java_command(), *HEAP, log4j, "-Djava.awt.headless=true", "-cp", classpath("kafka")]

    def processes(self, ports: dict[str, int]) -> list[Process]:
        return [
            Process(self._label(node), [*self._java(), "kafka.Kafka", str(self._properties_file(node))])
            for node in range(1, self.brokers + 1)
        ]

    def ready(self, label: str, ports: dict[str, int]) -> bool:
        nodes = self._nodes(ports)
        node = 1 if label == "kafka" else int(label.removeprefix("kafka"))
        if node < len(nodes):
            # Started one by one, the first nodes cannot serve before a majority of the quorum is up:
            # each is ready once its controller listens; the last, once the cluster has every broker.
            return port_open(nodes[node - 1][2])
        if not port_open(nodes[node - 1][1]):
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
            return len(admin.describe_cluster().get("brokers") or []) >= len(nodes)
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()
