"""Don't redo what is already done: a step whose inputs, code, environment and arguments are those of
a succeeded earlier run reuses that run's result instead of running again.

A step's **fingerprint** (:func:`fingerprint`) is its stage, its arguments (not the run ids), a hash
of the code it runs (every source file of the stage's package, of the core and of the feature store)
and the project environment's lock hash. A succeeded run records its fingerprint (:func:`remember`).
A new run of a step may reuse the newest such run of the same fingerprint (:func:`reusable`) when
every artifact that run read is still current:

- a raw file (a landing batch's): the same SHA-256 now;
- a versioned artifact (a feature group's commit, a training dataset, a model version): no newer
  version of it was written since, or the newer one is this run's own output (the ETL reads the
  store's history and then adds to it).

An input without a numeric version, and a run that says it is not reusable (``params`` key
:data:`~fjord.lineage.NOT_REUSABLE`, with why), make it not reusable: a miss runs the step, and a
wrong hit is the one thing this must never do. The ETL records the commit of the store's history it
read, so a batch published since (one dated earlier changes a later one's windows) invalidates the
later one's reuse; a batch that read no history at all is never reused. Only stages whose output is
a function of those inputs are cached (``Stage.cacheable``): the ETL, the training dataset and
training. Batch scoring follows the champion alias, which may move back to an older version; the
gate and the deployment decide on the live champion and serving. They run every time (they are
quick, and a deploy of the version already serving changes nothing).

A reuse is a run record of its own (``reused_from`` names the run whose result it returns, with its
inputs and outputs), so the lineage says what happened; its summary line starts with ``reused``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fjord.errors import NotFoundError
from fjord.lineage import (
    NOT_REUSABLE,
    RunRecord,
    env_lock_hash,
    get_run,
    newest_versions,
    runs_with_fingerprint,
    save_run,
)
from fjord.pipeline import STAGES
from fjord.projects import Project, get_project

REPO = Path(__file__).resolve().parents[1]
_SOURCES = (".py", ".json", ".yaml", ".yml", ".sql")
RUN_IDS = ("run_id", "parent_run_id")


def cacheable(stage: str) -> bool:
    return stage in STAGES and STAGES[stage].cacheable


def code_hash(stage: str, repo: Path = REPO) -> str:
    """A hash of every source file (Python, and the suites and settings beside it) of ``stage``'s
    package, the core and the feature store under ``repo``: any change to them is new code."""
    package = repo / Path(*STAGES[stage].module.split(".")[:-1])
    digest = hashlib.sha256()
    for root in (package, repo / "fjord", repo / "featurestore"):
        for path in sorted(p for p in root.rglob("*") if p.suffix in _SOURCES and p.is_file()):
            if "__pycache__" in path.parts:
                continue
            digest.update(path.relative_to(repo).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return f"sha256:{digest.hexdigest()[:24]}"


def fingerprint(project: Project, stage: str, args: dict[str, Any]) -> str:
    """What a run of ``stage`` with ``args`` depends on, besides the data it reads (module doc)."""
    return fingerprint_of(stage, args, code_hash(stage), env_lock_hash(project))


def fingerprint_of(stage: str, args: dict[str, Any], code: str, environment: str) -> str:
    """The fingerprint of those four. Arguments count as the job's command line gets them (a DAG's
    rendered "4" and the CLI's 4 are one argument); the run ids and unset ones do not count."""
    given = {
        k: ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
        for k, v in sorted(args.items())
        if k not in RUN_IDS and v is not None
    }
    document = {"stage": stage, "args": given, "code": code, "environment": environment}
    return "sha256:" + hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def look_up(
    project: Project, stage: str, args: dict[str, Any], *, cache: bool, run_id: str, parent_run_id: str | None
) -> tuple[str | None, dict[str, Any] | None]:
    """What a task or an in-process step asks before it runs ``stage``: (its fingerprint, or None
    for a stage that is not cached; the reused result under ``run_id``, or None: run it, then
    :func:`remember` the fingerprint). ``cache`` false runs it whatever was done before."""
    key = fingerprint(project, stage, args) if cacheable(stage) else None
    earlier = reusable(project, stage, key) if key and cache else None
    if key is None or earlier is None:
        return key, None
    return key, reuse(project, earlier, run_id=run_id, parent_run_id=parent_run_id, key=key)


def remember(run_id: str, key: str, result: dict[str, Any] | None = None) -> None:
    """Record ``key`` as the fingerprint of the succeeded run ``run_id`` (and its ``result``, when
    the job was called in-process: its command line records it itself)."""
    try:
        record = get_run(run_id)
    except NotFoundError:  # a job that keeps no run record
        return
    if record.status != "succeeded":
        return
    record.fingerprint = key
    if record.result is None:
        record.result = result
    save_run(get_project(record.project), record)


def reusable(project: Project, stage: str, key: str) -> RunRecord | None:
    """The newest succeeded, complete run of ``stage`` with fingerprint ``key`` whose inputs are all
    still current (module doc), or None."""
    for record in runs_with_fingerprint(project.name, key):
        if record.fingerprint == key and record.status == "succeeded" and record.result is not None:
            fresh = NOT_REUSABLE not in record.params and _current(project, record)
            return record if fresh else None  # only the newest match counts
    return None


def reuse(
    project: Project, earlier: RunRecord, *, run_id: str, parent_run_id: str | None, key: str
) -> dict[str, Any]:
    """Record the run ``run_id`` as a reuse of ``earlier`` (its inputs, outputs and result); the
    result, its summary saying so."""
    source = earlier.reused_from or earlier.run_id  # a reuse of a reuse names the run that did the work
    result = dict(earlier.result or {})
    said = _said(source)
    result["summary"] = said + str(result.get("summary", "")).removeprefix(said)
    result["reused_from"] = source
    if "run_id" in result:
        result["run_id"] = run_id  # this run's record, which names the run that did the work
    now = datetime.now(UTC)
    record = earlier.model_copy(
        update={
            "run_id": run_id,
            "parent_run_id": parent_run_id,
            "started_at": now,
            "ended_at": now,
            "reused_from": source,
            "fingerprint": key,
            "result": result,
        }
    )
    save_run(project, record)
    return result


# -- pieces ---------------------------------------------------------------------------------------------


def _said(source: str) -> str:
    return f"reused {source} (inputs, code and arguments unchanged): "


def _current(project: Project, record: RunRecord) -> bool:
    own = {(a.uri.rstrip("/"), a.version) for a in record.outputs}
    versioned = [a for a in record.inputs if a.kind != "raw"]
    newest = newest_versions([a.uri for a in versioned])
    for artifact in record.inputs:
        if artifact.kind == "raw":
            if not _same_file(project, artifact.uri, artifact.version):
                return False
            continue
        if artifact.version is None or not artifact.version.isdigit():
            return False  # nothing says what "newer" is: not reusable
        latest = newest.get(artifact.uri.rstrip("/"))
        superseded = latest is not None and latest > int(artifact.version)
        if superseded and (artifact.uri.rstrip("/"), str(latest)) not in own:
            return False  # a newer version written since, by another run
    return True


def _same_file(project: Project, uri: str, version: str | None) -> bool:
    base = project.fs.uri("").rstrip("/") + "/"
    if version is None or not uri.startswith(base):
        return False
    rel = uri[len(base) :]
    try:
        return project.fs.checksum(rel) == version
    except OSError:  # gone, or unreadable: not the file the run read
        return False
