"""A one-task DAG for tests/integration/test_cluster.py: where does a task run on the cluster profile?"""

import pendulum
from airflow.sdk import dag, task


@dag(dag_id="celery_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def celery_probe() -> None:
    @task
    def where() -> list[int]:
        """The pids of this task's process and its ancestors (a Celery worker's, for one)."""
        import psutil

        return [psutil.Process().pid, *(p.pid for p in psutil.Process().parents())]

    where()


celery_probe()
