"""``fjord kafka topics|create|tail``: what flows through the configured Kafka cluster."""

from __future__ import annotations

import sys

import typer
from rich.table import Table

from fjord.cli.output import console, print_json

app = typer.Typer(
    help="Kafka topics and their records (kafka.bootstrap_servers, else the embedded broker).",
    no_args_is_help=True,
)


@app.command()
def topics(
    internal: bool = typer.Option(False, "--internal", help="Also Kafka's own topics (__consumer_offsets)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The topics, with their partitions, records held and retention."""
    from fjord import kafka

    infos = kafka.list_topics(internal=internal)
    if as_json:
        print_json([info.__dict__ for info in infos])
        return
    table = Table("topic", "partitions", "records", "retention")
    for info in infos:
        retention = f"{info.retention_ms / 3_600_000:g} h" if info.retention_ms is not None else ""
        table.add_row(info.name, str(info.partitions), f"{info.records:,}", retention)
    console.print(table)


@app.command()
def create(
    topic: str = typer.Argument(..., help="The topic's name."),
    partitions: int = typer.Option(1, min=1, help="Partitions."),
    retention_hours: float | None = typer.Option(None, min=0, help="How long records are kept."),
) -> None:
    """Create a topic (nothing happens if it exists)."""
    from fjord import kafka

    retention = int(retention_hours * 3_600_000) if retention_hours is not None else None
    created = kafka.ensure_topic(topic, partitions=partitions, retention_ms=retention)
    console.print(f"{topic}: {'created' if created else 'exists already'}")


@app.command()
def tail(
    topic: str = typer.Argument(..., help="The topic to read."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record."),
    limit: int | None = typer.Option(None, "--max", "-n", min=1, help="Stop after this many records."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0, help="Stop after this many seconds without a record."
    ),
) -> None:
    """Print records as they arrive: partition, offset, key and value, one line each."""
    from fjord import kafka

    for record in kafka.tail(topic, from_beginning=from_beginning, limit=limit, timeout_s=timeout):
        key = record.key.decode(errors="replace") if record.key is not None else ""
        value = record.value.decode(errors="replace") if record.value is not None else ""
        sys.stdout.write(f"{record.partition}:{record.offset}\t{key}\t{value}\n")
        sys.stdout.flush()
