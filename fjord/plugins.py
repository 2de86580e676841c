"""One way to choose a replaceable part: a registry of implementations, each with a typed config.

Every replaceable part (the filesystem, the online store, the join engine, and later the broker
client and the model server's backend) has one :class:`Registry`. An implementation registers under
a name (a URI scheme for the filesystem, the ``type`` of its config for the others) with a factory,
given as ``"module:attribute"`` so that choosing SQLite never imports Redis or Spark. A part chosen
by configuration has a pydantic config per implementation whose ``type`` is that name
(:class:`PluginConfig`, as Feast's ``type:``); the settings hold them as a discriminated union, so a
misspelt type or option fails when the settings load, naming the field.

>>> stores = Registry("online store")                              # doctest: +SKIP
>>> stores.register("sqlite", "featurestore.online.sqlite:SQLiteOnlineStore.from_config")
>>> stores.create(SQLiteOnlineStoreConfig(path="/tmp/online.db"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from fjord.errors import ConfigError

T = TypeVar("T")


class PluginConfig(BaseModel):
    """The config of one implementation: ``type`` names it; every other field is its own option."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


class Registry(Generic[T]):
    """The implementations of one part, by name."""

    def __init__(self, part: str) -> None:
        self.part = part
        self._factories: dict[str, str | Callable[..., T]] = {}

    def register(self, name: str, factory: str | Callable[..., T]) -> None:
        """Make ``name`` available; ``factory`` is a callable or ``"module:attribute.path"``."""
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def factory(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name`` (imported on first use); :class:`ConfigError` if none is."""
        if name not in self._factories:
            raise ConfigError(f"unknown {self.part} {name!r}: one of {', '.join(self.names())}")
        factory = self._factories[name]
        if isinstance(factory, str):
            module, _, path = factory.partition(":")
            loaded: Any = importlib.import_module(module)
            for attribute in path.split("."):
                loaded = getattr(loaded, attribute)
            self._factories[name] = factory = loaded
        return factory

    def create(self, config: PluginConfig, *args: Any) -> T:
        """The implementation ``config.type`` names, built from ``config`` (and ``args``)."""
        return self.factory(config.type)(config, *args)
