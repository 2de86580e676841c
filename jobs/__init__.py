"""Fjord's stage jobs. Each is a ``main.py`` entry point (spark-submit or ``python -m``) over a typed spec
and a ``run(spec)`` that knows nothing of the orchestrator: no Airflow imports here."""
