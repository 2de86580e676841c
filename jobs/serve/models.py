"""Which model versions the server holds: found on the filesystem, loaded, warmed up, swapped, labelled.

For each configured model the manager polls its ``base_path`` (a local path or any Fjord filesystem
URI: ``hdfs://``, ``s3://``) for numbered version directories and applies the version policy:

- a version is a candidate only when complete: ``saved_model.pb`` and the completion marker
  (``_SUCCESS``, which Fjord's publish writes last; ``--completion_marker=''`` accepts any directory);
- a new version is loaded on the manager's thread while the current one keeps serving, warmed up with
  ``assets.extra/tf_serving_warmup_requests`` when present (else a generated one-row request per
  signature), and only then made AVAILABLE; the versions the policy no longer wants are unloaded
  after that (TF Serving's availability-preserving policy);
- a version that fails to load or warm up ends in state END with its error, is logged, is not retried
  and never replaces a good one: the policy chooses among the versions that did not fail;
- a label points only at an AVAILABLE version; a label naming a version still loading keeps its old
  target until the new one is AVAILABLE.

A request's version is resolved under no lock: the manager swaps whole dictionaries, and a request
keeps the version it resolved alive until it is answered, however soon it is unloaded.
"""

from __future__ import annotations

import logging
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fjord.fs import SharedFS
from fjord.fs.backends import local_path
from jobs.serve.backends import PREDICT_METHOD, ModelBackend, open_backend, read_signature_defs, signatures_of
from jobs.serve.batching import Batcher, DirectRunner
from jobs.serve.config import BatchingParameters, ModelConfig
from jobs.serve.errors import Code, ServingError, invalid
from jobs.serve.metrics import Metrics
from jobs.serve.tensors import DTYPES

log = logging.getLogger("fjord.serve")

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
STATES = ("UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END")


@dataclass
class Loaded:
    """A version ready to answer: its signatures, its backend and how requests reach it."""

    model: str
    version: int
    path: Path
    signature_defs: dict[str, Any]
    backend: ModelBackend
    runner: DirectRunner | Batcher

    def submit(self, signature: str, inputs: dict[str, np.ndarray]) -> Future[dict[str, np.ndarray]]:
        return self.runner.submit(signature, inputs)


@dataclass
class VersionStatus:
    state: str
    error: tuple[Code, str] | None = None
    loaded: Loaded | None = None


@dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, VersionStatus] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)  # problems already logged, once each


class _Source:
    """A model's base path: list its version directories, get one as a local directory."""

    def __init__(self, base_path: str, cache: Path) -> None:
        self.base_path = base_path
        local = local_path(base_path) if "://" in base_path else base_path
        self.local = Path(local) if local is not None else None
        self.remote = None if self.local is not None else SharedFS(base_path)
        self.cache = cache

    def versions(self) -> dict[int, set[str]]:
        """Numbered version directories and the names inside each."""
        found: dict[int, set[str]] = {}
        if self.local is not None:
            if self.local.is_dir():
                for child in self.local.iterdir():
                    if child.name.isdigit() and child.is_dir():
                        found[int(child.name)] = {p.name for p in child.iterdir()}
            return found
        assert self.remote is not None
        if self.remote.exists():
            for name in self.remote.listdir(include_hidden=True):
                if name.isdigit():
                    found[int(name)] = set(self.remote.listdir(name, include_hidden=True))
        return found

    def fetch(self, version: int) -> Path:
        if self.local is not None:
            return self.local / str(version)
        assert self.remote is not None
        target = self.cache / str(version)
        if not target.exists():
            staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.cache))
            self.remote.download(str(version), staging)
            staging.rename(target)
        return target


class ModelManager:
    """The served models and their versions."""

    def __init__(
        self,
        *,
        backend: str = "auto",
        batching: BatchingParameters | None = None,
        threads: int = 4,
        completion_marker: str = "_SUCCESS",
        cache_dir: Path | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.backend_choice = backend
        self.batching = batching
        self.completion_marker = completion_marker
        self.metrics = metrics or Metrics()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="predict")
        self._cache = Path(cache_dir or tempfile.mkdtemp(prefix="fjord-serve-"))
        self._models: dict[str, _Model] = {}
        self._sources: dict[str, _Source] = {}
        self._lock = threading.Lock()  # one poll at a time (the poller thread, a reload request)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_change: Callable[[], None] | None = None

    # -- configuration ------------------------------------------------------------------------------

    def configure(self, configs: list[ModelConfig]) -> None:
        """Serve exactly ``configs`` from now on (models not named are unloaded), then poll once."""
        with self._lock:
            models = {}
            for config in configs:
                current = self._models.get(config.name)
                if current is None or current.config.base_path != config.base_path:
                    if current is not None:
                        self._unload_all(current)
                    current = _Model(config)
                    self._sources[config.name] = _Source(config.base_path, self._cache / config.name)
                    self._sources[config.name].cache.mkdir(parents=True, exist_ok=True)
                current.config = config
                models[config.name] = current
            for name, gone in self._models.items():
                if name not in models:
                    self._unload_all(gone)
            self._models = models
            self._poll_locked()

    def poll(self) -> None:
        """Look for new and removed versions of every model once, and act on them."""
        with self._lock:
            self._poll_locked()

    def start(self, poll_seconds: float) -> None:
        """Poll every ``poll_seconds`` on a background thread (0: never)."""
        if poll_seconds <= 0:
            return

        def loop() -> None:
            while not self._stop.wait(poll_seconds):
                try:
                    self.poll()
                except Exception:
                    log.exception("polling the model base paths failed; trying again in %s s", poll_seconds)

        self._thread = threading.Thread(target=loop, name="version-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for model in self._models.values():
                self._unload_all(model)
        self.pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._cache, ignore_errors=True)

    # -- the poll -----------------------------------------------------------------------------------

    def _report(self, model: _Model, key: str, message: str) -> None:
        if key not in model.reported:
            model.reported.add(key)
            log.error("model %s: %s", model.config.name, message)

    def _candidates(self, model: _Model) -> list[int]:
        found = []
        for version, names in self._sources[model.config.name].versions().items():
            status = model.versions.get(version)
            if status is not None and status.error is not None:
                continue  # failed once: not retried, never chosen over a good version
            if "saved_model.pb" not in names:
                self._report(model, f"{version}:pb", f"version {version} has no saved_model.pb; skipped")
                continue
            if self.completion_marker and self.completion_marker not in names:
                self._report(
                    model,
                    f"{version}:marker",
                    f"version {version} has no {self.completion_marker} yet; skipped",
                )
                continue
            found.append(version)
        return found

    def _poll_locked(self) -> None:
        changed = False
        for model in self._models.values():
            try:
                candidates = self._candidates(model)
            except Exception as exc:
                self._report(model, f"list:{exc}", f"cannot list {model.config.base_path}: {exc}")
                continue
            wanted = model.config.policy.choose(candidates)
            for version in sorted(wanted - self._available(model)):
                changed |= self._load(model, version)
            if wanted & self._available(model) or not wanted:
                for version in sorted(self._available(model) - wanted):
                    self._unload(model, version)
                    changed = True
            changed |= self._apply_labels(model)
        if changed and self.on_change is not None:
            self.on_change()

    @staticmethod
    def _available(model: _Model) -> set[int]:
        return {v for v, s in model.versions.items() if s.state == "AVAILABLE"}

    def _load(self, model: _Model, version: int) -> bool:
        name = model.config.name
        model.versions = {**model.versions, version: VersionStatus("LOADING")}
        started = time.monotonic()
        try:
            path = self._sources[name].fetch(version)
            defs = read_signature_defs(path)
            backend = open_backend(self.backend_choice, path, signatures_of(defs))
            runner: DirectRunner | Batcher = (
                Batcher(backend, self.batching, self.metrics, name)
                if self.batching is not None
                else DirectRunner(backend, self.pool)
            )
            loaded = Loaded(name, version, path, defs, backend, runner)
            warm_up(loaded)
        except Exception as exc:
            message = " ".join(str(exc).split())[:500] or type(exc).__name__
            model.versions = {**model.versions, version: VersionStatus("END", (Code.UNKNOWN, message))}
            log.error("model %s version %s failed to load and is skipped: %s", name, version, message)
            return True
        model.versions = {**model.versions, version: VersionStatus("AVAILABLE", loaded=loaded)}
        log.warning(
            "model %s version %s AVAILABLE (%s backend, %.1f s)", name, version, backend.name,
            time.monotonic() - started,
        )  # fmt: skip
        return True

    def _unload(self, model: _Model, version: int) -> None:
        status = model.versions[version]
        model.versions = {**model.versions, version: VersionStatus("END")}
        model.labels = {k: v for k, v in model.labels.items() if v != version}
        if status.loaded is not None:
            status.loaded.runner.stop()  # queued requests still run; new ones resolve another version
        log.warning("model %s version %s unloaded", model.config.name, version)

    def _unload_all(self, model: _Model) -> None:
        for version in sorted(self._available(model)):
            self._unload(model, version)

    def _apply_labels(self, model: _Model) -> bool:
        available = self._available(model)
        labels = {}
        for label, version in model.config.labels.items():
            if version in available:
                labels[label] = version
            elif label in model.labels and model.labels[label] in available:
                labels[label] = model.labels[label]  # keep the old target until the new one loads
                self._report(
                    model, f"label:{label}:{version}", f"label {label!r} waits for version {version}"
                )
        changed = labels != model.labels
        model.labels = labels
        return changed

    # -- requests -----------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Loaded:
        """The loaded version a request names (the latest AVAILABLE one by default)."""
        model = self._models.get(name)
        if version is not None and label is not None:
            raise invalid(
                f"Both model version ({version}) and model version label ({label}) cannot be supplied."
            )
        if label is not None:
            if model is None or label not in model.labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = model.labels[label]
        if model is not None:
            versions = model.versions
            if version is None:
                available = [v for v, s in versions.items() if s.loaded is not None]
                if available:
                    return versions[max(available)].loaded  # type: ignore[return-value]
            elif version in versions and versions[version].loaded is not None:
                return versions[version].loaded  # type: ignore[return-value]
        wanted = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        raise ServingError(Code.NOT_FOUND, f"Servable not found for request: {wanted}")

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[tuple[int, VersionStatus]]:
        """(version, status) of a model's versions, or of the one ``version`` or ``label`` names."""
        model = self._models.get(name)
        if label is not None:
            version = self.resolve(name, label=label).version
        if model is None or not model.versions:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        if version is not None:
            if version not in model.versions:
                raise ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {name}")
            return [(version, model.versions[version])]
        return sorted(model.versions.items())

    def labels(self, name: str) -> dict[str, int]:
        model = self._models.get(name)
        return dict(model.labels) if model else {}


def _warmup_requests(path: Path) -> list[Any]:
    """PredictRequests of the version's TF Serving warm-up file (a TFRecord of PredictionLogs)."""
    from tensorflow_serving.apis import prediction_log_pb2

    data = (path / WARMUP_FILE).read_bytes()
    requests, offset = [], 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        record = data[offset + 12 : offset + 12 + length]
        offset += 12 + length + 4
        entry = prediction_log_pb2.PredictionLog.FromString(record)
        if entry.HasField("predict_log"):
            requests.append(entry.predict_log.request)
    return requests


def _generated_inputs(loaded: Loaded, signature: str) -> dict[str, np.ndarray]:
    spec = loaded.backend.signatures[signature].inputs
    inputs = {}
    for name, tensor in spec.items():
        shape = [1] if tensor.shape is None else [1 if d < 0 else d for d in tensor.shape] or []
        dtype = DTYPES.get(tensor.dtype, np.float32)
        inputs[name] = np.full(shape, b"" if dtype is np.object_ else 0, dtype=dtype)
    return inputs


def warm_up(loaded: Loaded) -> None:
    """Run the version's warm-up requests (or a generated one-row request per predict signature)
    before it serves, so its first real request does not pay for tracing and allocation."""
    if (loaded.path / WARMUP_FILE).is_file():
        import tensorflow as tf

        for request in _warmup_requests(loaded.path):
            signature = request.model_spec.signature_name or "serving_default"
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            loaded.backend.run(signature, inputs)
        return
    for name, signature in loaded.backend.signatures.items():
        if signature.method_name == PREDICT_METHOD:
            loaded.backend.run(name, _generated_inputs(loaded, name))
