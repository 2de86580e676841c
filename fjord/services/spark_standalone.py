"""Spark standalone: a master and its workers, from pyspark's own jars, on loopback.

The cluster profile's Spark (docs/scaling.md). Each process is pyspark's release, started as Spark's
own scripts start it (``spark-class org.apache.spark.deploy.master.Master``, ``...worker.Worker``),
with ``java -cp <pyspark>/jars/*`` directly, so its pid is the JVM's. Each worker has its own work
directory, core count and memory cap; its executors are separate JVMs it starts, which get a
project's Python environment only through ``spark.archives`` (:func:`fjord.spark.spark_conf`).

Authentication, on every port:

- **RPC** (the master's, the workers', the applications'): ``spark.authenticate`` with this home's
  secret. An application without it is refused at the handshake. The secret reaches the daemons in a
  properties file of mode 600, never a command line; the workers hand it to their executors through
  the environment, as Spark does.
- **Web UIs** (the master's and each worker's): Spark's ``JWSFilter``: a request needs
  ``Authorization: Bearer <JWS>`` signed (HS256) with this home's key (:meth:`SparkStandaloneService.token`).
- The master's REST submission server (port 6066), which takes no credentials, is off.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from fjord.jvm import java_command
from fjord.private import write_private
from fjord.services.base import Process, Service

HEAP = ["-Xms64m", "-Xmx256m", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError"]


def spark_home() -> Path:
    """pyspark's directory: its ``jars/`` are Spark's, the same release the driver runs."""
    import pyspark

    return Path(pyspark.__file__).parent


def scala_version() -> str:
    """The Scala version of pyspark's jars (``spark-core_2.13-...``). A worker's launcher needs it
    named: without it, it looks for a source checkout's build directories and fails."""
    core = next((spark_home() / "jars").glob("spark-core_*.jar"))
    return core.name.removeprefix("spark-core_").split("-")[0]


def _base64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


class SparkStandaloneService(Service):
    """A standalone master and ``workers`` workers (each ``worker_cores`` cores, ``worker_memory``)."""

    name = "spark"
    secret_names = ("secret",)
    ports: ClassVar[dict[str, int]] = {"master": 7077, "master_ui": 8080}  # + each worker's: role_ports()
    start_timeout_s = 90.0

    def __init__(self, home: Path, *, preferred_ports: bool = True, workers: int = 2, worker_cores: int = 1,
                 worker_memory: str = "2g") -> None:  # fmt: skip
        super().__init__(home, preferred_ports=preferred_ports)
        self.workers, self.worker_cores, self.worker_memory = workers, worker_cores, worker_memory

    def role_ports(self) -> dict[str, int]:
        return {
            **self.ports,
            **{f"worker{i}{role}": port + i - 1 for i in range(1, self.workers + 1)
               for role, port in (("", 7078), ("_ui", 8081))},
        }  # fmt: skip

    def address_for(self, ports: dict[str, int]) -> str:
        return f"spark://127.0.0.1:{ports['master']}"

    # -- credentials ---------------------------------------------------------------------------

    def _key(self) -> bytes:
        """The web UIs' HS256 key: 256 bits derived from this home's secret."""
        return hashlib.sha256(b"fjord-spark-ui:" + self.credentials()["secret"].encode()).digest()

    def token(self) -> str:
        """A bearer token the master's and workers' web UIs accept."""
        import jwt

        return jwt.encode({"sub": "fjord"}, self._key(), algorithm="HS256")

    def client_conf(self) -> dict[str, str]:
        """What an application sets to reach the master (its secret: keep it off command lines)."""
        return {"spark.authenticate": "true", "spark.authenticate.secret": self.credentials()["secret"]}

    # -- the processes -------------------------------------------------------------------------

    def prepare(self, ports: dict[str, int]) -> None:
        properties = {
            **self.client_conf(),
            "spark.ui.filters": "org.apache.spark.ui.JWSFilter",
            "spark.org.apache.spark.ui.JWSFilter.param.secretKey": _base64(self._key()),
            "spark.master.rest.enabled": "false",
            "spark.worker.cleanup.enabled": "true",
            "spark.worker.cleanup.appDataTtl": "86400",
        }
        write_private(self.dir / "spark-daemon.conf", "".join(f"{k} {v}\n" for k, v in properties.items()))
        for i in range(1, self.workers + 1):
            (self.data / f"worker{i}").mkdir(parents=True, exist_ok=True)

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            java_command(), *HEAP, "-cp", f"{spark_home() / 'jars'}/*", main,
            "--properties-file", str(self.dir / "spark-daemon.conf"), *args,
        ]  # fmt: skip

    def processes(self, ports: dict[str, int]) -> list[Process]:
        env = {"SPARK_HOME": str(spark_home()), "SPARK_SCALA_VERSION": scala_version(),
               "SPARK_LOCAL_IP": "127.0.0.1"}  # fmt: skip
        master = Process(
            "master",
            self._java("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                       "--port", str(ports["master"]), "--webui-port", str(ports["master_ui"])),
            env=env,
        )  # fmt: skip
        workers = [
            Process(
                f"worker{i}",
                self._java("org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                           "--port", str(ports[f"worker{i}"]), "--webui-port", str(ports[f"worker{i}_ui"]),
                           "--cores", str(self.worker_cores), "--memory", self.worker_memory,
                           "--work-dir", str(self.data / f"worker{i}"), self.address_for(ports)),
                env={**env, "SPARK_WORKER_DIR": str(self.data / f"worker{i}")},
            )
            for i in range(1, self.workers + 1)
        ]  # fmt: skip
        return [master, *workers]

    def cluster_state(self, ports: dict[str, int]) -> dict[str, Any]:
        """The master's view (its UI's ``/json``): status, workers, applications; {} if unreachable."""
        url = f"http://127.0.0.1:{ports['master_ui']}/json/"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token()}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                state: dict[str, Any] = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        return state

    def alive_workers(self, ports: dict[str, int]) -> list[dict[str, Any]]:
        return [w for w in self.cluster_state(ports).get("workers", []) if w.get("state") == "ALIVE"]

    def ready(self, label: str, ports: dict[str, int]) -> bool:
        if label == "master":
            return self.cluster_state(ports).get("status") == "ALIVE"
        port = ports[label]
        return any(w.get("port") == port for w in self.alive_workers(ports))
