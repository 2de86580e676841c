"""Point-in-time join engines, chosen by ``featurestore.join_engine``'s ``type`` from a registry
(:mod:`fjord.plugins`): ``duckdb`` (one machine) or ``spark``."""

from __future__ import annotations

from pydantic import TypeAdapter

from featurestore.engines.base import JoinEngine, JoinPlan, Source
from fjord.config import JoinEngineConfig, get_settings
from fjord.plugins import Registry

__all__ = ["JOIN_ENGINES", "JoinEngine", "JoinPlan", "Source", "join_engine"]

JOIN_ENGINES: Registry[JoinEngine] = Registry("join engine")
JOIN_ENGINES.register("duckdb", "featurestore.engines.duckdb:DuckDBJoinEngine")
JOIN_ENGINES.register("spark", "featurestore.engines.spark:SparkJoinEngine")


def join_engine(name: str | None = None) -> JoinEngine:
    """The configured join engine, or the one of type ``name`` with its default options."""
    config = get_settings().featurestore.join_engine
    if name is not None and name != config.type:
        JOIN_ENGINES.factory(name)  # an unknown name: ConfigError naming the known ones
        config = TypeAdapter(JoinEngineConfig).validate_python({"type": name})
    return JOIN_ENGINES.create(config)
