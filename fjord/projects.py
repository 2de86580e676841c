"""Projects: a directory tree on the shared filesystem with a fixed layout and a metadata record.

A project lives at ``<storage.root>/Projects/<name>/``::

    Resources/         raw landing data (and quarantine)
    FeatureStore/      feature groups
    TrainingDatasets/  materialised training data
    Experiments/       runs and trials
    Models/            exported models
    Logs/              run records, validation reports, Spark event logs
    Environments/      the project's Python environment specs, locks and packed archives
    project.json       name, created, owner, description

>>> from fjord.projects import create_project, get_project
>>> fraud = create_project("fraud", description="card fraud detection")  # doctest: +SKIP
>>> get_project("fraud").fs.uri("Resources")                              # doctest: +SKIP
'file:///home/me/.fjord/fs/Projects/fraud/Resources'
"""

from __future__ import annotations

import getpass
import re
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from fjord.errors import AlreadyExistsError, InvalidNameError, NotFoundError
from fjord.fs import SharedFS, shared_root

PROJECTS_DIR = "Projects"
METADATA_FILE = "project.json"
LAYOUT = (
    "Resources",
    "FeatureStore",
    "TrainingDatasets",
    "Experiments",
    "Models",
    "Logs",
    "Environments",
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Project(BaseModel):
    """A project's metadata record; :attr:`fs` is its directory on the shared filesystem."""

    name: str
    created: datetime
    owner: str
    description: str = ""
    root_uri: str = Field(description="URI of the project's directory")

    @property
    def fs(self) -> SharedFS:
        return SharedFS(self.root_uri)


def validate_name(name: str, what: str = "project") -> str:
    """Return ``name`` if it is a valid name (lowercase letter, then letters, digits, ``_``)."""
    if not _NAME.fullmatch(name or ""):
        raise InvalidNameError(
            f"invalid {what} name {name!r}: use a lowercase letter, then lowercase letters, digits or _ "
            "(at most 63 characters)"
        )
    return name


def _projects_fs() -> SharedFS:
    return shared_root().sub(PROJECTS_DIR)


def create_project(name: str, *, description: str = "", owner: str | None = None) -> Project:
    """Create project ``name`` with its layout, atomically: it appears whole or not at all."""
    validate_name(name)
    projects = _projects_fs()
    if projects.is_published(name):
        raise AlreadyExistsError(f"project {name!r} already exists")
    project = Project(
        name=name,
        created=datetime.now(UTC),
        owner=owner or getpass.getuser(),
        description=description,
        root_uri=projects.uri(name),
    )
    with projects.publish(name) as tree:
        for folder in LAYOUT:
            tree.makedirs(folder)
        tree.write_text(METADATA_FILE, project.model_dump_json(indent=2))
    return project


def get_project(name: str) -> Project:
    """The project called ``name``; :class:`NotFoundError` lists the ones that exist."""
    validate_name(name)
    projects = _projects_fs()
    if not projects.is_published(name):
        known = ", ".join(p.name for p in list_projects()) or "none yet"
        raise NotFoundError(
            f"unknown project {name!r} (projects: {known})",
            hint=f"create it with: fjord project create {name}",
        )
    record = Project.model_validate_json(projects.read_text(f"{name}/{METADATA_FILE}"))
    # The record stores where the project was created; the configured root wins if it moved.
    return record.model_copy(update={"root_uri": projects.uri(name)})


def ensure_project(name: str, *, description: str = "") -> Project:
    """The project called ``name``, created first if it does not exist (idempotent)."""
    try:
        return get_project(name)
    except NotFoundError:
        try:
            return create_project(name, description=description)
        except AlreadyExistsError:  # created meanwhile by another process
            return get_project(name)


def list_projects() -> list[Project]:
    """All projects, by name."""
    projects = _projects_fs()
    if not projects.exists():
        return []
    names = [n for n in projects.listdir() if projects.is_published(n)]
    return [get_project(n) for n in names]
