"""One plug-in mechanism: typed, discriminated configs chosen by ``type``, and lazy registries."""

from __future__ import annotations

import pytest

from featurestore.engines import JOIN_ENGINES, join_engine
from featurestore.online import ONLINE_STORES
from fjord.config import (
    RedisOnlineStoreConfig,
    SQLiteOnlineStoreConfig,
    get_settings,
    load_settings,
    reset_settings,
)
from fjord.errors import ConfigError
from fjord.fs import FILESYSTEMS
from fjord.plugins import PluginConfig, Registry


def test_a_plugin_is_chosen_by_type_with_its_own_options(tmp_path) -> None:
    config = tmp_path / "fjord.yaml"
    config.write_text("featurestore:\n  online_store:\n    type: redis\n    url: redis://cache:6379/0\n")
    settings = load_settings(config)
    assert settings.featurestore.online_store == RedisOnlineStoreConfig(url="redis://cache:6379/0")
    config.write_text("featurestore:\n  online_store: sqlite\n  join_engine: spark\n")
    settings = load_settings(config)
    assert isinstance(settings.featurestore.online_store, SQLiteOnlineStoreConfig)
    assert settings.featurestore.online_store.path == settings.home / "online.db"  # filled in
    assert settings.featurestore.join_engine.type == "spark"


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("featurestore:\n  online_store: mongo\n", "expected tags: 'sqlite', 'redis'"),
        ("featurestore:\n  online_store:\n    type: sqlite\n    url: x\n", "online_store.sqlite.url"),
        ("featurestore:\n  online_store:\n    pth: /x\n", "pth"),  # no type: the default's options
    ],
)
def test_a_wrong_type_or_option_fails_when_the_settings_load(tmp_path, yaml, message) -> None:
    config = tmp_path / "fjord.yaml"
    config.write_text(yaml)
    with pytest.raises(ConfigError, match=message):
        load_settings(config)


def test_the_variable_form_names_the_type(monkeypatch) -> None:
    monkeypatch.setenv("FJORD_FEATURESTORE__ONLINE_STORE", "redis")
    reset_settings()
    assert get_settings().featurestore.online_store == RedisOnlineStoreConfig()
    monkeypatch.setenv("FJORD_FEATURESTORE__JOIN_ENGINE", "duckdb")
    reset_settings()
    assert join_engine().name == "duckdb"


def test_every_part_uses_one_registry_and_loads_implementations_lazily() -> None:
    assert ONLINE_STORES.names() == ["redis", "sqlite"]
    assert JOIN_ENGINES.names() == ["duckdb", "spark"]
    assert {"file", "hdfs", "s3"} <= set(FILESYSTEMS.names())
    with pytest.raises(ConfigError, match="unknown join engine 'polars': one of duckdb, spark"):
        join_engine("polars")

    class EchoConfig(PluginConfig):
        type: str = "echo"
        text: str = "hi"

    parts: Registry[str] = Registry("echo part")
    parts.register("echo", "json:dumps")  # imported on first use
    assert parts.factory("echo").__name__ == "dumps"
    parts.register("upper", lambda config: config.text.upper())
    assert parts.create(EchoConfig(type="upper")) == "HI"
