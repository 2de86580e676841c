"""Fjord: a Python-first ML platform coordinated through one shared filesystem.

The core package holds what every stage shares: configuration (:mod:`fjord.config`), the shared
filesystem (:mod:`fjord.fs`), projects (:mod:`fjord.projects`), per-project Python environments
(:mod:`fjord.envs`), the Spark session factory (:mod:`fjord.spark`) and run records
(:mod:`fjord.lineage`).
"""

__version__ = "0.1.0"
