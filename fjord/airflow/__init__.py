"""Fjord on Airflow 3: the embedded Airflow, its REST client, and the hook, operators and sensor the
DAGs in ``dags/`` are wired from.

=================  ====================================================================  ============
module             what it holds                                                          imports
=================  ====================================================================  ============
``stack``          :class:`AirflowService`: api-server, scheduler, dag-processor and      no Airflow
                   triggerer as separate processes, one shared configuration
``client``         :class:`AirflowClient`: token, unpause, trigger, follow, asset events  no Airflow
``hook``           :class:`FjordJobHook`: runs a stage job (spark-submit or python -m)     Airflow
``operators``      :class:`FjordJobOperator`: the hook's templated arguments             Airflow
``sensors``        :class:`SharedFileSensor` and its trigger: a deferrable wait for a     Airflow
                   ``_SUCCESS`` marker on the shared filesystem (file, HDFS, S3)
``defaults``       retries, back-off, timeouts and the failure callback every task has    Airflow
=================  ====================================================================  ============

Only this package and ``dags/`` import Airflow; stage jobs never do. This ``__init__`` imports
nothing, so the CLI can use ``stack`` and ``client`` without loading Airflow.
"""
