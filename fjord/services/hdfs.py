"""HDFS: Apache Hadoop 3.4.2's NameNode and DataNodes (one embedded, two in the cluster profile).

Launched with ``java -cp <conf>:.jvm/hdfs/*`` (the server jars from Maven Central, pinned by
``fjord/jvm/hdfs/pom.xml``): the same Hadoop release as the client inside pyspark, so Spark reads and
writes ``hdfs://`` with what it ships. Replication is 1 with one DataNode, 2 in the cluster profile
(each DataNode its own process, data directory and ports). The NameNode's web UI is at the ``http``
port. Python reaches it with ``hdfs-native`` (see :mod:`fjord.fs.backends`), a native client that
needs no JVM and no ``libhdfs``.

Loopback is shared by every user of the machine. HDFS without Kerberos trusts the user name a client
states (SIMPLE), so it cannot stop a user who impersonates Fjord's; it can stop everyone else:
permissions are on and the root is mode 700, owned by the user who runs the NameNode (its superuser);
DataNodes serve a block only with the NameNode's token for it; WebHDFS, which takes its user name
from the query string, is off.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar
from xml.sax.saxutils import escape

from fjord.jvm import classpath, java_command
from fjord.services.base import Process, Service
from fjord.services.process import run_once

HEAP = ["-Xms64m", "-Xmx256m", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError"]
_LOG4J = (
    "log4j.rootLogger=INFO,console\n"
    "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
    "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
    "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n"
    "log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN\n"
    "log4j.logger.BlockStateChange=WARN\n"
    "log4j.logger.org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace=WARN\n"
)


def _site(properties: dict[str, object]) -> str:
    body = "".join(
        f"  <property><name>{escape(name)}</name><value>{escape(str(value))}</value></property>\n"
        for name, value in properties.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


class HdfsService(Service):
    """HDFS: ``namenode``, then ``datanode`` (and ``datanode2``... with ``datanodes`` > 1)."""

    name = "hdfs"
    ports: ClassVar[dict[str, int]] = {
        "rpc": 8020,
        "http": 9870,
        "datanode": 9866,
        "datanode_http": 9864,
        "datanode_ipc": 9867,
    }

    def __init__(self, home: Path, *, preferred_ports: bool = True, datanodes: int = 1,
                 replication: int = 1) -> None:  # fmt: skip
        super().__init__(home, preferred_ports=preferred_ports)
        self.datanodes, self.replication = datanodes, replication

    def role_ports(self) -> dict[str, int]:
        """The first DataNode's ports keep their names (a home of the embedded profile has them);
        DataNode i > 1 takes the same roles' well-known ports + 10 (i - 1)."""
        return {
            **self.ports,
            **{f"datanode{i}{role}": port + 10 * (i - 1) for i in range(2, self.datanodes + 1)
               for role, port in (("", 9866), ("_http", 9864), ("_ipc", 9867))},
        }  # fmt: skip

    @staticmethod
    def datanode_label(i: int) -> str:
        return "datanode" if i == 1 else f"datanode{i}"

    def address_for(self, ports: dict[str, int]) -> str:
        return f"hdfs://127.0.0.1:{ports['rpc']}"

    def site_properties(self, ports: dict[str, int]) -> tuple[dict[str, object], dict[str, object]]:
        """``core-site.xml`` and ``hdfs-site.xml`` (docker-compose.yml's HDFS sets the same keys)."""
        core = {"fs.defaultFS": self.address_for(ports), "hadoop.tmp.dir": self.data / "tmp"}
        hdfs = {
            "dfs.namenode.name.dir": (self.data / "name").as_uri(),
            "dfs.datanode.data.dir": (self.data / "data").as_uri(),
            "dfs.replication": self.replication,
            "dfs.permissions.enabled": "true",
            "dfs.block.access.token.enable": "true",
            "dfs.webhdfs.enabled": "false",
            "dfs.namenode.http-address": f"127.0.0.1:{ports['http']}",
            "dfs.datanode.address": f"127.0.0.1:{ports['datanode']}",
            "dfs.datanode.http.address": f"127.0.0.1:{ports['datanode_http']}",
            "dfs.datanode.ipc.address": f"127.0.0.1:{ports['datanode_ipc']}",
            # No 30 s wait in safe mode after a restart: one DataNode either reports its blocks or not.
            "dfs.namenode.safemode.extension": 0,
            "dfs.heartbeat.interval": 1,
            # A killed DataNode is declared dead after about 30 s, not 10 minutes.
            "dfs.namenode.heartbeat.recheck-interval": 15000,
        }
        return core, hdfs

    def _write_config(self, ports: dict[str, int]) -> None:
        conf = self.dir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        core, hdfs = self.site_properties(ports)
        for i in range(1, self.datanodes + 1):  # DataNode i > 1: conf-datanode<i>, its own ports and data
            label = self.datanode_label(i)
            node = conf if i == 1 else self.dir / f"conf-{label}"
            node.mkdir(parents=True, exist_ok=True)
            own = hdfs if i == 1 else {
                **hdfs, "dfs.datanode.data.dir": (self.data / label).as_uri(),
                "dfs.datanode.address": f"127.0.0.1:{ports[label]}",
                "dfs.datanode.http.address": f"127.0.0.1:{ports[label + '_http']}",
                "dfs.datanode.ipc.address": f"127.0.0.1:{ports[label + '_ipc']}",
            }  # fmt: skip
            (node / "core-site.xml").write_text(_site(core))
            (node / "hdfs-site.xml").write_text(_site(own))
            (node / "log4j.properties").write_text(_LOG4J)

    def _java(self, main: str, conf: str = "conf") -> list[str]:
        return [
            java_command(),
            *HEAP,
            "-Djava.awt.headless=true",
            "-cp",
            classpath("hdfs", None, self.dir / conf),
            main,
        ]

    def prepare(self, ports: dict[str, int]) -> None:
        self._write_config(ports)
        if (self.data / "name" / "current" / "VERSION").exists():
            return
        cmd = [*self._java("org.apache.hadoop.hdfs.server.namenode.NameNode"), "-format", "-nonInteractive"]
        run_once(cmd, "formatting the HDFS NameNode")

    def started(self, ports: dict[str, int]) -> None:
        """The root is its owner's alone (a new NameNode makes it 755); the NameNode's user is HDFS's
        superuser, so Fjord, which runs it, still reaches everything."""
        chmod = [*self._java("org.apache.hadoop.fs.FsShell"), "-chmod", "700", "/"]
        run_once(chmod, "closing the HDFS root to other users")

    def processes(self, ports: dict[str, int]) -> list[Process]:
        datanode = "org.apache.hadoop.hdfs.server.datanode.DataNode"
        return [
            Process("namenode", self._java("org.apache.hadoop.hdfs.server.namenode.NameNode")),
            *(Process(self.datanode_label(i), self._java(datanode, "conf" if i == 1 else f"conf-datanode{i}"))
              for i in range(1, self.datanodes + 1)),
        ]  # fmt: skip

    def _namesystem(self, ports: dict[str, int]) -> dict[str, object]:
        url = f"http://127.0.0.1:{ports['http']}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                beans = json.loads(response.read()).get("beans") or [{}]
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        state: dict[str, object] = beans[0]
        return state

    def ready(self, label: str, ports: dict[str, int]) -> bool:
        state = self._namesystem(ports)
        if label == "namenode":
            return bool(state)
        # Writable: out of safe mode with this DataNode live (DataNode i: i of them).
        i = 1 if label == "datanode" else int(label.removeprefix("datanode"))
        return state.get("FSState") == "Operational" and int(str(state.get("NumLiveDataNodes", 0))) >= i
