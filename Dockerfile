# Fjord's platform image: the locked Python environment (Airflow, Spark, TensorFlow, GX, MLflow, Kafka
# client, hdfs-native for hdfs://) plus Java 17 and the pinned JVM jars (Spark's Kafka source and S3A,
# fjord/jvm/). Every Fjord service in docker-compose.yml runs it, so Spark executors find the platform
# at the same path as the driver (/opt/fjord/.venv) and a project environment shipped as a venv-pack
# archive layers over it (fjord.envs).
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PATH=/opt/fjord/.venv/bin:$PATH \
    PYSPARK_PYTHON=/opt/fjord/.venv/bin/python \
    FJORD_HOME=/fjord/home

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven curl procps make \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir uv

WORKDIR /opt/fjord
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
# The JVM jars, checked against fjord/jvm/jars.lock (the same fetch as make's).
COPY fjord/jvm ./fjord/jvm
RUN python3 fjord/jvm/fetch.py && rm -rf /root/.m2
COPY fjord ./fjord
COPY featurestore ./featurestore
COPY jobs ./jobs
COPY dags ./dags
COPY demo ./demo
RUN uv sync --frozen --no-dev
ENTRYPOINT ["/bin/bash", "-lc", "exec \"$@\"", "--"]
CMD ["fjord", "--help"]
