"""``fjord project create|list|show``."""

from __future__ import annotations

import typer
from rich.table import Table

from fjord.cli.output import console, print_json
from fjord.projects import LAYOUT, create_project, get_project, list_projects

app = typer.Typer(
    help="Create and inspect projects (a directory tree on the shared filesystem).", no_args_is_help=True
)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Project name: lowercase letters, digits, _."),
    description: str = typer.Option("", "--description", "-d", help="What the project is for."),
    owner: str | None = typer.Option(None, help="Owner (default: the current user)."),
) -> None:
    """Create a project with its fixed layout."""
    project = create_project(name, description=description, owner=owner)
    console.print(f"created project {project.name} at {project.root_uri}")
    console.print("  " + "  ".join(f"{d}/" for d in LAYOUT))


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List projects."""
    projects = list_projects()
    if as_json:
        print_json([p.model_dump(mode="json") for p in projects])
        return
    if not projects:
        console.print("no projects yet: fjord project create NAME")
        return
    table = Table("name", "owner", "created", "description")
    for p in projects:
        table.add_row(p.name, p.owner, f"{p.created:%Y-%m-%d %H:%M}", p.description)
    console.print(table)


@app.command("show")
def show(name: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show a project's metadata and layout."""
    project = get_project(name)
    if as_json:
        print_json(project.model_dump(mode="json"))
        return
    console.print(f"{project.name}  {project.description}")
    console.print(f"  owner    {project.owner}\n  created  {project.created:%Y-%m-%d %H:%M:%S %Z}")
    console.print(f"  root     {project.root_uri}")
    for folder in LAYOUT:
        entries = project.fs.listdir(folder) if project.fs.exists(folder) else []
        console.print(f"  {folder + '/':<18} {len(entries)} entries")
