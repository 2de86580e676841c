"""``fjord env build|install|show|list|pack``: per-project Python environments."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fjord.cli.output import console, print_json
from fjord.envs import (
    Environment,
    build_environment,
    current_environment,
    install_packages,
    list_environments,
    pack_environment,
    spec_from_file,
)
from fjord.errors import EnvironmentBuildError
from fjord.projects import get_project

app = typer.Typer(
    help="Per-project Python environments that extend the platform's pinned packages.", no_args_is_help=True
)


def _summary(env: Environment) -> None:
    console.print(f"environment {env.key} of project {env.project} ({env.builder})")
    console.print(f"  python     {env.python}")
    console.print(f"  lock hash  {env.lock_hash}  (platform {env.platform_lock_hash})")
    console.print(f"  additions  {', '.join(env.additions) or 'none: the platform packages only'}")
    if env.archive_uri:
        console.print(f"  archive    {env.archive_uri}")


@app.command("build")
def build(
    project: str,
    file: Path | None = typer.Option(
        None, "--file", "-f", help="environment.yml or requirements.txt to make the project's spec first."
    ),
    pack: bool = typer.Option(False, "--pack", help="Also pack it for shipping to cluster executors."),
    upgrade: bool = typer.Option(
        False, "--upgrade", help="Resolve again even if this spec was built before."
    ),
) -> None:
    """Build (or reuse) the project's environment from its spec (the spec changes only on success)."""
    proj = get_project(project)
    spec = None
    if file is not None:
        if not file.is_file():
            raise EnvironmentBuildError(f"{file}: no such file")
        spec = spec_from_file(file.name, file.read_text())
    with console.status("resolving against the platform's packages and building..."):
        env = build_environment(proj, spec, upgrade=upgrade)
        if pack:
            env = env.model_copy(update={"archive_uri": pack_environment(proj, env)})
    _summary(env)


@app.command("install")
def install(
    project: str, packages: list[str] = typer.Argument(..., help="Requirements, as pip takes them.")
) -> None:
    """pip-install packages into the project's environment (and add them to its spec)."""
    proj = get_project(project)
    with console.status(f"installing {' '.join(packages)}..."):
        env = install_packages(proj, packages)
    _summary(env)


@app.command("pack")
def pack(project: str) -> None:
    """Pack the project's environment into Environments/<key>.tar.gz for cluster executors."""
    proj = get_project(project)
    with console.status("packing..."):
        uri = pack_environment(proj, current_environment(proj))
    console.print(uri)


@app.command("show")
def show(project: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the project's current environment."""
    env = current_environment(get_project(project))
    if as_json:
        print_json(env.model_dump(mode="json"))
    else:
        _summary(env)


@app.command("list")
def list_(project: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the environments built for a project on this machine."""
    envs = list_environments(get_project(project))
    if as_json:
        print_json([e.model_dump(mode="json") for e in envs])
        return
    table = Table("key", "built", "lock hash", "additions")
    for env in envs:
        table.add_row(env.key, f"{env.built_at:%Y-%m-%d %H:%M}", env.lock_hash, ", ".join(env.additions))
    console.print(table if envs else f"no environments built for {project} yet: fjord env build {project}")
