"""Run records and provenance: what every stage writes about a run, and the walk back through them.

A :class:`RunRecord` says which run (id, stage, project), when, how it ended, with which parameters,
which artifacts it read and wrote (URI + version or commit id), which code (git commit or content
hash) and which environment (lock hash). Records are JSON files under the project's ``Logs/runs/``
on the shared filesystem (the source of truth) and rows in the metadata database (the index that
answers "which run produced this artifact?"). Walking that question backwards from a served
prediction's model leads to the training dataset, the feature commits and the raw landing batch.

>>> with track_run(project, "etl", params={"batch": "2026-11-23"}, code=[__file__]) as run:  # doctest: +SKIP
...     run.add_input(landing_uri, version=checksum)
...     run.add_output(feature_group_uri, version=str(commit_id))
>>> lineage_graph(feature_group_uri, str(commit_id))                                         # doctest: +SKIP
"""

from __future__ import annotations

import getpass
import hashlib
import socket
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Column, ForeignKey, Index, MetaData, String, Table, Text, insert, select, text
from sqlalchemy.engine import Connection, Engine

from fjord.errors import AlreadyExistsError, NotFoundError
from fjord.metadata import ensure_tables, metadata_engine
from fjord.projects import Project, get_project

RUNS_DIR = "Logs/runs"
# A run's params key saying why a later run must not reuse its result (fjord/stepcache.py), when
# what it read cannot be named as an input with a version.
NOT_REUSABLE = "not_reusable"
Status = Literal["running", "succeeded", "failed"]


class Artifact(BaseModel):
    """A versioned thing a run read or wrote: a URI plus its version (commit id, checksum, model version)."""

    uri: str
    version: str | None = None
    kind: str | None = Field(default=None, description="dataset, feature_group, training_dataset, model, ...")


class RunRecord(BaseModel):
    """The common record of one run of one stage."""

    run_id: str
    project: str
    stage: str
    status: Status = "running"
    started_at: datetime
    ended_at: datetime | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[Artifact] = Field(default_factory=list)
    outputs: list[Artifact] = Field(default_factory=list)
    code_version: str
    env_lock_hash: str
    error: str | None = None
    host: str = Field(default_factory=socket.gethostname)
    user: str = Field(default_factory=getpass.getuser)
    parent_run_id: str | None = None
    # The job's result as its orchestrator reads it (URIs, versions, its summary), recorded when the
    # job returned: a run whose record holds it is complete, and a retried task reuses it.
    result: dict[str, Any] | None = None
    # What the run depended on besides the data it read (fjord/stepcache.py): a later run with the
    # same fingerprint and unchanged inputs reuses this one's result.
    fingerprint: str | None = None
    reused_from: str | None = None  # this run did no work: it returned that run's result

    def add_input(self, uri: str, version: str | None = None, kind: str | None = None) -> None:
        self.inputs.append(Artifact(uri=uri, version=version, kind=kind))

    def add_output(self, uri: str, version: str | None = None, kind: str | None = None) -> None:
        self.outputs.append(Artifact(uri=uri, version=version, kind=kind))


def new_run_id(stage: str) -> str:
    """A sortable, unique run id: ``<stage>-<UTC time>-<random>``."""
    return f"{stage}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


# -- code and environment versions ----------------------------------------------------------------


def code_version(paths: Iterable[str | Path]) -> str:
    """``git:<commit>`` if ``paths`` are committed and unchanged in a git work tree, else
    ``sha256:<hash>`` of their contents (directories: every ``*.py`` file under them)."""
    files = sorted(_code_files(paths))
    if not files:
        return "unknown"
    commit = _clean_git_commit(files)
    if commit:
        return f"git:{commit}"
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.name).encode())
        digest.update(file.read_bytes())
    return f"sha256:{digest.hexdigest()[:16]}"


def _code_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw).resolve()
        if path.is_dir():
            yield from (p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.is_file():
            yield path


def _clean_git_commit(files: list[Path]) -> str | None:
    cwd = files[0].parent

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--", *map(str, files))
    except OSError:  # no git
        return None
    if head.returncode != 0 or status.returncode != 0 or status.stdout.strip():
        return None
    return head.stdout.strip()


def env_lock_hash(project: Project | None) -> str:
    """The lock hash of ``project``'s environment, or of the platform's when it has none."""
    from fjord.envs import environment_for_run, platform_lock_hash

    env = environment_for_run(project) if project is not None else None
    return env.lock_hash if env is not None else platform_lock_hash()


# -- storing --------------------------------------------------------------------------------------

_schema = MetaData()
SCHEMA = _schema  # what `fjord metadata migrate` copies
_runs = Table(
    "lineage_runs",
    _schema,
    Column("run_id", String(128), primary_key=True),
    Column("project", String(64), nullable=False),
    Column("stage", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", String(40), nullable=False),
    Column("record_uri", Text, nullable=False),
    Column("record", Text, nullable=False),
    Column("parent_run_id", String(128), index=True),
)
_artifacts = Table(
    "lineage_artifacts",
    _schema,
    Column("run_id", String(128), ForeignKey("lineage_runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("role", String(8), nullable=False),
    Column("uri", Text, nullable=False),
    Column("version", String(256), nullable=False),
    Index("ix_lineage_artifacts_lookup", "role", "uri", "version"),
    Index("ix_lineage_artifacts_run", "run_id", "role"),
)


def lineage_engine() -> Engine:
    """The metadata database's engine, with the lineage tables created."""
    engine = metadata_engine()
    ensure_tables(_schema, engine)
    return engine


def run_uri(project: Project, run_id: str) -> str:
    """Where ``run_id``'s record file lives."""
    return project.fs.uri(f"{RUNS_DIR}/{run_id}.json")


def write_run_file(project: Project, record: RunRecord) -> str:
    """Write ``record``'s file to the project's ``Logs/runs/``; its URI."""
    project.fs.write_text(f"{RUNS_DIR}/{record.run_id}.json", record.model_dump_json(indent=2))
    return run_uri(project, record.run_id)


def index_run(conn: Connection, project: Project, record: RunRecord) -> None:
    """Index ``record`` in the metadata database within ``conn``'s transaction (rewriting replaces
    it): how a commit point records its run in the same transaction as what it commits."""
    rows = [("in", a) for a in record.inputs] + [("out", a) for a in record.outputs]
    conn.execute(_runs.delete().where(_runs.c.run_id == record.run_id))
    conn.execute(_artifacts.delete().where(_artifacts.c.run_id == record.run_id))
    conn.execute(
        insert(_runs).values(
            run_id=record.run_id,
            project=record.project,
            stage=record.stage,
            status=record.status,
            started_at=record.started_at.isoformat(),
            record_uri=run_uri(project, record.run_id),
            record=record.model_dump_json(),
            parent_run_id=record.parent_run_id,
        )
    )
    if rows:
        conn.execute(
            insert(_artifacts),
            [
                {"run_id": record.run_id, "role": r, "uri": a.uri.rstrip("/"), "version": a.version or ""}
                for r, a in rows
            ],
        )


def save_run(project: Project, record: RunRecord) -> str:
    """Write ``record`` to the project's ``Logs/runs/`` and index it; its URI. Rewriting replaces it."""
    uri = write_run_file(project, record)
    with lineage_engine().begin() as conn:
        index_run(conn, project, record)
    return uri


def new_record(
    project: Project,
    stage: str,
    *,
    params: dict[str, Any] | None = None,
    code: Iterable[str | Path] = (),
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> RunRecord:
    """A ``running`` record of a new run of ``stage`` (not saved)."""
    return RunRecord(
        run_id=run_id or new_run_id(stage),
        project=project.name,
        stage=stage,
        started_at=datetime.now(UTC),
        params=params or {},
        code_version=code_version(code),
        env_lock_hash=env_lock_hash(project),
        parent_run_id=parent_run_id,
    )


@contextmanager
def track_run(
    project: Project,
    stage: str,
    *,
    params: dict[str, Any] | None = None,
    code: Iterable[str | Path] = (),
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> Iterator[RunRecord]:
    """Record a run of ``stage``: saved as ``running`` at once, then ``succeeded`` or ``failed``.

    A failure records the error's one-line message and re-raises. A given ``run_id`` may name an
    earlier try of the same stage in the same project (an Airflow task's retry), never another run:
    the run of another stage or project keeps its record (AlreadyExistsError).
    """
    if run_id is not None:
        _check_reuse(project, stage, run_id)
    record = new_record(project, stage, params=params, code=code, run_id=run_id, parent_run_id=parent_run_id)
    save_run(project, record)
    try:
        yield record
    except BaseException as exc:
        record.status, record.error = "failed", " ".join(str(exc).split()) or type(exc).__name__
        raise
    else:
        record.status = "succeeded"
    finally:
        record.ended_at = datetime.now(UTC)
        save_run(project, record)


def record_result(run_id: str, result: dict[str, Any]) -> None:
    """Mark the succeeded run ``run_id`` complete with its job's ``result`` (one write of its record)."""
    record = get_run(run_id)
    record.result = result
    save_run(get_project(record.project), record)


def _check_reuse(project: Project, stage: str, run_id: str) -> None:
    try:
        earlier = get_run(run_id)
    except NotFoundError:
        return
    if (earlier.project, earlier.stage) != (project.name, stage):
        raise AlreadyExistsError(
            f"run id {run_id!r} names a {earlier.stage} run of project {earlier.project}; its record is kept",
            hint="give this run an id of its own (or none: one is made)",
        )


def get_run(run_id: str) -> RunRecord:
    with lineage_engine().connect() as conn:
        row = conn.execute(select(_runs.c.record).where(_runs.c.run_id == run_id)).first()
    if row is None:
        raise NotFoundError(f"unknown run {run_id!r}")
    return RunRecord.model_validate_json(row.record)


def list_runs(project: str | None = None, stage: str | None = None, limit: int = 50) -> list[RunRecord]:
    """The newest runs first, optionally of one project and stage."""
    query = select(_runs.c.record).order_by(_runs.c.started_at.desc()).limit(limit)
    if project:
        query = query.where(_runs.c.project == project)
    if stage:
        query = query.where(_runs.c.stage == stage)
    with lineage_engine().connect() as conn:
        return [RunRecord.model_validate_json(r.record) for r in conn.execute(query)]


def producer_of(uri: str, version: str | None = None) -> RunRecord | None:
    """The newest successful run that wrote ``uri`` (at ``version``, if given)."""
    query = (
        select(_runs.c.record)
        .join(_artifacts, _artifacts.c.run_id == _runs.c.run_id)
        .where(_artifacts.c.role == "out", _artifacts.c.uri == uri.rstrip("/"), _runs.c.status == "succeeded")
        .order_by(_runs.c.started_at.desc())
        .limit(1)
    )
    if version is not None:
        query = query.where(_artifacts.c.version == version)
    with lineage_engine().connect() as conn:
        row = conn.execute(query).first()
    return RunRecord.model_validate_json(row.record) if row else None


def runs_with_fingerprint(project: str, fingerprint: str, limit: int = 20) -> list[RunRecord]:
    """The newest runs of ``project`` whose record holds ``fingerprint`` (fjord/stepcache.py)."""
    needle = f'"fingerprint":"{fingerprint}"'  # as model_dump_json writes it
    query = (
        select(_runs.c.record)
        .where(_runs.c.project == project, _runs.c.record.contains(needle, autoescape=True))
        .order_by(_runs.c.started_at.desc())
        .limit(limit)
    )
    with lineage_engine().connect() as conn:
        return [RunRecord.model_validate_json(r.record) for r in conn.execute(query)]


def newest_versions(uris: list[str]) -> dict[str, int]:
    """Per URI, the highest numeric version a succeeded run wrote of it (URIs never written, or
    written only with other versions, are left out)."""
    wanted = {u.rstrip("/") for u in uris}
    if not wanted:
        return {}
    query = (
        select(_artifacts.c.uri, _artifacts.c.version)
        .join(_runs, _artifacts.c.run_id == _runs.c.run_id)
        .where(_artifacts.c.role == "out", _artifacts.c.uri.in_(wanted), _runs.c.status == "succeeded")
        .distinct()
    )
    newest: dict[str, int] = {}
    with lineage_engine().connect() as conn:
        for uri, version in conn.execute(query):
            if version.isdigit():
                newest[uri] = max(newest.get(uri, -1), int(version))
    return newest


# -- walking back ---------------------------------------------------------------------------------

# Every artifact reachable backwards from a start, through succeeded producing runs, in one recursive
# query (SQLite and PostgreSQL): UNION keeps each (uri, version) once, so the walk visits every
# artifact once however many runs share it, and stops on cycles. Then the runs that produced them.
# CROSS JOIN fixes SQLite's join order (it honours it; PostgreSQL plans freely): the current row of
# ``reach`` first, then index lookups; left to itself SQLite scans every output per step.
_WALK = text(
    """
    WITH RECURSIVE reach(uri, version) AS (
        SELECT CAST(:uri AS TEXT), CAST(:version AS VARCHAR(256))
        UNION
        SELECT i.uri, i.version
        FROM reach r
        CROSS JOIN lineage_artifacts o
        CROSS JOIN lineage_runs p
        CROSS JOIN lineage_artifacts i
        WHERE o.role = 'out' AND o.uri = r.uri AND o.version = r.version
          AND p.run_id = o.run_id AND p.status = 'succeeded'
          AND i.run_id = o.run_id AND i.role = 'in'
    )
    SELECT o.uri, o.version, p.run_id, p.started_at, p.record
    FROM reach r
    CROSS JOIN lineage_artifacts o
    CROSS JOIN lineage_runs p
    WHERE o.role = 'out' AND o.uri = r.uri AND o.version = r.version
      AND p.run_id = o.run_id AND p.status = 'succeeded'
    """
)


@dataclass(eq=False)
class LineageNode:
    """An artifact, the run that produced it (None for raw inputs) and the nodes of that run's inputs.

    Nodes form a graph: an artifact that several runs read (a feature group commit every later batch
    builds on) is one node, shared by all of them.
    """

    artifact: Artifact
    run: RunRecord | None = None
    inputs: list[LineageNode] = field(default_factory=list, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return _key(self.artifact.uri, self.artifact.version)


def _key(uri: str, version: str | None) -> tuple[str, str]:
    return uri.rstrip("/"), version or ""


def lineage_graph(uri: str, version: str | None = None) -> LineageNode:
    """The provenance graph of ``uri`` (at ``version``; without one, of the newest version a run wrote):
    who produced it, from what, back to the raw data. Each artifact and run appears once, and the
    whole history is walked (no depth limit) in one query."""
    if version is None:
        newest = producer_of(uri)
        if newest is not None:
            version = next(a.version for a in newest.outputs if _key(a.uri, None)[0] == uri.rstrip("/"))
    start = _key(uri, version)
    producers: dict[tuple[str, str], tuple[str, str]] = {}  # artifact -> (started_at, run_id) of the newest
    records: dict[str, str] = {}
    with lineage_engine().connect() as conn:
        for row in conn.execute(_WALK, {"uri": start[0], "version": start[1]}):
            records[row.run_id] = row.record
            key = (row.uri, row.version)
            if key not in producers or (row.started_at, row.run_id) > producers[key]:
                producers[key] = (row.started_at, row.run_id)
    runs = {run_id: RunRecord.model_validate_json(records[run_id]) for _, run_id in producers.values()}
    nodes: dict[tuple[str, str], LineageNode] = {}

    def node(artifact: Artifact) -> LineageNode:
        key = _key(artifact.uri, artifact.version)
        if key not in nodes:
            nodes[key] = LineageNode(artifact)
        return nodes[key]

    root = node(Artifact(uri=uri, version=version))
    for key, (_, run_id) in producers.items():
        made = nodes.get(key) or node(Artifact(uri=key[0], version=key[1] or None))
        made.run = runs[run_id]
        made.inputs = [node(a) for a in made.run.inputs]
    return root


def walk(root: LineageNode) -> Iterator[LineageNode]:
    """Every node of ``root``'s graph once, ``root`` first, depth first."""
    seen: set[tuple[str, str]] = set()
    stack = [root]
    while stack:
        current = stack.pop()
        if current.key in seen:
            continue
        seen.add(current.key)
        yield current
        stack.extend(reversed(current.inputs))


def raw_sources(root: LineageNode) -> list[Artifact]:
    """The artifacts of ``root``'s graph that no recorded run produced (the raw data), each once."""
    return [n.artifact for n in walk(root) if n.run is None]


def child_runs(run_id: str) -> list[RunRecord]:
    """The runs started on behalf of ``run_id`` (its ``parent_run_id``), oldest first."""
    query = select(_runs.c.record).where(_runs.c.parent_run_id == run_id).order_by(_runs.c.started_at)
    with lineage_engine().connect() as conn:
        return [RunRecord.model_validate_json(r.record) for r in conn.execute(query)]
