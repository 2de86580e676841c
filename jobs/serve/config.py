"""The server's configuration: tensorflow_model_server's config files, read with protobuf's text format.

- ``--model_config_file``: a ``ModelServerConfig`` (``tensorflow_serving/config/model_server_config.proto``,
  from tensorflow-serving-api): several models, each with ``base_path``, ``model_version_policy``
  (``latest``/``all``/``specific``) and ``version_labels``;
- ``--batching_parameters_file``: a ``BatchingParameters`` (``max_batch_size``, ``batch_timeout_micros``,
  ``max_enqueued_batches``, ``num_batch_threads``, ``allowed_batch_sizes``);
- ``--monitoring_config_file``: a ``MonitoringConfig`` (``prometheus_config { enable path }``).

tensorflow-serving-api does not ship the last two protos, so their descriptors are built here with
the same field names and numbers, and parsed with the same text-format parser: a file that
tensorflow_model_server reads is read here unchanged, and a typo is refused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fjord.errors import ConfigError


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model to serve: the latest ``n``, all, or ``specific`` ones."""

    kind: str = "latest"  # latest | all | specific
    latest: int = 1
    specific: tuple[int, ...] = ()

    def choose(self, available: list[int]) -> set[int]:
        if self.kind == "all":
            return set(available)
        if self.kind == "specific":
            return set(self.specific) & set(available)
        return set(sorted(available)[-self.latest :]) if available else set()


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()


def _text_proto(path: Path, message: Any, what: str) -> Any:
    from google.protobuf import text_format

    try:
        return text_format.Parse(path.read_text(), message)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    except text_format.ParseError as exc:
        raise ConfigError(f"{path}: not a valid {what}: {exc}") from None


def read_model_config(path: Path) -> list[ModelConfig]:
    """The models of a ``ModelServerConfig`` text file; :class:`ConfigError` naming what is wrong."""
    from tensorflow_serving.config import model_server_config_pb2

    config = _text_proto(path, model_server_config_pb2.ModelServerConfig(), "ModelServerConfig")
    models = []
    for model in config.model_config_list.config:
        if not model.name or not model.base_path:
            raise ConfigError(f"{path}: every model needs a name and a base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{path}: model {model.name}: platform {model.model_platform!r} is not served")
        choice = model.model_version_policy.WhichOneof("policy_choice")
        if choice == "all":
            policy = VersionPolicy("all")
        elif choice == "specific":
            versions = tuple(model.model_version_policy.specific.versions)
            if not versions:
                raise ConfigError(f"{path}: model {model.name}: a specific policy needs versions")
            policy = VersionPolicy("specific", specific=versions)
        else:
            latest = model.model_version_policy.latest.num_versions if choice == "latest" else 1
            policy = VersionPolicy("latest", latest=max(latest, 1))
        models.append(ModelConfig(model.name, model.base_path, policy, dict(model.version_labels)))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: a model name appears twice")
    return models


def write_model_config(path: Path, models: list[ModelConfig]) -> None:
    """Write ``models`` as a ModelServerConfig text file, atomically (a reader sees the old file or
    the new one): what a deployment hands tensorflow_model_server or this server."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for model in models:
        entry = config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = model.name, model.base_path, "tensorflow"
        policy = entry.model_version_policy
        if model.policy.kind == "all":
            policy.all.SetInParent()
        elif model.policy.kind == "specific":
            policy.specific.versions.extend(model.policy.specific)
        else:
            policy.latest.num_versions = model.policy.latest
        for label, version in sorted(model.labels.items()):
            entry.version_labels[label] = version
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text_format.MessageToString(config))
    staging.replace(path)


_PROTOS: dict[str, Any] = {}


def _messages() -> dict[str, Any]:
    """BatchingParameters and MonitoringConfig, as tensorflow_serving declares them."""
    if _PROTOS:
        return _PROTOS
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    fd = descriptor_pb2.FileDescriptorProto(
        name="fjord_serving_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    fd.dependency.append("google/protobuf/wrappers.proto")
    f = descriptor_pb2.FieldDescriptorProto
    batching = fd.message_type.add(name="BatchingParameters")
    for number, (name, kind) in enumerate(
        [
            ("max_batch_size", "Int64Value"),
            ("batch_timeout_micros", "Int64Value"),
            ("max_enqueued_batches", "Int64Value"),
            ("num_batch_threads", "Int64Value"),
            ("thread_pool_name", "StringValue"),
        ],
        start=1,
    ):
        batching.field.add(
            name=name, number=number, type=f.TYPE_MESSAGE, type_name=f".google.protobuf.{kind}"
        )
    batching.field.add(name="allowed_batch_sizes", number=6, type=f.TYPE_INT64, label=f.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=f.TYPE_BOOL)
    batching.field.add(name="enable_large_batch_splitting", number=8, type=f.TYPE_BOOL)
    prometheus = fd.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=f.TYPE_BOOL)
    prometheus.field.add(name="path", number=2, type=f.TYPE_STRING)
    monitoring = fd.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=f.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    pool.Add(fd)
    for name in ("BatchingParameters", "MonitoringConfig"):
        _PROTOS[name] = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
    return _PROTOS


def read_batching_parameters(path: Path | None) -> BatchingParameters:
    """The ``--batching_parameters_file`` (TF Serving's defaults for what it leaves out)."""
    if path is None:
        return BatchingParameters()
    message = _text_proto(path, _messages()["BatchingParameters"](), "BatchingParameters")
    defaults = BatchingParameters()

    def value(name: str) -> int:
        return int(getattr(message, name).value) if message.HasField(name) else getattr(defaults, name)

    params = BatchingParameters(
        max_batch_size=value("max_batch_size"),
        batch_timeout_micros=value("batch_timeout_micros"),
        max_enqueued_batches=value("max_enqueued_batches"),
        num_batch_threads=value("num_batch_threads"),
        allowed_batch_sizes=tuple(message.allowed_batch_sizes),
    )
    if params.max_batch_size < 1 or params.num_batch_threads < 1 or params.max_enqueued_batches < 1:
        raise ConfigError(f"{path}: max_batch_size, num_batch_threads and max_enqueued_batches must be >= 1")
    sizes = params.allowed_batch_sizes
    if sizes and (list(sizes) != sorted(sizes) or sizes[-1] != params.max_batch_size):
        raise ConfigError(
            f"{path}: allowed_batch_sizes must increase and end with max_batch_size ({params.max_batch_size})"
        )
    return params


def read_monitoring_path(path: Path | None) -> str | None:
    """The Prometheus path a ``--monitoring_config_file`` enables (None: metrics off)."""
    if path is None:
        return None
    message = _text_proto(path, _messages()["MonitoringConfig"](), "MonitoringConfig")
    config = message.prometheus_config
    if not config.enable:
        return None
    return config.path or "/monitoring/prometheus/metrics"
