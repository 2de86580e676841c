"""``fjord services start|stop|status|logs|url [NAME...]``: the embedded stack's servers on loopback.

Addresses are printed with their passwords masked; ``fjord services url NAME`` prints one whole, for a
script that needs it (``FJORD_METADATA__URL=$(fjord services url postgres)``)."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from fjord.cli.output import console, print_json
from fjord.private import mask_urls

app = typer.Typer(
    help="The embedded servers: PostgreSQL, Redis, S3 (SeaweedFS), HDFS and Kafka, on loopback.",
    no_args_is_help=True,
)

NAMES = typer.Argument(None, help="Services (default: all): postgres, redis, s3, hdfs, kafka.")


@app.command()
def start(names: list[str] | None = NAMES) -> None:
    """Start the services that are not running (in dependency order); print every address."""
    from fjord.services import services

    for service in services(names):
        began = time.monotonic()
        address = service.start()
        console.print(f"{service.name:<9} {mask_urls(address)}  ({time.monotonic() - began:.1f} s)")


@app.command()
def stop(names: list[str] | None = NAMES) -> None:
    """Stop the services (the last started first); no process is left behind."""
    from fjord.services import services

    for service in reversed(services(names)):
        console.print(f"{service.name:<9} {'stopped' if service.stop() else 'not running'}")


@app.command()
def status(
    names: list[str] | None = NAMES,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Whether each service runs, its address, its processes and where it keeps its state."""
    from fjord.services import services

    statuses = [service.status() for service in services(names)]
    if as_json:
        print_json([{**s.__dict__, "address": s.address and mask_urls(s.address)} for s in statuses])
        return
    table = Table("service", "state", "address", "pids", "state dir")
    for s in statuses:
        state = "running" if s.running else (s.detail or "stopped")
        pids = ", ".join(f"{label} {pid}" for label, pid in s.pids.items())
        table.add_row(s.name, state, mask_urls(s.address or ""), pids, str(s.state_dir))
    console.print(table)


@app.command()
def logs(
    name: str = typer.Argument(..., help="postgres, redis, s3, hdfs or kafka."),
    lines: int = typer.Option(40, "--lines", "-n", min=1, help="How many lines of each log."),
) -> None:
    """The last lines of a service's logs."""
    from fjord.services import service

    for log in sorted(service(name).dir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        console.print(f"==> {log} <==")
        console.print("\n".join(text), markup=False)


@app.command()
def url(name: str = typer.Argument(..., help="postgres, redis, s3, hdfs or kafka.")) -> None:
    """The running service's address, password included (for scripts; the other commands mask it)."""
    from fjord.errors import ServiceError
    from fjord.services import service

    address = service(name).address()
    if address is None:
        raise ServiceError(f"{name} is not running", hint=f"fjord services start {name}")
    print(address)
