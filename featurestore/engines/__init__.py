"""Point-in-time join engines, chosen by ``featurestore.join_engine``: DuckDB (one machine) or Spark."""

from __future__ import annotations

from featurestore.engines.base import JoinEngine, JoinPlan, Source
from fjord.config import get_settings

__all__ = ["JoinEngine", "JoinPlan", "Source", "join_engine"]


def join_engine(name: str | None = None) -> JoinEngine:
    """The configured join engine (or the one called ``name``)."""
    name = name or get_settings().featurestore.join_engine
    if name == "spark":
        from featurestore.engines.spark import SparkJoinEngine

        return SparkJoinEngine()
    from featurestore.engines.duckdb import DuckDBJoinEngine

    return DuckDBJoinEngine()
