# Fjord's two commands: `make run` and `make test`. Both build .venv from uv.lock when it is missing
# or stale, and are quick when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.fjord-synced
# JVM jars (Kafka's broker, HDFS's servers, Spark's Kafka source and S3A), pinned in fjord/jvm/.
JARS := .jvm/.fetched
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(PYTHON) -m uv
endif
PYTEST_ARGS ?=
# make test's workers: the e2e beside the SparkSession's tests (tests/conftest.py), measured in
# docs/benchmarks.md, "Where the suite's time goes".
TEST_WORKERS ?= 2

export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: compose-env run test test-fast test-cluster lint bench venv jars check-java check-uv check-chromium clean help

help:
	@echo "make run    set up, then run the platform's main job on the embedded defaults"
	@echo "make test   set up, then run the whole test suite"
	@echo "make test-fast   unit and contract tests only (the inner loop, about 2 minutes)"
	@echo "make lint   ruff + mypy;  make bench   benchmarks (docs/benchmarks.md)"

venv: $(STAMP)

$(STAMP): pyproject.toml uv.lock | check-java check-uv
	$(UV) sync --frozen
	@touch $@

jars: $(JARS)

$(JARS): fjord/jvm/fetch.py fjord/jvm/jars.lock fjord/jvm/settings.xml $(wildcard fjord/jvm/*/pom.xml) | check-java
	$(PYTHON) fjord/jvm/fetch.py
	@touch $@

check-java:
	@command -v java >/dev/null 2>&1 || [ -x "$$JAVA_HOME/bin/java" ] || { \
	  echo "error: Java is not installed; Spark needs Java 17 (Debian: apt-get install openjdk-17-jre-headless)" >&2; exit 1; }

# The dashboard's browser test drives Debian's chromium (Playwright cannot download browsers here).
check-chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
	  else echo "error: the browser tests need chromium (Debian: apt-get install chromium)" >&2; exit 1; fi; }

check-uv:
	@$(UV) --version >/dev/null 2>&1 || { echo "uv not found: installing it with pip"; \
	  $(PYTHON) -m pip install --quiet --user uv || $(PYTHON) -m pip install --quiet uv; }

run: $(STAMP) $(JARS)
	$(VENV)/bin/fjord run

test: $(STAMP) $(JARS) | check-chromium
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

# The inner loop: unit and contract tests (the contract suites start the embedded servers they need).
test-fast: $(STAMP) $(JARS)
	$(VENV)/bin/pytest tests/unit tests/contract $(PYTEST_ARGS)

# The cluster profile's fault matrix (tests/cluster/) and its reduced test; the results are committed.
test-cluster: $(STAMP) $(JARS)
	FJORD_TEST_CLUSTER=1 $(VENV)/bin/pytest tests/cluster tests/integration/test_cluster.py -p no:randomly \
	  --junit-xml=bench/results/test_cluster.xml -o junit_logging=system-out $(PYTEST_ARGS)

# docker-compose.yml's secrets, generated into .env (mode 600; an existing .env is kept).
compose-env: $(STAMP)
	$(VENV)/bin/python -m fjord.compose_env .env

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP) $(JARS)
	$(VENV)/bin/python -m bench.services
	$(VENV)/bin/python -m bench.foundation
	$(VENV)/bin/python -m bench.featurestore
	$(VENV)/bin/python -m bench.etl
	$(VENV)/bin/python -m bench.experiment
	$(VENV)/bin/python -m bench.serve
	$(VENV)/bin/python -m bench.shadow
	$(VENV)/bin/python -m bench.orchestration
	$(VENV)/bin/python -m bench.monitor

clean:
	rm -rf $(VENV) .jvm .pytest_cache
