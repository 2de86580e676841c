"""Fjord's JVM artifacts: the jars ``make`` fetches from Maven Central into ``.jvm/<group>/``.

=======  =====================================================================  =====================
group    what                                                                   used by
=======  =====================================================================  =====================
kafka    Apache Kafka 4.1 (broker and controller, KRaft)                         fjord/services/kafka
hdfs     Apache Hadoop 3.4.2's HDFS (NameNode, DataNode)                         fjord/services/hdfs
spark    Spark's Kafka source (spark-sql-kafka-0-10) and Hadoop's S3A (hadoop-aws)  fjord/spark.py
=======  =====================================================================  =====================

Each group is pinned by ``fjord/jvm/<group>/pom.xml`` and every jar's SHA-256 in ``fjord/jvm/jars.lock``
(``fjord/jvm/fetch.py`` fetches and checks them). ``jvm.jars_dir`` says where they are.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fjord.config import Settings, get_settings
from fjord.errors import ServiceError

GROUPS = ("kafka", "hdfs", "spark")


def java_executable() -> str | None:
    """``$JAVA_HOME/bin/java``, else ``java`` on PATH; ``None`` if neither exists."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return java if java and os.path.exists(java) else None


def java_command() -> str:
    """The java executable the JVM servers run; :class:`ServiceError` if there is none."""
    java = java_executable()
    if java is None:
        raise ServiceError("Java is not installed (Kafka and HDFS need Java 17)", hint="install openjdk-17")
    return java


def jars_dir(settings: Settings | None = None) -> Path:
    """The folder holding one sub-folder of jars per group."""
    settings = settings or get_settings()
    return settings.jvm.jars_dir or Path(__file__).resolve().parents[2] / ".jvm"


def jars(group: str, settings: Settings | None = None) -> list[Path]:
    """The jars of ``group``; :class:`ServiceError` saying how to fetch them if they are missing."""
    if group not in GROUPS:
        raise ValueError(f"unknown JVM group {group!r}")
    folder = jars_dir(settings) / group
    found = sorted(folder.glob("*.jar"))
    if not found or not (folder / ".fetched").is_file():
        raise ServiceError(
            f"the {group} jars are missing from {folder}",
            hint="run make (it fetches them from Maven Central: python3 fjord/jvm/fetch.py)",
        )
    return found


def classpath(group: str, settings: Settings | None = None, *extra: Path) -> str:
    """A ``java -cp`` class path: ``extra`` folders (configuration) first, then the group's jars."""
    return ":".join([*(str(path) for path in extra), *(str(jar) for jar in jars(group, settings))])
