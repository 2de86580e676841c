"""The serving API, in the shape of HopsML's ``hops.serving``: servings of a project, their server,
predictions, and the Kafka topic their inference log goes to.

>>> from jobs.serve import serving
>>> serving.create_or_update("fraud", 3, project="fraud")          # doctest: +SKIP
>>> serving.start(project="fraud")                                 # doctest: +SKIP
'http://127.0.0.1:8501'
>>> serving.predict("fraud", {"instances": [{...}]}, project="fraud")  # doctest: +SKIP
>>> serving.get_kafka_topic("fraud", project="fraud")              # doctest: +SKIP
'fraud_inference_log'

A project's servings are two files under ``Models/serving/`` on the shared filesystem:
``models.config``, the ModelServerConfig that this server, or tensorflow_model_server on a cluster,
reads (specific versions, labels ``stable``/``canary``/``shadow``), ``routing.json`` beside it (the
canary's share of the traffic: jobs/serve/routing.py), and ``servings.json``, what Fjord keeps beside
them (inference logging mode, topic, feature view). Each is replaced atomically. One server
process per project serves them all (``python -m jobs.serve.server --model_config_file=...``,
re-reading the file every second); its pid, ports and log are under ``$FJORD_HOME/serving/<project>/``.
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fjord.config import get_settings
from fjord.errors import FjordError, NotFoundError
from fjord.fs.backends import local_path
from fjord.locks import locked
from fjord.private import write_private
from fjord.projects import Project, get_project
from fjord.services.process import (
    alive,
    free_port,
    log_says,
    log_size,
    log_tail,
    port_open,
    spawn,
    stop_group,
    wait_until,
)  # fmt: skip
from jobs.serve.config import ModelConfig, VersionPolicy, read_model_config, write_model_config
from jobs.serve.inference_log import MODES, default_topic
from jobs.serve.input_rules import InputRules
from jobs.serve.passthrough import check_names
from jobs.serve.routing import CANARY, SHADOW, STABLE, Split, write_splits

SERVING_DIR = "Models/serving"
CONFIG_FILE = f"{SERVING_DIR}/models.config"
SERVINGS_FILE = f"{SERVING_DIR}/servings.json"
ROUTING_FILE = f"{SERVING_DIR}/routing.json"
LABELS = (STABLE, CANARY, SHADOW)
START_TIMEOUT_S = 180.0


class ServingError(FjordError):
    """A serving cannot be created, started or asked as requested."""

    exit_code = 2


@dataclass
class Serving:
    """One served model of a project."""

    name: str
    model_name: str
    labels: dict[str, int]  # stable (and canary, shadow) -> version
    inference_logging: str = "ALL"
    kafka_topic: str | None = None
    feature_view: str | None = None  # VIEW[/VERSION] of the project, looked up for each request
    transformer: str | None = None  # module:function turning looked-up rows into model inputs
    history: list[int] = field(default_factory=list)  # versions labelled stable, oldest first
    input_rules: str | None = None  # an ETL suite whose row-wise rules requests keep (input_rules.py)
    input_rules_mode: str = "reject"  # reject (a 400) or flag (served, the violations logged)
    passthrough: list[str] = field(default_factory=list)  # request fields logged, not fed to the model
    canary_percent: float = 0.0  # the share of label-less calls the canary answers
    canary_key: str | None = None  # the request field that keeps a caller on one side (None: per call)
    canary_since: float | None = None  # when the canary label got its version (epoch seconds)

    @property
    def topic(self) -> str:
        return self.kafka_topic or default_topic(self.name)


def _project(project: str | None) -> Project:
    name = project or get_settings().project
    if not name:
        raise ServingError("no project given", hint="pass project=... or set FJORD_PROJECT")
    return get_project(name)


def _read(project: Project) -> dict[str, Serving]:
    if not project.fs.exists(SERVINGS_FILE):
        return {}
    known = {f.name for f in fields(Serving)}  # a field a newer Fjord wrote is left to it
    return {
        k: Serving(**{f: x for f, x in v.items() if f in known})
        for k, v in json.loads(project.fs.read_text(SERVINGS_FILE)).items()
    }


def serving_uri(project: str, name: str) -> str:
    """The URI a deployment of serving ``name`` is recorded under in the lineage (version: the served one)."""
    return get_project(project).fs.uri(f"{SERVING_DIR}/{name}")


def _base_path(project: Project, model_name: str) -> str:
    uri = project.fs.uri(f"Models/{model_name}")
    return local_path(uri) or uri  # a plain path where the disk is local: what TF Serving reads too


def _write(project: Project, servings: dict[str, Serving]) -> None:
    """servings.json, then models.config (the file the server watches), each replaced atomically."""
    project.fs.write_text(SERVINGS_FILE, json.dumps({k: asdict(v) for k, v in servings.items()}, indent=2))
    _write_config(project, servings)


def _write_config(project: Project, servings: dict[str, Serving]) -> None:
    """models.config for ``servings``. On a remote root the server here reads a local copy, and the
    root's own file is for a server elsewhere (tensorflow_model_server on a cluster)."""
    models = [
        ModelConfig(
            s.name,
            _base_path(project, s.model_name),
            VersionPolicy("specific", specific=tuple(sorted(set(s.labels.values())))),
            dict(s.labels),
        )
        for s in servings.values()
    ]
    config = config_path(project)
    splits = {s.name: Split(s.canary_percent, s.canary_key) for s in servings.values() if s.canary_percent}
    write_splits(config.with_name("routing.json"), splits)  # first: a new canary starts at its share
    write_model_config(config, models)
    if not project.fs.backend.local:
        project.fs.write_text(ROUTING_FILE, config.with_name("routing.json").read_text())
        project.fs.write_text(CONFIG_FILE, config.read_text())


def config_path(project: Project) -> Path:
    """Where the server reads the project's models.config: in place on a local disk, else a local copy."""
    uri = project.fs.uri(CONFIG_FILE)
    local = local_path(uri)
    return Path(local) if local else _state_dir(project) / "models.config"


def create_or_update(
    name: str,
    model_version: int,
    *,
    project: str | None = None,
    model_name: str | None = None,
    label: str = STABLE,
    inference_logging: str = "ALL",
    kafka_topic: str | None = None,
    feature_view: str | None = None,
    transformer: str | None = None,
    input_rules: str | None = None,
    input_rules_mode: str = "reject",
    passthrough: list[str] | None = None,
    canary_percent: float | None = None,
    canary_key: str | None = None,
) -> Serving:
    """Serve ``model_version`` of ``model_name`` (default: ``name``) under ``label``. A version is
    served only if it was published whole (``Models/<model>/<version>/_SUCCESS``). A ``canary``
    answers ``canary_percent`` % of the label-less calls, kept apart by the request field
    ``canary_key`` (jobs/serve/routing.py); a ``shadow`` scores every call and answers none."""
    proj = _project(project)
    model_name = model_name or name
    if label not in LABELS:
        raise ServingError(f"label {label!r}: one of {', '.join(LABELS)}")
    if inference_logging not in MODES:
        raise ServingError(f"inference_logging {inference_logging!r}: one of {', '.join(MODES)}")
    if input_rules is not None:
        InputRules.from_flag(input_rules, input_rules_mode)  # a bad suite or mode fails here, not at start
    if passthrough is not None:
        check_names(passthrough, "passthrough")
    if canary_percent is not None and (label != CANARY or not 0 <= canary_percent <= 100):
        raise ServingError("canary_percent: a number from 0 to 100, for the canary label")
    if canary_key is not None:
        check_names([canary_key], "canary_key")
    if not proj.fs.is_published(f"Models/{model_name}/{model_version}"):
        raise NotFoundError(
            f"model {model_name} has no published version {model_version} in project {proj.name}"
        )
    with _servings_lock(proj):
        updated = _update(proj, name, model_name, model_version, label, inference_logging, kafka_topic,
                          feature_view, transformer)  # fmt: skip
        if input_rules is not None or passthrough is not None or canary_percent is not None:
            if input_rules is not None:
                updated.input_rules, updated.input_rules_mode = input_rules, input_rules_mode
            if passthrough is not None:
                updated.passthrough = list(passthrough)
            if canary_percent is not None:
                updated.canary_percent, updated.canary_key = float(canary_percent), canary_key
            servings = _read(proj)
            servings[name] = updated
            _write(proj, servings)
        return updated


def _servings_lock(project: Project) -> Any:
    """One read-modify-write of servings.json at a time (two deploys at once would lose one)."""
    return locked(_state_dir(project) / "servings.lock")


def _update(
    proj: Project,
    name: str,
    model_name: str,
    model_version: int,
    label: str,
    inference_logging: str,
    kafka_topic: str | None,
    feature_view: str | None,
    transformer: str | None,
) -> Serving:
    servings = _read(proj)
    current = servings.get(name)
    labels = dict(current.labels) if current else {}
    labels[label] = model_version
    history = list(current.history) if current else []
    if label == STABLE and (not history or history[-1] != model_version):
        history.append(model_version)
    for other in (CANARY, SHADOW):
        if label != other and labels.get(other) == model_version:
            labels.pop(other)  # a promoted canary (or shadow) is no longer one
    servings[name] = Serving(
        name, model_name, labels, inference_logging, kafka_topic, feature_view, transformer, history,
        current.input_rules if current else None, current.input_rules_mode if current else "reject",
        list(current.passthrough) if current else [],
        current.canary_percent if current and CANARY in labels else 0.0,
        current.canary_key if current and CANARY in labels else None,
        _canary_since(current, labels),
    )  # fmt: skip
    _write(proj, servings)
    return servings[name]


def _canary_since(current: Serving | None, labels: dict[str, int]) -> float | None:
    """When the canary of ``labels`` started: kept while its version stays, now for a new one."""
    if CANARY not in labels:
        return None
    if current and current.labels.get(CANARY) == labels[CANARY] and current.canary_since:
        return current.canary_since
    return time.time()


def set_labels(
    name: str, labels: dict[str, int], *, project: str | None = None, history: list[int] | None = None
) -> Serving:
    """Point a serving's labels at other versions (a rollback, or undoing a failed deployment)."""
    proj = _project(project)
    with _servings_lock(proj):
        servings = _read(proj)
        serving = get_serving(name, project=proj.name)
        serving.canary_since = _canary_since(serving, labels)
        serving.labels = dict(labels)
        if CANARY not in serving.labels:
            serving.canary_percent, serving.canary_key = 0.0, None
        if history is not None:
            serving.history = list(history)
        servings[name] = serving
        _write(proj, servings)
    return serving


def restore(name: str, previous: Serving | None, *, project: str | None = None) -> None:
    """Put a serving back as it was before a deployment that failed: the whole record (labels,
    history, feature view, transformer, logging), or no serving at all if there was none."""
    proj = _project(project)
    with _servings_lock(proj):
        servings = _read(proj)
        if previous is None:
            servings.pop(name, None)
        else:
            servings[name] = previous
        _write(proj, servings)


# -- a deploy's journal: what to put back if the deploy dies mid-way ---------------------------------


def _journal(name: str) -> str:
    return f"{SERVING_DIR}/deploying/{name}.json"


def begin_deploy(name: str, previous: Serving | None, *, project: str | None = None) -> None:
    """Record, before a deploy changes serving ``name``, how it was: a deploy killed before
    :func:`end_deploy` is undone by the next one (:func:`recover_deploy`)."""
    import os
    import socket

    proj = _project(project)
    record = {"previous": asdict(previous) if previous else None, "host": socket.gethostname(),
              "pid": os.getpid(), "started": time.time()}  # fmt: skip
    proj.fs.write_text(_journal(name), json.dumps(record))


def end_deploy(name: str, *, project: str | None = None) -> None:
    """The deploy of ``name`` finished (deployed, or put back after a failure)."""
    proj = _project(project)
    if proj.fs.exists(_journal(name)):
        proj.fs.rm(_journal(name))


def recover_deploy(name: str, *, project: str | None = None, stale_after_s: float = 3_600) -> bool:
    """Put serving ``name`` back as it was before a deploy that died mid-way (its writer's pid is gone
    on this host, or its journal is older than ``stale_after_s``); whether there was one."""
    import socket

    proj = _project(project)
    if not proj.fs.exists(_journal(name)):
        return False
    record = json.loads(proj.fs.read_text(_journal(name)))
    mine = record["host"] == socket.gethostname()
    if (mine and alive(record["pid"])) or (not mine and time.time() - record["started"] < stale_after_s):
        return False  # a deploy in progress
    previous = record["previous"]
    restore(name, Serving(**previous) if previous else None, project=proj.name)
    end_deploy(name, project=proj.name)
    return True


def get_serving(name: str, *, project: str | None = None) -> Serving:
    proj = _project(project)
    servings = _read(proj)
    if name not in servings:
        raise NotFoundError(
            f"no serving {name!r} in project {proj.name}", hint="fjord model deploy creates one"
        )
    return servings[name]


def get_servings(*, project: str | None = None) -> list[Serving]:
    return list(_read(_project(project)).values())


def exists(name: str, *, project: str | None = None) -> bool:
    return name in _read(_project(project))


def get_kafka_topic(name: str, *, project: str | None = None) -> str:
    """The topic the serving's inference log goes to."""
    return get_serving(name, project=project).topic


# -- the project's server -------------------------------------------------------------------------


def _state_dir(project: Project | str) -> Path:
    path = get_settings().home / "serving" / (project if isinstance(project, str) else project.name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _token_file(project: str | None) -> Path:
    return _state_dir(_project(project)) / "token"


def token(*, project: str | None = None) -> str | None:
    """The project's model server token, if the project has one (then every REST and gRPC call but
    the metrics needs ``Authorization: Bearer <token>``)."""
    path = _token_file(project)
    return path.read_text().strip() if path.exists() else None


def new_token(*, project: str | None = None) -> str:
    """Give the project's model server a (new) token, kept mode 600; a running server takes it when
    it starts again."""
    value = secrets.token_urlsafe(32)
    write_private(_token_file(project), value)
    return value


def remove_token(*, project: str | None = None) -> bool:
    """Open the project's model server to any local caller again (at its next start)."""
    path = _token_file(project)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def auth_headers(*, project: str | None = None) -> dict[str, str]:
    """The headers a call to the project's model server carries: its token, when it has one."""
    value = token(project=project)
    return {"Authorization": f"Bearer {value}"} if value else {}


def server_state(project: str | None = None) -> dict[str, Any] | None:
    """The running server's record (pid, ports, URL, log), or None."""
    state = _state_dir(_project(project)) / "state.json"
    if not state.exists():
        return None
    record: dict[str, Any] = json.loads(state.read_text())
    return record if alive(record["pid"]) else None


def running_projects() -> list[str]:
    """The projects whose model server of this home runs (found by its state file in FJORD_HOME)."""
    root = get_settings().home / "serving"
    found = []
    for state in sorted(root.glob("*/state.json")) if root.exists() else []:
        record = json.loads(state.read_text())
        if alive(record["pid"]):
            found.append(state.parent.name)
    return found


def start(*, project: str | None = None, batching: bool = False) -> str:
    """Start the project's model server unless it runs; its REST URL. ``batching`` pays off for the
    SavedModel backend under concurrent load; the TFLite backend answers faster without it
    (docs/benchmarks.md)."""
    proj = _project(project)
    with locked(_state_dir(proj) / "start.lock"):  # one server, however many ask at once
        return _start(proj, batching)


def _input_rule_flags(servings: dict[str, Serving]) -> list[str]:
    """The server's --input_rules flags: one server serves the project, so one suite (the first
    serving's that names one)."""
    ruled = [s for s in servings.values() if s.input_rules]
    if not ruled:
        return []
    return [f"--input_rules={ruled[0].input_rules}", f"--input_rules_mode={ruled[0].input_rules_mode}"]


def _start(proj: Project, batching: bool) -> str:
    running = server_state(proj.name)
    if running:  # perhaps still starting, in another process: wait until it answers
        port = int(str(running["url"]).rsplit(":", 1)[1])
        log = Path(running["log"])
        wait_until(lambda: port_open(port), what="the model server", pid=running["pid"], log=log,
                   timeout=START_TIMEOUT_S)  # fmt: skip
        return str(running["url"])
    servings = _read(proj)
    if not servings:
        raise ServingError(f"project {proj.name} has no serving", hint="fjord model deploy creates one")
    directory = _state_dir(proj)
    config = config_path(proj)
    if not proj.fs.backend.local:  # the server reads a local copy, made from servings.json
        _write_config(proj, servings)
    batching_file = directory / "batching.config"
    batching_file.write_text(
        "max_batch_size { value: 256 }\nbatch_timeout_micros { value: 1000 }\n"
        "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 64 }\n"
    )
    monitoring = directory / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    rest_port, grpc_port = free_port(8501), free_port(8500)
    modes = {s.inference_logging for s in servings.values()}
    mode = "ALL" if "ALL" in modes or len(modes) > 1 else modes.pop()
    views = [s for s in servings.values() if s.feature_view]
    argv = [
        sys.executable, "-m", "jobs.serve.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
        f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
        "--completion_marker=_SUCCESS",  # a version loads once its publish finished (Models/.../_SUCCESS)
        f"--monitoring_config_file={monitoring}", f"--inference_logging={mode}",
        *(["--enable_batching", f"--batching_parameters_file={batching_file}"] if batching else []),
        *([f"--feature_view={proj.name}/{views[0].feature_view}"] if views else []),
        *([f"--transformer={views[0].transformer}"] if views and views[0].transformer else []),
        *_input_rule_flags(servings),
        *[f"--passthrough={s.name}={','.join(s.passthrough)}" for s in servings.values() if s.passthrough],
        *([f"--auth_token_file={_token_file(proj.name)}"] if _token_file(proj.name).exists() else []),
        f"--routing_file={config.with_name('routing.json')}",
        *[f"--kafka_topic={s.name}={s.kafka_topic}" for s in servings.values() if s.kafka_topic],
    ]  # fmt: skip
    log = directory / "server.log"
    offset = log_size(log)
    pid = spawn(argv, log, cwd=Path(__file__).resolve().parents[2])
    url = f"http://127.0.0.1:{rest_port}"
    record = {
        "pid": pid, "url": url, "grpc": f"127.0.0.1:{grpc_port}", "log": str(log), "config": str(config),
        "started": time.time(),
    }  # fmt: skip
    # Recorded at once, not once it answers: whoever stops the stack meanwhile finds it (no orphan).
    state = directory / "state.json"
    state.write_text(json.dumps(record))
    # Its own line, then the port: another start may have picked the same free port a moment earlier,
    # and its server answering is not this one's (this one then fails to bind and exits).
    bound = f"REST http://127.0.0.1:{rest_port}"
    try:
        wait_until(
            lambda: log_says(log, bound, offset) and port_open(rest_port), what="the model server", pid=pid,
            log=log, timeout=START_TIMEOUT_S,
        )  # fmt: skip
    except BaseException:
        stop_group(pid, signal.SIGKILL, timeout=10)
        state.unlink(missing_ok=True)
        raise
    return url


def stop(*, project: str | None = None) -> bool:
    """Stop the project's model server; False if it was not running. Found by its state file in
    FJORD_HOME alone: a stop works whatever storage root (and so whatever projects) is configured."""
    name = project or get_settings().project
    if not name:
        raise ServingError("no project given", hint="pass project=... or set FJORD_PROJECT")
    state = _state_dir(name) / "state.json"
    if not state.exists():
        return False
    record: dict[str, Any] = json.loads(state.read_text())
    state.unlink(missing_ok=True)
    return alive(record["pid"]) and stop_group(record["pid"], signal.SIGTERM)


def url(*, project: str | None = None) -> str:
    record = server_state(project)
    if record is None:
        raise ServingError("the model server is not running", hint="serving.start() or fjord model start")
    return str(record["url"])


def _get(path: str, project: str | None) -> tuple[int, Any]:
    import httpx

    answer = httpx.get(f"{url(project=project)}{path}", timeout=30, headers=auth_headers(project=project))
    return answer.status_code, answer.json()


def get_status(name: str, *, project: str | None = None) -> dict[str, Any]:
    """The serving's state: ``Running`` with each version's TF Serving state, or ``Stopped``."""
    serving = get_serving(name, project=project)
    status: dict[str, Any] = {"name": name, "model": serving.model_name, "labels": serving.labels,
                              "topic": serving.topic, "state": "Stopped", "versions": {}}  # fmt: skip
    if server_state(project) is None:
        return status
    code, body = _get(f"/v1/models/{name}", project)
    status["state"] = "Running"
    if code == 200:
        status["versions"] = {int(v["version"]): v["state"] for v in body["model_version_status"]}
    return status


def wait_available(name: str, version: int, *, project: str | None = None, timeout_s: float = 300) -> None:
    """Wait until the server has ``version`` of serving ``name`` AVAILABLE; a load error fails at once."""
    record = server_state(project)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server_state(project) is None:
            raise ServingError(
                f"the model server stopped: {log_tail(Path(record['log']), 2) if record else ''}"
            )
        code, body = _get(f"/v1/models/{name}/versions/{version}", project)
        entry = body["model_version_status"][0] if code == 200 else {}
        if entry.get("state") == "AVAILABLE":
            return
        failed = entry.get("status", {}).get("error_code", "OK") != "OK"
        if failed:  # END with an error; END alone is a version unloaded before, about to load again
            message = entry["status"]["error_message"]
            raise ServingError(f"serving {name}: version {version} failed to load: {message}")
        time.sleep(0.5)
    raise ServingError(f"serving {name}: version {version} not AVAILABLE after {timeout_s:.0f} s")


def predict(
    name: str, data: dict[str, Any], *, project: str | None = None, version: int | None = None,
    label: str | None = None, verb: str = "predict",
) -> dict[str, Any]:  # fmt: skip
    """POST ``data`` (TF Serving's JSON: ``instances`` or ``inputs``) to the serving; the answer."""
    import httpx

    where = f"/versions/{version}" if version is not None else f"/labels/{label}" if label else ""
    answer = httpx.post(
        f"{url(project=project)}/v1/models/{name}{where}:{verb}", json=data, timeout=60,
        headers=auth_headers(project=project),
    )  # fmt: skip
    body = answer.json()
    if answer.status_code != 200:
        raise ServingError(f"serving {name} answered {answer.status_code}: {body.get('error')}")
    return dict(body)


def read_config(*, project: str | None = None) -> list[ModelConfig]:
    """The models.config the server reads."""
    return read_model_config(config_path(_project(project)))
