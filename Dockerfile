# Fjord's platform image: the locked Python environment (Airflow, Spark, TensorFlow, GX, MLflow, Kafka
# client) plus Java 17 and the Hadoop client for hdfs://. Every Fjord service in docker-compose.yml runs
# it, so Spark executors find the platform at the same path as the driver (/opt/fjord/.venv) and a
# project environment shipped as a venv-pack archive layers over it (fjord.envs).
FROM python:3.11-slim-bookworm

ARG HADOOP_VERSION=3.4.1
ENV DEBIAN_FRONTEND=noninteractive \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    HADOOP_HOME=/opt/hadoop \
    ARROW_LIBHDFS_DIR=/opt/hadoop/lib/native \
    PATH=/opt/fjord/.venv/bin:/opt/hadoop/bin:$PATH \
    PYSPARK_PYTHON=/opt/fjord/.venv/bin/python \
    FJORD_HOME=/fjord/home

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl procps make \
 && rm -rf /var/lib/apt/lists/* \
 && curl -fsSL "https://archive.apache.org/dist/hadoop/common/hadoop-${HADOOP_VERSION}/hadoop-${HADOOP_VERSION}.tar.gz" \
    | tar -xz -C /opt && mv /opt/hadoop-${HADOOP_VERSION} /opt/hadoop \
 && pip install --no-cache-dir uv

WORKDIR /opt/fjord
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY fjord ./fjord
COPY featurestore ./featurestore
COPY jobs ./jobs
COPY dags ./dags
RUN uv sync --frozen --no-dev

# The Hadoop client's jars for pyarrow's HadoopFileSystem (libhdfs needs them on CLASSPATH).
RUN echo 'export CLASSPATH=$(/opt/hadoop/bin/hadoop classpath --glob)' >> /etc/profile.d/hadoop.sh
ENTRYPOINT ["/bin/bash", "-lc", "exec \"$@\"", "--"]
CMD ["fjord", "--help"]
