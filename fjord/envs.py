"""Per-project Python environments that extend the platform's own pinned packages.

A project's environment is specified by ``Environments/environment.yml`` (conda's format: ``name``,
``channels``, ``dependencies`` with a ``pip:`` section) or ``Environments/requirements.txt`` in the
project. Building it:

1. resolves the project's requirements *together with the platform's installed packages as
   constraints* (``uv pip compile -c``), so a project can add libraries but never move pyspark,
   TensorFlow or numpy: a conflict is an error naming the package;
2. creates a venv holding only the project's additions, layered over the platform's site-packages by
   a ``.pth`` file (the platform stays installed once, not once per project);
3. builds under a temporary name and renames it into place, keyed by a hash of the resolved inputs,
   so an unchanged spec is reused and an interrupted build leaves nothing a later run would pick up;
4. records the lock (exact versions, platform and additions) in the project's ``Environments/``:
   its hash is part of every run's provenance.

On a ``local[*]`` master Spark executors use the venv in place. For a cluster master
:func:`pack_environment` packs it with venv-pack into ``Environments/<key>.tar.gz`` and
:mod:`fjord.spark` ships it to every executor (``spark.archives=...#environment``). Executors run
Fjord's image, which carries the platform at the same path, so the archive carries the project's layer.

>>> env = build_environment(get_project("fraud"))      # doctest: +SKIP
>>> env.python                                          # doctest: +SKIP
PosixPath('/home/me/.fjord/envs/fraud/3f2a9c.../bin/python')
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import BaseModel

from fjord.config import get_settings
from fjord.errors import EnvironmentBuildError, NotFoundError
from fjord.locks import locked
from fjord.projects import Project

ENV_DIR = "Environments"
SPEC_FILES = ("environment.yml", "requirements.txt")
CURRENT_FILE = "current.json"
RECORD_FILE = ".fjord-env.json"
_PLATFORM_PTH = "_fjord_platform.pth"
log = logging.getLogger(__name__)
_SPECS_DIR = "specs"
_LOCKS_DIR = ".locks"  # one lock file per environment key
_CONDA_KEYS = {"name", "channels", "dependencies", "variables", "prefix"}
_COMMAND_TIMEOUT_S = 1800


class Environment(BaseModel):
    """A built project environment (the record kept beside it and in ``Environments/current.json``)."""

    project: str
    key: str
    path: Path
    spec_file: str
    requirements: list[str]
    additions: list[str]
    lock_hash: str
    platform_lock_hash: str
    builder: str
    python_version: str
    built_at: datetime
    archive_uri: str | None = None

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


# -- specs ----------------------------------------------------------------------------------------


def _conda_to_pip(dep: str) -> str:
    """``numpy=1.26`` (conda: any 1.26.x) becomes ``numpy==1.26.*``; other operators pass through."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*=\s*([^=<>!~\s]+)\s*", dep)
    if match:
        name, version = match.groups()
        return f"{name}=={version}" if version.count(".") >= 2 else f"{name}=={version}.*"
    return dep.strip()


def parse_spec(text: str, filename: str) -> list[str]:
    """The pip requirements a spec file asks for; :class:`EnvironmentBuildError` if it is malformed."""
    if filename.endswith((".yml", ".yaml")):
        return _parse_conda_yaml(text, filename)
    if filename.endswith(".txt"):
        lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
        return [line for line in lines if line]
    raise EnvironmentBuildError(f"{filename}: an environment spec is environment.yml or requirements.txt")


def _parse_conda_yaml(text: str, filename: str) -> list[str]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise EnvironmentBuildError(f"{filename}: malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise EnvironmentBuildError(f"{filename}: expected a mapping with 'dependencies'")
    unknown = set(data) - _CONDA_KEYS
    if unknown:
        raise EnvironmentBuildError(f"{filename}: unknown key {sorted(unknown)[0]!r}")
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise EnvironmentBuildError(f"{filename}: 'dependencies' must be a list")
    requirements: list[str] = []
    for dep in deps:
        if isinstance(dep, dict):
            if set(dep) != {"pip"} or not isinstance(dep["pip"], list):
                raise EnvironmentBuildError(f"{filename}: a mapping in 'dependencies' must be 'pip: [...]'")
            requirements.extend(str(p).strip() for p in dep["pip"])
        elif isinstance(dep, str):
            name = re.split(r"[=<>!~ ]", dep.strip(), maxsplit=1)[0]
            if name == "python":
                _check_python(dep, filename)
            elif name != "pip":
                requirements.append(_conda_to_pip(dep))
        else:
            raise EnvironmentBuildError(f"{filename}: dependency {dep!r} is neither a string nor 'pip:'")
    return requirements


def _check_python(dep: str, filename: str) -> None:
    """Refuse a python pin the platform's interpreter does not meet (conda's ``python=3.11`` means
    3.11.*; ``python>=3.10`` and the like are pip specifiers), compared as versions, not text."""
    wanted = dep.strip()[len("python") :].strip()
    if not wanted:
        return
    if wanted.startswith("=") and not wanted.startswith("=="):  # conda: python=3.11 is 3.11.*
        version = wanted[1:].strip()
        wanted = f"=={version}" if version.endswith(".*") or version.count(".") >= 2 else f"=={version}.*"
    try:
        specifier = SpecifierSet(wanted)
    except InvalidSpecifier:
        raise EnvironmentBuildError(f"{filename}: {dep!r} is not a valid python version pin") from None
    running = ".".join(str(n) for n in sys.version_info[:3])
    if Version(running) not in specifier:
        raise EnvironmentBuildError(
            f"{filename}: asks for python {wanted}, but the platform runs Python {running}",
            hint="a project environment extends the platform's interpreter; drop the python pin",
        )


@dataclass(frozen=True)
class Spec:
    """An environment spec: ``environment.yml`` or ``requirements.txt`` and its text."""

    filename: str
    text: str

    @property
    def requirements(self) -> list[str]:
        return parse_spec(self.text, self.filename)


def spec_from_file(filename: str, text: str) -> Spec:
    """A validated :class:`Spec` from a file's name and text (``*.yaml`` counts as environment.yml)."""
    name = Path(filename).name
    normalised = "environment.yml" if name.endswith((".yml", ".yaml")) else name
    if normalised not in SPEC_FILES:
        raise EnvironmentBuildError(f"{filename}: an environment spec is environment.yml or requirements.txt")
    spec = Spec(normalised, text)
    spec.requirements  # noqa: B018 -- parse now: a malformed spec fails before anything is built
    return spec


def read_project_spec(project: Project) -> Spec:
    """The project's stored spec (an empty requirements.txt if it has none)."""
    for name in SPEC_FILES:
        rel = f"{ENV_DIR}/{name}"
        if project.fs.exists(rel):
            return Spec(name, project.fs.read_text(rel))
    return Spec("requirements.txt", "")


def _store_spec(project: Project, spec: Spec) -> None:
    if read_project_spec(project) == spec:
        return
    for other in SPEC_FILES:
        if other != spec.filename:
            project.fs.rm(f"{ENV_DIR}/{other}")
    project.fs.write_text(f"{ENV_DIR}/{spec.filename}", spec.text)


# -- the platform ---------------------------------------------------------------------------------


def platform_pins() -> dict[str, str]:
    """Every distribution installed in the platform's interpreter, name -> exact version."""
    return dict(_platform_pins())


@functools.cache
def _platform_pins() -> tuple[tuple[str, str], ...]:
    # Read once per process: parsing every installed distribution's metadata takes ~0.8 s here,
    # and every run record asks for the platform's lock hash.
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "fjord":
            pins[_normalise(name)] = dist.version
    return tuple(sorted(pins.items()))


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def platform_lock_hash() -> str:
    """The hash of the platform's exact package set (the environment of runs with no project env)."""
    return _digest(platform_pins())


# -- building -------------------------------------------------------------------------------------


def _uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def _run(cmd: Sequence[str], what: str) -> str:
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise EnvironmentBuildError(f"{what}: timed out after {_COMMAND_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        raise EnvironmentBuildError(f"{what}: {_summarise(proc.stderr or proc.stdout)}")
    return proc.stdout


def _summarise(output: str) -> str:
    """uv's explanation, squeezed to one line (it names the conflicting packages)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("Using ")]
    text = " ".join(lines)
    return text[:600] + ("..." if len(text) > 600 else "")


def _choose_builder() -> str:
    wanted = get_settings().environments.builder
    if wanted == "auto":
        return "conda" if _conda_exe() else "uv"
    if wanted == "conda" and not _conda_exe():
        raise EnvironmentBuildError(
            "environments.builder is 'conda' but neither micromamba nor conda is on PATH"
        )
    return wanted


def _conda_exe() -> str | None:
    return shutil.which("micromamba") or shutil.which("conda")


def _resolve(requirements: list[str], pins: dict[str, str], workdir: Path) -> list[str]:
    """Resolve ``requirements`` against the platform's pins; the exact versions of the additions."""
    if not requirements:
        return []
    (workdir / "requirements.in").write_text("\n".join(requirements) + "\n")
    (workdir / "platform.txt").write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
    index = get_settings().environments.index_url
    out = _run(
        [
            _uv(),
            "pip",
            "compile",
            str(workdir / "requirements.in"),
            "--constraint",
            str(workdir / "platform.txt"),
            "--python",
            sys.executable,
            "--no-header",
            "--no-annotate",
            "--quiet",
            *(["--index-url", index] if index else []),
        ],
        "the environment does not resolve against the platform's packages",
    )
    resolved = [ln.strip() for ln in out.splitlines() if ln.strip() and not ln.startswith("#")]
    return [r for r in resolved if _pinned_name(r) not in pins]


def _pinned_name(requirement: str) -> str:
    return _normalise(re.split(r"[=<>!~ ;\[]", requirement, maxsplit=1)[0])


def _create_venv(target: Path, builder: str) -> None:
    if builder == "conda":
        exe = _conda_exe()
        assert exe is not None
        version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
        _run([exe, "create", "--yes", "--prefix", str(target), f"python={version}"], "conda create failed")
    else:
        _run(
            [_uv(), "venv", "--relocatable", "--quiet", "--python", sys.executable, str(target)],
            "cannot create the venv",
        )
    site_packages = next(target.glob("lib/python*/site-packages"))
    # Appended after the project's own site-packages: project additions first, then the platform.
    # site.addsitedir (not a bare path) so the platform's own .pth files (editable installs) apply.
    lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    (site_packages / _PLATFORM_PTH).write_text("\n".join(lines) + "\n")


def _install(target: Path, additions: list[str], workdir: Path) -> None:
    if not additions:
        return
    (workdir / "additions.txt").write_text("\n".join(additions) + "\n")
    index = get_settings().environments.index_url
    _run(
        [
            _uv(),
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--python",
            str(target / "bin" / "python"),
            "-r",
            str(workdir / "additions.txt"),
            *(["--index-url", index] if index else []),
        ],
        "installing the project's packages failed",
    )


def build_environment(project: Project, spec: Spec | None = None, *, upgrade: bool = False) -> Environment:
    """Build (or reuse) ``project``'s environment from ``spec`` (default: the project's stored spec).

    A spec already built against the same platform is reused without asking the package index;
    ``upgrade=True`` resolves it again (newer releases of unpinned requirements). On success a given
    ``spec`` becomes the project's spec; on failure (:class:`EnvironmentBuildError`, naming the
    problem) the project's spec and current environment are unchanged and no half-built environment
    is left behind.
    """
    spec = spec or read_project_spec(project)
    requirements = spec.requirements
    pins = platform_pins()
    platform_hash = _digest(pins)
    builder = _choose_builder()
    cache = _cache_dir(project)
    (cache / _SPECS_DIR).mkdir(parents=True, exist_ok=True)
    resolved = cache / _SPECS_DIR / f"{_digest([requirements, platform_hash, builder])}.json"
    env = None if upgrade else _built(cache, resolved)
    if env is None:
        with tempfile.TemporaryDirectory(prefix="resolve-", dir=cache) as tmp:
            additions = _resolve(requirements, pins, Path(tmp))
            key = _digest({"additions": additions, "platform": platform_hash, "builder": builder})
            env = _built(cache, cache / key / RECORD_FILE)
            if env is None:
                env = Environment(
                    project=project.name,
                    key=key,
                    path=cache / key,
                    spec_file=spec.filename,
                    requirements=requirements,
                    additions=additions,
                    lock_hash=_digest({"platform": pins, "additions": additions}),
                    platform_lock_hash=platform_hash,
                    builder=builder,
                    python_version=sys.version.split()[0],
                    built_at=datetime.now(UTC),
                )
                _build_venv(env, Path(tmp))
        _write_atomically(resolved, env.model_dump_json(indent=2))
    env = env.model_copy(update={"spec_file": spec.filename, "requirements": requirements})
    _store_spec(project, spec)
    _record(project, env, pins)
    return env


def _built(cache: Path, record: Path) -> Environment | None:
    """The finished environment ``record`` describes, if it is still there."""
    if not record.is_file():
        return None
    env = Environment.model_validate_json(record.read_text())
    return env if (cache / env.key / RECORD_FILE).is_file() else None


def _build_venv(env: Environment, workdir: Path) -> None:
    staging = workdir / "venv"
    _create_venv(staging, env.builder)
    _install(staging, env.additions, workdir)
    # The record goes in last: a directory without it is never taken for a finished build.
    (staging / RECORD_FILE).write_text(env.model_dump_json(indent=2))
    _rename_into_place(staging, env.path)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _rename_into_place(staging: Path, final: Path) -> None:
    """Move a finished build to ``final``, unless an identical build got there first (then ours goes).
    Under a lock per key: a concurrent build must never remove the winner's finished environment."""
    with locked(final.parent / _LOCKS_DIR / f"{final.name}.lock"):
        if (final / RECORD_FILE).is_file():  # an identical build finished first: theirs is as good
            shutil.rmtree(staging)
            return
        if final.exists():  # a leftover without a record (a build killed after the rename)
            shutil.rmtree(final)
        os.rename(staging, final)


def _cache_dir(project: Project) -> Path:
    cache_dir = get_settings().environments.cache_dir
    assert cache_dir is not None
    return Path(cache_dir) / project.name


def _record(project: Project, env: Environment, pins: dict[str, str]) -> None:
    lock = "".join(f"{n}=={v}\n" for n, v in pins.items()) + "".join(f"{a}\n" for a in env.additions)
    project.fs.write_text(f"{ENV_DIR}/{env.key}.lock.txt", lock)
    project.fs.write_text(f"{ENV_DIR}/{CURRENT_FILE}", env.model_dump_json(indent=2))


def install_packages(project: Project, packages: list[str]) -> Environment:
    """``pip install`` into the project's environment: the spec gains ``packages`` once they resolve."""
    spec = read_project_spec(project)
    requirements = spec.requirements
    new = [p for p in packages if p not in requirements]
    if spec.filename == "environment.yml":
        data = yaml.safe_load(spec.text) or {}
        deps = data.setdefault("dependencies", [])
        pip_section = next((d for d in deps if isinstance(d, dict) and "pip" in d), None)
        if pip_section is None:
            pip_section = {"pip": []}
            deps.append(pip_section)
        pip_section["pip"].extend(new)
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = "".join(f"{r}\n" for r in requirements + new)
    return build_environment(project, Spec(spec.filename, text))


def current_environment(project: Project) -> Environment:
    """The environment last built for ``project``."""
    rel = f"{ENV_DIR}/{CURRENT_FILE}"
    if not project.fs.exists(rel):
        raise NotFoundError(
            f"project {project.name!r} has no environment yet", hint=f"fjord env build {project.name}"
        )
    env = Environment.model_validate_json(project.fs.read_text(rel))
    if not (env.path / RECORD_FILE).is_file():
        raise NotFoundError(
            f"environment {env.key} of project {project.name!r} is not built on this machine",
            hint=f"fjord env build {project.name}",
        )
    return env


def environment_for_run(project: Project) -> Environment | None:
    """The environment a run of ``project`` uses: ``None`` when the project has none (the platform's
    own), else the recorded one, built on this host first when it is not here (a new worker, a
    wiped cache). A recorded environment never quietly becomes the platform's: the run would import
    other packages than its lineage names."""
    if not project.fs.exists(f"{ENV_DIR}/{CURRENT_FILE}"):
        return None
    try:
        return current_environment(project)
    except NotFoundError:
        log.info("project %s: its environment is not built on this host; building it", project.name)
        return build_environment(project)


def pack_environment(project: Project, env: Environment) -> str:
    """Pack ``env`` with venv-pack into the project's ``Environments/<key>.tar.gz``; its URI.

    Packs to a temporary file and moves it into place, so an interrupted pack leaves no archive.
    """
    rel = f"{ENV_DIR}/{env.key}.tar.gz"
    if not project.fs.exists(rel):
        import venv_pack

        with tempfile.TemporaryDirectory(prefix="pack-", dir=env.path.parent) as tmp:
            archive = Path(tmp) / f"{env.key}.tar.gz"
            try:
                venv_pack.pack(prefix=str(env.path), output=str(archive), verbose=False)
            except venv_pack.VenvPackException as exc:
                raise EnvironmentBuildError(f"cannot pack environment {env.key}: {exc}") from None
            project.fs.upload(str(archive), rel)
    uri = project.fs.uri(rel)
    if env.archive_uri != uri:
        env = env.model_copy(update={"archive_uri": uri})
        project.fs.write_text(f"{ENV_DIR}/{CURRENT_FILE}", env.model_dump_json(indent=2))
    return uri


def list_environments(project: Project) -> list[Environment]:
    """Every environment built for ``project`` on this machine, newest first."""
    cache = _cache_dir(project)
    records = [p / RECORD_FILE for p in cache.iterdir() if p.name != _SPECS_DIR] if cache.is_dir() else []
    envs = [Environment.model_validate_json(r.read_text()) for r in records if r.is_file()]
    return sorted(envs, key=lambda e: e.built_at, reverse=True)
